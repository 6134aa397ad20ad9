"""What a server setting may hold, checked before anything is written.

Settings are flat keys (:data:`KEY_FORMS`; one row and one audit entry each), so ``reset`` can target
one key or a group (:data:`GROUPS`). What each value accepts is README's /config table, enforced by
:meth:`SettingsSchema.validate` with a message naming the key and what it allows.

Admin limits refuse ``0``: in the environment ``0`` means unlimited, and an admin typing ``0`` to block a
role would otherwise hand it unlimited spending. They write ``unlimited`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.models.tiers import TIERS
from bot.limits import GUILD_BUDGET, USER_LIMITS
from bot.store.setting_values import (
    FALSE_WORDS,
    SettingError,
    domains,
    is_unlimited,
    limit_value,
    mcp_url,
    split,
    text_of,
    to_bool,
    to_int,
)

GROUPS = {  # what ``reset <group>`` removes, as /config reset names it
    "tier": "every tier",
    "limit": "every server limit",
    "role_limit": "every role limit",
    "tool": "every tool switch",
    "channel_persona": "every channel persona",
    "memory": "every memory setting",
    "research": "every research tier",
    "fetch": "both fetch_url domain lists",
    "mcp": "every MCP server",
}
KEY_FORMS = (
    "tier.<name>, default_tier, limit.<limit>, role_limit.<role id>.<limit>, tool.<name>, max_steps, "
    "channels, persona, channel_persona.<channel id>, memory.auto_store, memory.max_items, memory.max_age_days, "
    "research.<tier>, reader, fetch.allow, fetch.block, mcp.<name>"
)
PLAIN_KEYS = frozenset(k for k in KEY_FORMS.split(", ") if "<" not in k)
# -- MCP servers a server adds (issue 17.1): mcp.<name> = a streamable-HTTP URL, see bot/guild_mcp.py --
MCP_MAX_SERVERS = 5
_MCP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")
MCP_TOOL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,23}__[A-Za-z0-9_-]{1,60}")
"""``tool.<server>__<tool>`` of a server's own MCP server: /config tools checks the server offers it."""
MAX_MODELS_PER_TIER = 10
MAX_CHANNELS = 100


def _listing(items: Iterable[str], limit: int = 25) -> str:
    items = sorted(items)
    if not items:
        return "(none configured)"
    shown = ", ".join(items[:limit])
    return shown + (f", … and {len(items) - limit} more" if len(items) > limit else "")


def matching(choices: Iterable[str], current: str, limit: int = 25) -> list[str]:
    """Autocomplete: names containing ``current`` (prefix matches first), at most Discord's 25."""
    cur = current.strip().lower()
    hits = [c for c in choices if cur in c.lower()]
    hits.sort(key=lambda c: (not c.lower().startswith(cur), c))
    return hits[:limit]


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: str
    """A family (tier, limit, role_limit, tool, channel_persona, research, mcp) or a plain key itself."""
    name: str | None = None
    target_id: int | None = None
    """The role id of ``role_limit.*`` or the channel id of ``channel_persona.*``."""

    @property
    def key(self) -> str:
        """The canonical spelling stored in the table (ids without mention brackets, tier in lowercase)."""
        if self.kind == "role_limit":
            return f"role_limit.{self.target_id}.{self.name}"
        if self.kind == "channel_persona":
            return f"channel_persona.{self.target_id}"
        return self.kind if self.name is None else f"{self.kind}.{self.name}"


