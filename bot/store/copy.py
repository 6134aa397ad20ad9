"""``agentbot migrate-store``: move a bot's SQLite store into an empty PostgreSQL database.

Both sides are first brought to the newest schema by their own migrations, so the tables match column
for column. Rows go over with ``COPY`` (asyncpg's ``copy_records_to_table``), :data:`BATCH_BYTES` at a
time, ``sessions`` first because history and turns refer to it, then ``turns``, which running turns' checkpointed steps refer to. The
ledger's roll-up triggers are switched off while its rows are copied: the counters they maintain are
copied as they are, and firing the triggers too would count every call twice. Open reservations and
concurrency slots belong to the process that held them and are not moved. Identity columns and the
reservation-id sequence continue after the largest copied id. Everything happens in one PostgreSQL
transaction, checked table by table before it commits: a failed move leaves the target empty.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.store.db import Database, StoreError
from bot.store.pg import PgDatabase
from bot.store.pg_schema import IDENTITY_TABLES
from bot.store.shard_claim import served

__all__ = ["CopyReport", "check_not_open", "copy_sqlite_to_postgres", "open_elsewhere", "unmoved_store"]

TRANSIENT = frozenset({"reservations", "active_sessions"})
"""Held by a running process; a store that moves starts without them."""
BATCH_BYTES = 1_000_000
"""About how much text is read and sent at a time (or :data:`BATCH_ROWS` rows). A table was read whole
into memory first: moving a store whose history held 12 MB of text took 14 MB of memory at its peak, and a
year's store more than a small host has."""
BATCH_ROWS = 5_000
READ_ROWS = 100
REFERRED = {"sessions": 0, "turns": 1}
"""Copied first, in this order: other tables' rows refer to theirs (``turn_steps`` to ``turns``)."""


@dataclass(slots=True)
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return ", ".join(f"{t} {n:,}" for t, n in self.rows.items() if n) or "no rows"


def open_elsewhere(sqlite_path: Path) -> bool:
    """Whether another process has the store open (a running bot). Every SQLite connection to a WAL
    database holds a shared lock on one byte of its ``-shm`` file (the "dead man switch", offset 128)
    for as long as it is open; an exclusive lock on that byte is refused while one does. Checked before
    this process opens the store itself (POSIX locks never conflict within one process)."""
    try:
        fd = os.open(f"{sqlite_path}-shm", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 128)
        return False
    finally:
        os.close(fd)


KEPT = ("guild_settings", "sessions", "usage_daily")
"""What an operator would miss on a bot started afresh: servers' settings, history, today's usage."""


def _kept_rows(sqlite_path: Path) -> bool:
    """Whether the SQLite store holds settings, sessions or usage; read-only, never created or changed."""
    try:
        conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        return any(conn.execute(f"SELECT EXISTS (SELECT 1 FROM {t})").fetchone()[0] for t in KEPT)
    except sqlite3.Error:  # not a store of ours, or unreadable: nothing to say about it
        return False
    finally:
        conn.close()


async def unmoved_store(sqlite_path: Path, db: Any) -> str | None:
    """Why a bot must not start on ``db`` (PostgreSQL): it is empty while DATA_DIR's SQLite store holds
    this bot's data, so DATABASE_URL was set before ``migrate-store`` moved it. Started anyway, every
    server's settings, the day's usage (limits from 0 again), history and interrupted runs were gone."""
    if not await asyncio.to_thread(sqlite_path.is_file):
        return None
    for table in KEPT:
        if (await db.fetchone(f"SELECT EXISTS (SELECT 1 FROM {table})"))[0]:
            return None
    if not await asyncio.to_thread(_kept_rows, sqlite_path):
        return None
    return (
        f"DATABASE_URL: the PostgreSQL database is empty, but {sqlite_path} holds this bot's store (server "
        "settings, usage, history): stop the bot and move it with agentbot migrate-store (README: Moving a "
        "store), or move that file out of DATA_DIR to start afresh"
    )


