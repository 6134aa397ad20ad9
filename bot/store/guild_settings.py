"""Per-server settings that admins change with /config: stored as validated overrides on top of the
bot's own defaults, each change audited in the same transaction.

Reads are cached per guild in memory and the cache is replaced after every change, so the quota check
on the hot path costs no query for settings. Shard processes sharing PostgreSQL (issue 18.3): a change
also sends ``NOTIFY agentbot_settings`` in its transaction, and every process's
:class:`bot.store.settings_sync.SettingsListener` drops that guild's entry when it arrives; while a
process's listener is not connected its cache is not trusted (every read queries).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bot.limits import Clock, LimitValue, in_bounds, to_utc, utc_now
from bot.store.db import Database
from bot.store.settings_schema import SettingError, SettingsSchema

SETTINGS_CHANNEL = "agentbot_settings"
"""PostgreSQL NOTIFY channel; the payload is the guild id whose settings changed."""


@dataclass(frozen=True)
class GuildSettings:
    """The effective settings of one server: the bot's own (:data:`SettingsDefaults`, guild id 0) with
    the server's overrides on top."""

    guild_id: int = 0
    tiers: dict[str, list[str]] = field(default_factory=dict)
    default_tier: str = ""
    limits: dict[str, LimitValue] = field(default_factory=dict)
    """Server overrides of user limits and of ``guild_budget_per_month_usd`` (absent = env default)."""
    role_limits: dict[int, dict[str, LimitValue]] = field(default_factory=dict)
    tools: dict[str, bool] = field(default_factory=dict)
    """Per-tool overrides; see :meth:`tool_enabled`."""
    max_steps: int = 12
    channels: tuple[int, ...] = ()
    """Where /research and mentions are answered; empty means every channel."""
    persona: str | None = None
    channel_personas: dict[int, str] = field(default_factory=dict)
    memory_auto_store: bool = True
    memory_max_items: int | None = 1000
    memory_max_age_days: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    """Every stored key and value, for ``/config show``."""
    disabled_tools: frozenset[str] = frozenset()
    """Tools off unless a server turns them on."""
    research: dict[str, str | None] = field(default_factory=dict)
    """Research tiers in force: run tier → research tier, ``None`` = the tier does its own research
    (the bot's: ROUTER_RESEARCH_TIERS)."""
    reader: bool = True
    """Whether long pages are read by the simple tier's model (READER_MODEL, unless ``off`` or the
    server says)."""
    # -- fetch_url domain rules (issue 14.9) --
    fetch_allow: tuple[str, ...] = ()
    """Domains fetch_url may read (with subdomains); empty = any public domain."""
    fetch_block: tuple[str, ...] = ()
    """Domains fetch_url must not read (with subdomains); wins over ``fetch_allow``."""
    mcp: dict[str, str] = field(default_factory=dict)
    """MCP servers this server added (``/config mcp``): name -> streamable-HTTP URL."""

    def tool_enabled(self, name: str) -> bool:
        return self.tools.get(name, name not in self.disabled_tools)

    def channel_allowed(self, channel_id: int, parent_id: int | None = None) -> bool:
        """A thread counts as its parent channel (pass the thread's ``parent_id``)."""
        return not self.channels or channel_id in self.channels or parent_id in self.channels

    def persona_for(self, channel_id: int | None, parent_id: int | None = None) -> str | None:
        """Channel persona (a thread inherits its parent's), else the server persona, else ``None``."""
        for cid in (channel_id, parent_id):
            if cid is not None and cid in self.channel_personas:
                return self.channel_personas[cid]
        return self.persona


SettingsDefaults = GuildSettings
"""The bot's own configuration, which a server's overrides sit on."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who changed which setting, from what, to what, and when; written in the change's own transaction,
    so a change without its audit row cannot exist."""

    id: int
    guild_id: int
    actor_id: int
    key: str
    old: Any
    new: Any
    at: datetime
    old_set: bool = True
    new_set: bool = True
    """``False`` when that side was "no override" (default), to tell it apart from an explicit ``null``."""


_AUDIT = "INSERT INTO audit_log (guild_id, actor_id, key, old_value, new_value, at) VALUES (?,?,?,?,?,?)"