@dataclass(frozen=True)
class SettingsSchema:
    """Validation against what this bot actually has: its models and its tools."""

    known_models: Collection[str]
    known_tools: Collection[str]
    known_tiers: Sequence[str] = TIERS
    """The router's tiers, weakest first (research tiers need the order); the bot's tiers file and every
    server name only these (a tier of another name would never be picked)."""
    max_steps_range: tuple[int, int] = (1, 50)
    persona_max_chars: int = 4000
    usable_models: Collection[str] = ()
    """Of ``known_models``, those this bot can call (their provider's key is set): what a refusal and the
    autocomplete offer (empty: every known one). Every model the price package knows is known, so an
    unknown name was answered with 25 ``anthropic:`` models on a bot without ANTHROPIC_API_KEY, each of
    which /config tier then refused as unusable."""

    @property
    def offered_models(self) -> Collection[str]:
        return self.usable_models or self.known_models

    # --- keys -------------------------------------------------------------------------------------

    def parse_key(self, key: str) -> ParsedKey:
        k = key.strip()
        if k in PLAIN_KEYS:
            return ParsedKey(k)
        head, *parts = k.split(".")
        if head == "role_limit" and len(parts) == 2:
            name = self._limit_name(key, parts[1], USER_LIMITS)
            return ParsedKey(head, name, self._snowflake(key, parts[0]))
        if head == "channel_persona" and len(parts) == 1:
            return ParsedKey(head, target_id=self._snowflake(key, parts[0]))
        names: dict[str, Callable[[str, str], str]] = {
            "mcp": self._mcp_name,
            "tier": self._tier,
            "research": self._research_tier,
            "limit": lambda k, n: self._limit_name(k, n, (*USER_LIMITS, GUILD_BUDGET)),
            "tool": self._tool,
        }
        if head in names and len(parts) == 1:
            return ParsedKey(head, names[head](key, parts[0]))
        raise SettingError(key, f"Unknown setting {key!r}. Settings: {KEY_FORMS}.")

    def reset_key(self, key: str) -> str:
        """The key or group ``reset`` removes, as stored: any valid key, a group, ``role_limit.<role id>``,
        or ``tool.<name>`` (a tool the bot no longer has may still hold an override worth clearing)."""
        key = key.strip()
        parts = key.split(".")
        if key in GROUPS or (parts[0] == "tool" and len(parts) == 2):
            return key
        if parts[0] == "role_limit" and len(parts) == 2:
            return f"role_limit.{self._snowflake(key, parts[1])}"
        try:
            return self.parse_key(key).key
        except SettingError:
            raise SettingError(
                key, f"Unknown setting {key!r}. Reset one of: {KEY_FORMS}, or a group: {', '.join(GROUPS)}."
            ) from None

    def _mcp_name(self, key: str, name: str) -> str:
        if not _MCP_NAME_RE.match(name.strip().lower()):
            raise SettingError(
                key, f"MCP server name {name!r}: use 1-24 of a-z, 0-9, '_' and '-' (it prefixes tool names)."
            )
        return name.strip().lower()

    def _tier(self, key: str, name: str) -> str:
        name = name.lower()
        if name not in self.known_tiers:
            raise SettingError(key, f"Unknown tier {name!r}. Tiers: {_listing(self.known_tiers)}.")
        return name

    def _research_tier(self, key: str, name: str) -> str:
        order, tier = self.known_tiers, name.lower()
        if tier not in order[1:]:
            raise SettingError(
                key, f"Tier {tier!r} has no weaker tier to research on. Tiers: {', '.join(order[1:])}."
            )
        return tier

    def _limit_name(self, key: str, name: str, allowed: tuple[str, ...]) -> str:
        if name not in allowed:
            raise SettingError(key, f"Unknown limit {name!r}. Limits: {', '.join(allowed)}.")
        return name

    def _snowflake(self, key: str, text: str) -> int:
        digits = text.strip().strip("<@&#>")
        if not digits.isdigit() or not 0 < int(digits) < 2**64:
            raise SettingError(
                key, f"{text!r} in {key!r} is not a Discord id (a number like 123456789012345678)."
            )
        return int(digits)

    def _tool(self, key: str, name: str) -> str:
        if name in self.known_tools or MCP_TOOL_RE.fullmatch(name):
            return name
        raise SettingError(key, f"Unknown tool {name!r}. Tools: {_listing(self.known_tools)}.")

    # --- values -----------------------------------------------------------------------------------

    def validate(self, key: str, value: Any) -> Any:
        """Return the normalised, JSON-able value for ``key`` or raise :class:`SettingError`."""
        p = self.parse_key(key)
        name, (lo, hi) = p.name or "", self.max_steps_range
        checks: dict[str, Callable[[], Any]] = {
            "tier": lambda: self._models(key, name, value),
            "default_tier": lambda: self._tier(key, text_of(value)),
            "limit": lambda: limit_value(key, name, value),
            "role_limit": lambda: limit_value(key, name, value),
            "tool": lambda: to_bool(key, value),
            "reader": lambda: to_bool(key, value),
            "memory.auto_store": lambda: to_bool(key, value),
            "research": lambda: self._research(key, name, value),
            "max_steps": lambda: to_int(key, value, lo, hi, f"a whole number from {lo} to {hi}"),
            "channels": lambda: self._channels(key, value),
            "persona": lambda: self._persona(key, value),
            "channel_persona": lambda: self._persona(key, value),
            "fetch.allow": lambda: domains(key, value),
            "fetch.block": lambda: domains(key, value),
            "mcp": lambda: mcp_url(key, value),
        }
        if p.kind in checks:
            return checks[p.kind]()
        if is_unlimited(value):  # memory.max_items, memory.max_age_days
            return None
        return to_int(key, value, 1, 10**9, "a whole number of at least 1, or 'unlimited'")

    def _research(self, key: str, tier: str, value: Any) -> str | None:
        choice = text_of(value).lower()
        if choice in FALSE_WORDS or choice in ("none", "self"):
            return None
        weaker = self.known_tiers[: self.known_tiers.index(tier)]
        if choice not in weaker:
            raise SettingError(
                key, f"{key} must be a tier weaker than {tier} ({', '.join(weaker)}) or 'off'; got {value!r}."
            )
        return choice

    def _models(self, key: str, tier: str, value: Any) -> list[str]:
        names = split(value)
        if not names:
            raise SettingError(
                key, f"Tier {tier!r} needs at least one model. Models: {_listing(self.offered_models)}."
            )
        if len(names) > MAX_MODELS_PER_TIER:
            raise SettingError(key, f"Tier {tier!r} may list at most {MAX_MODELS_PER_TIER} models.")
        by_lower = {m.lower(): m for m in self.known_models}
        out: list[str] = []
        for n in names:
            canonical = n if n in self.known_models else by_lower.get(n.lower())
            if canonical is None:
                raise SettingError(key, f"Unknown model {n!r}. Models: {_listing(self.offered_models)}.")
            if canonical in out:
                raise SettingError(key, f"Model {canonical!r} is listed twice in tier {tier!r}.")
            out.append(canonical)
        return out

    def _channels(self, key: str, value: Any) -> list[int]:
        items = split(value) if isinstance(value, str) else list(value or [])
        ids: list[int] = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise SettingError(key, f"{item!r} is not a channel id.")
            cid = self._snowflake(key, str(item))
            if cid not in ids:
                ids.append(cid)
        if len(ids) > MAX_CHANNELS:
            raise SettingError(key, f"At most {MAX_CHANNELS} channels; got {len(ids)}.")
        return sorted(ids)

    def _persona(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise SettingError(
                key, f"{key} must be text (1-{self.persona_max_chars} characters); use reset to remove it."
            )
        from agent.tools.safe_names import hidden_in_text  # line breaks, ZWJ and LRM/RLM are kept

        text = value.strip()
        if len(text) > self.persona_max_chars:
            raise SettingError(key, f"{key} is {len(text)} characters; the most is {self.persona_max_chars}.")
        if found := sorted({ch for ch in text if hidden_in_text(ch)}):
            codes = ", ".join(f"U+{ord(ch):04X}" for ch in found[:5])
            raise SettingError(
                key,
                f"{key} contains invisible characters ({codes}): text-direction overrides, zero-width, "
                "control or other formatting characters make it show one text and say another. "
                "Type it again without them (line breaks are fine).",
            )
        return text
