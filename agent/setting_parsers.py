"""Parsers of setting values that several rooms share: tier names and tier-valued settings, tool rate
limits. They sit below :mod:`agent.config` so the settings tree can validate at parse time without
importing the routers and tools that later use the values (import-linter keeps that one way).
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, cast


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the key and what it accepts."""


def read_setting_file(path: str, setting: str) -> str:
    """The text of a file a setting names (``PRICES_FILE``, ``ROUTER_TIERS_FILE``): UTF-8, with or
    without the byte-order mark Windows editors write; anything else is a :class:`ConfigError` naming
    the setting (a Latin-1 file was a UnicodeDecodeError traceback, a marked one "invalid JSON")."""
    try:
        with open(os.path.expanduser(path), encoding="utf-8-sig") as f:  # ~ in .env is not expanded
            return f.read()
    except OSError as e:
        raise ConfigError(f"{setting}={path}: cannot read it ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{setting}={path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): "
            "save it as UTF-8"
        ) from None


Tier = Literal["simple", "medium", "complex"]
TIERS: tuple[Tier, ...] = ("simple", "medium", "complex")
TierTable = dict[Tier, list[str]]


def tier_index(tier: Tier) -> int:
    return TIERS.index(tier)


def parse_tier(value: str, what: str = "tier") -> Tier:
    """``"Complex "`` → ``"complex"``; anything else is a :class:`ConfigError` naming the choices."""
    v = str(value).strip().lower()
    if v not in TIERS:
        raise ConfigError(f"{what} {value!r} is not a tier; use one of: {', '.join(TIERS)}")
    return cast(Tier, v)


def validate_research(research: Mapping[str, str], origin: str = "research tiers") -> dict[Tier, Tier]:
    """``{run tier: research tier}``; a research tier must be weaker than the tier it researches for."""
    out: dict[Tier, Tier] = {}
    for run, helper in research.items():
        r, h = parse_tier(run, f"{origin}: run tier"), parse_tier(helper, f"{origin}: research tier")
        if tier_index(h) >= tier_index(r):
            raise ConfigError(
                f"{origin}: {r}={h} would research on a tier no cheaper than the one writing; "
                f"the research tier must be below {r} (e.g. complex=medium)"
            )
        out[r] = h
    return out


def _tier_pairs(
    key: str, text: str, shape: str, example: str, values: str, ok: Callable[[str], bool]
) -> dict[str, str]:
    """``a=b,c=d`` with tier keys: every mistake names the setting, the tiers and what a value may be."""
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tier, sep, value = part.partition("=")
        tier, value = tier.strip().lower(), value.strip().lower()
        if not sep or tier not in TIERS or not ok(value):
            raise ConfigError(
                f"{key}={text!r}: expected {shape} pairs such as {example} "
                f"(tiers: {', '.join(TIERS)}; {values})"
            )
        pairs[tier] = value
    return pairs


def parse_step_limits(text: str) -> dict[str, int]:
    """``simple=3,medium=6`` → model calls per tier before a run moves up; empty or 0 = no limit."""
    pairs = _tier_pairs(
        "ROUTER_STEP_LIMITS",
        text,
        "tier=steps",
        "simple=3,medium=6",
        "steps: a whole number, 0 = no limit",
        str.isdigit,
    )
    return {t: int(v) for t, v in pairs.items()}


def parse_research_tiers(text: str) -> dict[str, str]:
    """``complex=medium`` → runs of the key tier research on the value tier's models; ``off`` = none."""
    if text.strip().lower() in ("", "off", "none"):
        return {}
    pairs = _tier_pairs(
        "ROUTER_RESEARCH_TIERS",
        text,
        "tier=research-tier",
        "complex=medium",
        "the research tier must be below the run's tier; off = every tier does its own research",
        lambda v: v in TIERS,
    )
    return validate_research(pairs, f"ROUTER_RESEARCH_TIERS={text!r}")


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def parse_rate_limits(spec: str) -> dict[str, Rate]:
    """``"web_search=10/60, fetch_url=30/60"`` → {name: Rate}; errors name the bad item and the format."""
    limits: dict[str, Rate] = {}
    for item in filter(None, (p.strip() for p in (spec or "").split(","))):
        name, sep, rate = item.partition("=")
        count, slash, seconds = rate.partition("/")
        try:
            if not sep or not slash or not name.strip():
                raise ValueError
            parsed = Rate(int(count), float(seconds))
        except ValueError:
            raise ValueError(
                f"TOOL_RATE_LIMITS: cannot read {item!r}; write tool=calls/seconds, e.g. web_search=10/60"
            ) from None
        if parsed.count < 1 or not parsed.seconds > 0 or not math.isfinite(parsed.seconds):
            raise ValueError(
                f"TOOL_RATE_LIMITS: {item!r} needs at least 1 call per a positive number of seconds"
            )
        limits[name.strip()] = parsed
    return limits


def parse_dns_servers(value: str) -> list[tuple[str, int]]:
    """``FETCH_DNS_SERVERS``: comma-separated IP addresses, each with an optional port (ValueError names the
    entry that is not one)."""
    servers = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        host, port = entry, 53
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else -1 if rest else 53
        elif entry.count(":") == 1:
            host, _, p = entry.partition(":")
            port = int(p) if p.isdigit() else -1
        try:
            ipaddress.ip_address(host)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise ValueError(f"{entry!r} is not an IP address with an optional port (such as 9.9.9.9:53)")
        servers.append((host, port))
    return servers