class GuildSettingsStore:
    def __init__(
        self,
        db: Database,
        schema: SettingsSchema,
        defaults: SettingsDefaults | None = None,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.schema = schema
        self.defaults = defaults or SettingsDefaults()
        self.clock = clock
        self._cache: dict[int, GuildSettings] = {}
        self._changes: dict[int, int] = {}
        """Per guild, bumped after each change: a read that raced a change is not cached."""
        self.shared = getattr(db, "backend", "sqlite") == "postgresql"
        """Other processes may change settings: changes are announced, and the cache is trusted only
        while :meth:`trust` says another process's change would reach :meth:`invalidate`."""
        self._trusted = not self.shared
        self._epoch = 0

    async def get(self, guild_id: int) -> GuildSettings:
        cached = self._cache.get(guild_id)
        if cached is None:
            seen, epoch = self._changes.get(guild_id, 0), self._epoch
            cached = self._build(guild_id, await self._raw(guild_id))
            if self._trusted and self._changes.get(guild_id, 0) == seen and self._epoch == epoch:
                self._cache[guild_id] = cached
        return cached

    def _changed(self, guild_id: int) -> None:
        self._changes[guild_id] = self._changes.get(guild_id, 0) + 1
        self._cache.pop(guild_id, None)

    def invalidate(self, guild_id: int | None = None) -> None:
        """Another process changed ``guild_id``'s settings (``None``: maybe any server's)."""
        if guild_id is not None:
            self._changed(guild_id)
        else:
            self._epoch += 1
            self._cache.clear()

    def trust(self, trusted: bool) -> None:
        """Whether changes by other processes reach :meth:`invalidate` now (the listener is connected).
        Either way the cache starts empty: what was cached may have changed while nobody listened."""
        self._trusted = trusted or not self.shared
        self.invalidate(None)

    async def _announce(self, conn: Any, guild_id: int) -> None:
        """Tell the other processes, at commit (PostgreSQL delivers a NOTIFY when its transaction commits)."""
        if self.shared:
            await conn.execute("SELECT pg_notify(?, ?)", (SETTINGS_CHANNEL, str(guild_id)))

    async def set(self, guild_id: int, actor_id: int, key: str, value: Any) -> Any:
        """Validate and store one override; returns the normalised value.

        Raises :class:`SettingError` (naming the key and what is allowed). Setting a key to the value it
        already holds changes nothing and writes no audit row.
        """
        key = self.schema.parse_key(key).key
        normalised = self.schema.validate(key, value)
        new_text = json.dumps(normalised, ensure_ascii=False)
        now = to_utc(self.clock()).timestamp()
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall(
                "SELECT value FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key)
            )
            old_text = next((r[0] for r in rows), None)
            if old_text == new_text:
                return normalised
            await conn.execute(
                "INSERT INTO guild_settings (guild_id, key, value, updated_at, updated_by) VALUES (?,?,?,?,?)"
                " ON CONFLICT (guild_id, key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (guild_id, key, new_text, now, actor_id),
            )
            await conn.execute(_AUDIT, (guild_id, actor_id, key, old_text, new_text, now))
            await self._announce(conn, guild_id)
        self._changed(guild_id)
        return normalised

    async def reset(self, guild_id: int, actor_id: int, key: str | None = None) -> list[str]:
        """Remove overrides: all (``key=None``), one key, or a group (``tier``, ``limit``, ``role_limit``,
        ``role_limit.<role id>``, ``tool``, ``channel_persona``, ``memory``). Returns the keys removed."""
        if key is not None:
            key = self.schema.reset_key(key)
        now = to_utc(self.clock()).timestamp()
        prefix = "" if key is None else key + "."  # no key: every key starts with ""
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall(
                "SELECT key, value FROM guild_settings WHERE guild_id = ?"
                " AND (key = ? OR substr(key, 1, ?) = ?) ORDER BY key",
                (guild_id, key, len(prefix), prefix),
            )
            removed = [(r[0], r[1]) for r in rows]
            for k, old in removed:
                await conn.execute("DELETE FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, k))
                await conn.execute(_AUDIT, (guild_id, actor_id, k, old, None, now))
            if removed:
                await self._announce(conn, guild_id)
        self._changed(guild_id)
        return [k for k, _ in removed]

    async def history(self, guild_id: int, limit: int = 25) -> list[AuditEntry]:
        """Newest first."""
        rows = await self.db.fetchall(
            "SELECT * FROM audit_log WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, limit)
        )
        return [
            AuditEntry(
                *(r[k] for k in ("id", "guild_id", "actor_id", "key")),
                old=None if r["old_value"] is None else json.loads(r["old_value"]),
                new=None if r["new_value"] is None else json.loads(r["new_value"]),
                at=datetime.fromtimestamp(r["at"], UTC),
                old_set=r["old_value"] is not None,
                new_set=r["new_value"] is not None,
            )
            for r in rows
        ]

    async def _raw(self, guild_id: int) -> dict[str, Any]:
        rows = await self.db.fetchall("SELECT key, value FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return {r[0]: json.loads(r[1]) for r in rows}

    def _build(self, guild_id: int, raw: dict[str, Any]) -> GuildSettings:
        d = self.defaults
        families: dict[str, dict[Any, Any]] = {
            "tier": {name: list(models) for name, models in d.tiers.items()},
            "limit": {},
            "role_limit": {},
            "tool": {},
            "channel_persona": {},
            "research": dict(d.research),
            "mcp": {},
        }
        plain: dict[str, Any] = {}
        for key, value in raw.items():  # stored values were validated: only where they go differs
            try:
                p = self.schema.parse_key(key)
            except SettingError:
                continue  # e.g. a tool this bot no longer has: kept in the table, ignored
            if p.kind in ("limit", "role_limit") and not in_bounds(p.name or "", value):
                continue  # stored before limits had bounds (1e300 broke every turn): the default holds
            if p.kind == "role_limit":
                families[p.kind].setdefault(p.target_id, {})[p.name] = value
            elif p.kind in families:
                families[p.kind][p.target_id or p.name] = value
            else:  # a plain key: its field is named like it (memory.max_items -> memory_max_items)
                plain[key.replace(".", "_")] = tuple(value) if isinstance(value, list) else value
        plain["reader"] = d.reader and bool(plain.get("reader", True))  # READER_MODEL=off wins
        return replace(
            d,
            guild_id=guild_id,
            tiers=families["tier"],
            limits=families["limit"],
            role_limits=families["role_limit"],
            tools=families["tool"],
            channel_personas=families["channel_persona"],
            research=families["research"],
            mcp=families["mcp"],
            overrides=dict(sorted(raw.items())),
            **plain,
        )
