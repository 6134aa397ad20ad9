"""Open the store's database: PostgreSQL for ``postgresql://`` URLs (``DATABASE_URL``), else SQLite."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from bot.store.db import Database

if TYPE_CHECKING:
    from bot.store.pg import PgDatabase

__all__ = ["is_postgres", "open_database"]


def is_postgres(target: str | os.PathLike[str]) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


async def open_database(target: str | os.PathLike[str]) -> Database | PgDatabase:
    """``target`` is a SQLite file path or a PostgreSQL URL; both migrate to the newest schema."""
    if is_postgres(target):
        from bot.store.pg import PgDatabase

        return await PgDatabase.open(str(target))
    return await Database.open(target)
