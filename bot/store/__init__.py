"""The bot's store (SQLite, or PostgreSQL with DATABASE_URL): sessions and history, quotas and usage,
server settings and their audit log.

Open one database per process (:func:`open_database`) and build the stores on it::

    db = await open_database(database_url or data_dir / "agentbot.sqlite3")
    settings = GuildSettingsStore(db, SettingsSchema(known_models, known_tools), SettingsDefaults(...))
    quotas = QuotaStore(db, settings, Limits.from_settings(bot_settings))
    await quotas.recover()            # once at start-up
    sessions = SessionStore(db)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from bot.store.db import Database, DatabaseTooNew, StoreError, StoreUnavailable, when_reachable
from bot.store.guild_settings import (
    AuditEntry,
    GuildSettings,
    GuildSettingsStore,
    SettingsDefaults,
)
from bot.store.migrations import MIGRATIONS
from bot.store.quotas import QuotaBudget, QuotaDecision, QuotaStore
from bot.store.session_records import SessionNotFound, SessionRecord, new_session_id
from bot.store.sessions import SessionStore
from bot.store.settings_schema import SettingError, SettingsSchema, matching
from bot.store.usage_reports import LimitUsage, ServerUsage, UsageReport

if TYPE_CHECKING:
    from bot.store.pg import PgDatabase

__all__ = [
    "MIGRATIONS",
    "AuditEntry",
    "Database",
    "DatabaseTooNew",
    "GuildSettings",
    "GuildSettingsStore",
    "LimitUsage",
    "QuotaBudget",
    "QuotaDecision",
    "QuotaStore",
    "ServerUsage",
    "SessionNotFound",
    "SessionRecord",
    "SessionStore",
    "SettingError",
    "SettingsDefaults",
    "SettingsSchema",
    "StoreError",
    "StoreUnavailable",
    "UsageReport",
    "matching",
    "new_session_id",
    "open_database",
    "when_reachable",
]


async def open_database(target: str | os.PathLike[str]) -> Database | PgDatabase:
    """A SQLite file path, or a ``postgresql://`` URL (``DATABASE_URL``); both migrate to the newest schema."""
    if str(target).startswith(("postgresql://", "postgres://")):
        from bot.store.pg import PgDatabase

        return await PgDatabase.open(str(target))
    return await Database.open(target)
