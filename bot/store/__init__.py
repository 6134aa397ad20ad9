"""The bot's SQLite store: sessions and history, quotas and usage, server settings and their audit log.

Open one :class:`Database` per process and build the stores on it::

    db = await Database.open(data_dir / "agentbot.sqlite3")
    settings = GuildSettingsStore(db, SettingsSchema(known_models, known_tools), SettingsDefaults(...))
    quotas = QuotaStore(db, settings, Limits.from_env())
    await quotas.recover()            # once at start-up
    sessions = SessionStore(db)
"""

from __future__ import annotations

from bot.limits import Limits
from bot.store.audit import AuditEntry
from bot.store.db import Database, DatabaseTooNew, MigrationError, StoreError
from bot.store.guild_settings import GuildSettings, GuildSettingsStore, SettingsDefaults, SettingsView
from bot.store.migrations import MIGRATIONS, Migration
from bot.store.permissions import MissingManageGuild, has_manage_guild, require_manage_guild
from bot.store.quotas import QuotaBudget, QuotaDecision, QuotaStore
from bot.store.sessions import (
    QueuedTurn,
    SessionNotFound,
    SessionRecord,
    SessionStatus,
    SessionStore,
    TurnRecord,
    TurnStatus,
    new_session_id,
)
from bot.store.settings_schema import SettingError, SettingsSchema, matching
from bot.store.usage_reports import LimitUsage, ModelTotal, ServerUsage, UsageReport, UserTotal

__all__ = [
    "MIGRATIONS",
    "AuditEntry",
    "Database",
    "DatabaseTooNew",
    "GuildSettings",
    "GuildSettingsStore",
    "LimitUsage",
    "Limits",
    "Migration",
    "MigrationError",
    "MissingManageGuild",
    "ModelTotal",
    "QueuedTurn",
    "QuotaBudget",
    "QuotaDecision",
    "QuotaStore",
    "ServerUsage",
    "SessionNotFound",
    "SessionRecord",
    "SessionStatus",
    "SessionStore",
    "SettingError",
    "SettingsDefaults",
    "SettingsSchema",
    "SettingsView",
    "StoreError",
    "TurnRecord",
    "TurnStatus",
    "UsageReport",
    "UserTotal",
    "has_manage_guild",
    "matching",
    "new_session_id",
    "require_manage_guild",
]