def check_not_open(sqlite_path: Path) -> None:
    if open_elsewhere(sqlite_path):
        # Copied now, whatever the bot writes after the copy (and during it) would be lost with the file.
        raise StoreError(
            f"{sqlite_path} is open in another process (a running bot?): stop the bot, then move it"
        )


async def copy_sqlite_to_postgres(sqlite_path: Path, url: str, setting: str = "DATABASE_URL") -> CopyReport:
    if not await asyncio.to_thread(sqlite_path.is_file):
        raise StoreError(f"no SQLite store at {sqlite_path}: check DATA_DIR")
    await asyncio.to_thread(check_not_open, sqlite_path)
    src = await Database.open(sqlite_path)
    try:  # a target that cannot be reached left the SQLite store open, and its thread hung the command
        dst = await PgDatabase.open(url, setting=setting)
    except BaseException:
        await src.close()
        raise
    try:
        tables = [
            r[0]
            for r in await src.fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables = sorted((t for t in tables if t not in TRANSIENT), key=lambda t: (REFERRED.get(t, 2), t))
        report = CopyReport()
        async with dst.pool.acquire() as conn, conn.transaction():
            if await served(conn):  # copied under live processes, their ids, caches and charges clash
                raise StoreError(
                    f"{setting}: the PostgreSQL database is in use by a running agentbot (agentbot run): "
                    "stop every bot process using it, then move the store"
                )
            for table in tables:
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                    if await _moved_already(
                        src, conn
                    ):  # was "migrate into an empty database", of the live one
                        raise StoreError(
                            "this store was moved there already (its sessions are in that database); nothing "
                            "was copied: set DATABASE_URL to it and start the bot"
                        )
                    raise StoreError(
                        f"the PostgreSQL database already holds {table} rows: migrate into an empty database"
                    )
            await conn.execute("ALTER TABLE usage_ledger DISABLE TRIGGER USER")
            for table in tables:
                cols = [r[1] for r in await src.fetchall(f"PRAGMA table_info({table})")]
                read = await _copy_table(src, conn, table, cols)
                copied = await conn.fetchval(f"SELECT count(*) FROM {table}")
                if copied != read:
                    raise StoreError(f"{table}: {read} rows read but {copied} written; nothing was moved")
                report.rows[table] = read
            await conn.execute("ALTER TABLE usage_ledger ENABLE TRIGGER USER")
            for table in IDENTITY_TABLES:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"GREATEST((SELECT max(id) FROM {table}), 1))"
                )
            await conn.execute(
                "SELECT setval('reservation_ids', GREATEST((SELECT max(reservation_id) FROM usage_ledger), 1))"
            )
        return report
    finally:
        await src.close()
        await dst.close()


async def _moved_already(src: Database, conn: Any) -> bool:
    """Whether the target holds this SQLite store's sessions (ids are random), i.e. a move ran before."""
    ids = [r[0] for r in await src.fetchall("SELECT id FROM sessions ORDER BY created_at DESC LIMIT 100")]
    found = await conn.fetchval("SELECT count(*) FROM sessions WHERE id = ANY($1::text[])", ids) if ids else 0
    return bool(ids) and found == len(ids)


async def _copy_table(src: Database, conn: Any, table: str, cols: list[str]) -> int:
    """``table``'s rows from ``src`` into ``conn``'s transaction, a batch at a time; how many were read."""
    read, size, batch = 0, 0, []
    async with src.reader.execute(f"SELECT {', '.join(cols)} FROM {table}") as cursor:
        while True:
            chunk = await cursor.fetchmany(READ_ROWS)
            for r in chunk:
                batch.append(row := tuple(r))
                size += sum(len(v) for v in row if isinstance(v, str | bytes))
            if batch and (not chunk or size >= BATCH_BYTES or len(batch) >= BATCH_ROWS):
                await conn.copy_records_to_table(table, records=batch, columns=cols)
                read, size, batch = read + len(batch), 0, []
            if not chunk:
                return read
