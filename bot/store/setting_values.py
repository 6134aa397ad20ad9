"""One setting's value as an admin types it, parsed: numbers and limits, on/off, domains, MCP URLs.

Apart from :mod:`bot.store.settings_schema` (which key takes which parser) so the rules of a value read in
one place. Numbers take commas only between thousands: a decimal comma (``2,99``) is refused, never read
as 299.
"""

from __future__ import annotations

import math
import re
from typing import Any

from bot.limits import bounds_text, in_bounds

INT_LIMITS = frozenset({"requests_per_day", "tokens_per_day", "concurrent_sessions"})
_UNLIMITED = frozenset({"unlimited", "none", "no limit", "off", "infinite", "inf", "∞"})
TRUE_WORDS = frozenset({"on", "true", "yes", "1", "enable", "enabled"})
FALSE_WORDS = frozenset({"off", "false", "no", "0", "disable", "disabled"})


class SettingError(ValueError):
    """A setting value or key the store refuses; the message is shown to the admin as is."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
"""Where a number may hold commas: between thousands (``1,000``, ``12,500.50``)."""


def without_commas(key: str, text: str) -> str:
    """``text`` less its thousands separators. A decimal comma is refused, never read as one: ``2,99``
    ($2.99 where a comma is the decimal mark) was stored as $299, and ``0,50`` as $50."""
    if "," in text and not _THOUSANDS.fullmatch(text):
        raise SettingError(
            key,
            f"{key}: {text!r} is not a number: write decimals with a dot (2.99) and commas only "
            "between thousands (1,000).",
        )
    return text.replace(",", "")


def limit_value(key: str, name: str, value: Any) -> int | float | None:
    if is_unlimited(value):
        return None
    whole = name in INT_LIMITS
    what = "a whole number" if whole else "an amount in USD"
    raw = value
    if isinstance(value, str):
        value = without_commas(key, value.strip().replace("_", "").lstrip("$").strip())
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise SettingError(key, f"{key} must be {what} or 'unlimited'; got {raw!r}.") from None
    if math.isnan(number) or math.isinf(number) or number < 0:
        raise SettingError(key, f"{key} must be {what} above 0, or 'unlimited'; got {raw!r}.")
    if number == 0:
        raise SettingError(
            key,
            f"{key} cannot be 0: write 'unlimited' for no limit, or a number above 0. "
            "To keep people from using the bot, restrict its channels or Discord permissions.",
        )
    if not in_bounds(name, number):
        raise SettingError(key, f"{key} must be {what} {bounds_text(name)}, or 'unlimited'; got {raw!r}.")
    if whole:
        if number != int(number):
            raise SettingError(key, f"{key} must be a whole number; got {raw!r}.")
        return int(number)
    return round(number, 6)


def domains(key: str, value: Any) -> list[str]:
    """A list of normalised domains (IDNA, lower-case); ``none``/``off`` or an empty list clears it."""
    from agent.tools.domains import MAX_RULES, normalise_domain

    if is_unlimited(value) or (isinstance(value, str) and not value.strip()):
        return []
    out: list[str] = []
    for item in _domain_entries(key, value):
        try:
            rule = normalise_domain(item)
        except ValueError as e:
            raise SettingError(key, f"{key}: {e}.") from None
        if rule not in out:
            out.append(rule)
    if len(out) > MAX_RULES:
        raise SettingError(key, f"{key} holds at most {MAX_RULES} domains; got {len(out)}.")
    return sorted(out)


def _domain_entries(key: str, value: Any) -> list[str]:
    """Commas separate domains, and spaces between whole names (``a.com b.com``); a space inside a name
    is refused, never read as two rules: ``exa mple.com`` became ``exa`` (a top-level domain) and
    ``mple.com``."""
    if not isinstance(value, str):
        return split(value)
    out: list[str] = []
    for entry in value.split(","):
        words = entry.split()
        if len(words) > 1 and not all("." in w.lstrip("*.") or ":" in w for w in words):
            raise SettingError(
                key,
                f"{key}: {entry.strip()!r} is not a domain name (a space inside it?); separate domains with commas.",
            )
        out.extend(words)
    return out


def mcp_url(key: str, value: Any) -> str:
    """A streamable-HTTP MCP endpoint. Where it points is checked by the SSRF guard when the bot connects
    (as fetch_url's pages are): a name can resolve elsewhere later, so a check here alone would not hold."""
    import httpx

    url = text_of(value)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise SettingError(key, f"{key}: not a URL ({e}).") from None
    if parsed.scheme not in ("http", "https") or not parsed.host or len(url) > 500:
        raise SettingError(key, f"{key} must be an http:// or https:// URL of at most 500 characters.")
    return url


def text_of(value: Any) -> str:
    return value.strip() if isinstance(value, str) else str(value)


def split(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in re.split(r"[,\s]+", value.strip()) if v]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return []


def is_unlimited(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _UNLIMITED)


def to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = text_of(value).lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise SettingError(key, f"{key} must be on or off; got {value!r}.")


def to_int(key: str, value: Any, lo: int, hi: int, what: str) -> int:
    try:
        number = (
            value if isinstance(value, int) else int(without_commas(key, text_of(value).replace("_", "")))
        )
    except ValueError:
        number = None
    if isinstance(value, bool) or number is None or not lo <= number <= hi:
        raise SettingError(key, f"{key} must be {what}; got {value!r}.")
    return number
