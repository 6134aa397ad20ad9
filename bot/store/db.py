"""One SQLite file, one writer connection, versioned migrations at start-up.

Why one writer connection and an :class:`asyncio.Lock`: every write (a single statement or a
``BEGIN IMMEDIATE`` … ``COMMIT`` block) holds :attr:`Database.lock`, so no coroutine's statement can land
inside another's open transaction, and the quota checks written as single ``INSERT … SELECT … WHERE``
statements are atomic against every other write.

Plain reads (:meth:`Database.fetchall`, :meth:`Database.fetchone`) go through a second, read-only
connection on its own thread: under WAL they see exactly the committed state, never a half-done
transaction of the writer, and they do not queue behind a batch of writes (this is what keeps a quota
check fast while a hundred sessions settle). Reads that must see a transaction's own writes run on the
connection the transaction yields.

One bot process per database file: crash recovery (:meth:`QuotaStore.recover`) assumes nobody else is
mid-run in the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import aiosqlite

from bot.store.migrations import MIGRATIONS, Migration


class StoreError(Exception):
    """Base of the store's own errors; messages are meant for the operator as is."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached (PostgreSQL restarting or down): nothing was read or written."""


class DatabaseTooNew(StoreError):
    """The file was written by a newer agentbot; opening it could corrupt what the newer code expects."""


class MigrationError(StoreError):
    """A migration failed; the file stays at the last version that completed."""


Params = Sequence[Any] | dict[str, Any]


class Closing:
    """What both backends share: hooks run at the start of :meth:`close` (e.g. to flush queued writes),
    and ``async with``."""

    def __init__(self) -> None:
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._close_hooks.append(hook)

    async def close(self) -> None:
        for hook in self._close_hooks:
            await hook()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


class Database(Closing):
    """Use :meth:`open` (or ``async with await Database.open(path)``), never the constructor."""

    backend = "sqlite"

    def __init__(
        self, conn: aiosqlite.Connection, reader: aiosqlite.Connection, path: Path, version: int
    ) -> None:
        super().__init__()
        self.conn = conn
        """The writer. Use it only inside :meth:`transaction` (or while holding :attr:`lock`)."""
        self.reader = reader
        self.path = path
        self.schema_version = version
        self.lock = asyncio.Lock()
        """Held by every write; hold it yourself only through :meth:`transaction` or :meth:`write`
        (not re-entrant: never open a transaction inside another)."""

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        busy_timeout_ms: int = 5000,
    ) -> Database:
        """Open (creating if needed) and migrate to the newest version in ``migrations``.

        Raises :class:`DatabaseTooNew` if the file is newer than ``migrations`` knows, and
        :class:`StoreError` if it is not a SQLite database at all. ``migrations`` is a parameter so a
        test can create a file at an older version.
        """
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        busy = f"PRAGMA busy_timeout = {int(busy_timeout_ms)};"
        async with contextlib.AsyncExitStack() as opened:  # closes what was opened if anything fails
            # isolation_level=None: no implicit BEGINs; transactions are explicit (see transaction()).
            conn = await aiosqlite.connect(p, isolation_level=None)
            opened.push_async_callback(conn.close)
            conn.row_factory = sqlite3.Row
            try:
                await conn.execute(busy)
                version = int(next(iter(await conn.execute_fetchall("PRAGMA user_version")))[0])
            except sqlite3.DatabaseError as e:
                if _disk_trouble(e):  # a full disk said "is not an agentbot database (... disk I/O error)"
                    raise StoreError(f"{p} cannot be opened (SQLite says: {e}): {_disk_hint(p)}") from e
                raise StoreError(f"{p} is not an agentbot database (SQLite says: {e}).") from e
            known = len(migrations)
            if version > known:
                raise DatabaseTooNew(
                    f"{p} has schema version {version}, but this agentbot only knows up to version "
                    f"{known}: it was written by a newer agentbot. Upgrade agentbot, or point it at "
                    "another data directory. The file was not changed."
                )
            try:
                await conn.executescript(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
                )
                for m in migrations:
                    if m.version > version:
                        await _apply(conn, p, m)
                        version = m.version
                await _check_writable(conn, p, version)
            except sqlite3.OperationalError as e:
                if not _disk_trouble(e):
                    raise
                raise StoreError(f"{p} cannot be written (SQLite says: {e}): {_disk_hint(p)}") from e
            reader = await aiosqlite.connect(p, isolation_level=None)
            opened.push_async_callback(reader.close)
            reader.row_factory = sqlite3.Row
            await reader.executescript(busy + " PRAGMA query_only = ON;")
            opened.pop_all()
        return cls(conn, reader, p, version)

    async def close(self) -> None:
        await super().close()
        async with self.lock:
            await self.reader.close()
            await self.conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` under the write lock; commits on exit, rolls back on any exception."""
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                    await self.conn.execute("ROLLBACK")
                raise
            if self.conn.in_transaction:  # else committed by execute_each(..., commit=True)
                await self.conn.execute("COMMIT")

    @asynccontextmanager
    async def transaction_reading(
        self, sql: str, params: Params = ()
    ) -> AsyncIterator[tuple[aiosqlite.Connection, list[sqlite3.Row]]]:
        """:meth:`transaction` opened with a read: ``BEGIN IMMEDIATE`` and ``sql`` in one hop to the writer's
        thread (two before), yielding the connection and the rows."""
        async with self.lock:
            rows = await self.conn._execute(_begin_reading, self.conn._conn, sql, params)
            try:
                yield self.conn, rows
            except BaseException:
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise
            if self.conn.in_transaction:
                await self.conn.execute("COMMIT")

    async def write(self, sql: str, params: Params = ()) -> tuple[int, int | None]:
        """Run one write statement atomically under the lock; returns (rowcount, lastrowid)."""
        async with self.lock:
            cur = await self.conn.execute(sql, params)
            return cur.rowcount, cur.lastrowid

    async def write_many(self, statements: Sequence[tuple[str, Sequence[Params]]]) -> list[int]:
        """Statements, each run once per parameter set, in one transaction; the rows each changed. One hop
        to the writer's thread: :meth:`transaction` costs one per statement plus ``BEGIN`` and ``COMMIT``
        (a step's checkpoint: 4 instead of 1). aiosqlite has no public call running a function on its
        thread; ``_execute`` is the one its own methods use (aiosqlite is pinned below 0.23)."""
        async with self.lock:
            return list(await self.conn._execute(_write_many, self.conn, statements))

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Committed state only (the read-only connection)."""
        return list(await self.reader.execute_fetchall(sql, params))


async def execute_each(conn: Any, statements: Sequence[tuple[str, Params]], *, commit: bool = False) -> None:
    """``statements`` in order inside the transaction ``conn`` is in (from :meth:`Database.transaction` or
    PostgreSQL's): on SQLite one hop to the writer's thread for all of them, where ``conn.execute`` is one
    each (~90 us of CPU a hop at 100 sessions, ``bench/bot_load.py``); on PostgreSQL one round trip each.
    ``commit``: the transaction's last writes, so SQLite commits in the same hop (PostgreSQL on its exit)."""
    if isinstance(conn, aiosqlite.Connection):
        await conn._execute(_execute_each, conn._conn, statements, commit)
        return
    for sql, params in statements:
        await conn.execute(sql, params)


def _execute_each(raw: sqlite3.Connection, statements: Sequence[tuple[str, Params]], commit: bool) -> None:
    for sql, params in statements:
        raw.execute(sql, params)
    if commit:
        raw.execute("COMMIT")


def _begin_reading(raw: sqlite3.Connection, sql: str, params: Params) -> list[sqlite3.Row]:
    raw.execute("BEGIN IMMEDIATE")
    try:
        return raw.execute(sql, params).fetchall()
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise


def _write_many(conn: aiosqlite.Connection, statements: Sequence[tuple[str, Sequence[Params]]]) -> list[int]:
    """:meth:`Database.write_many` on the writer's own thread."""
    raw = conn._conn
    raw.execute("BEGIN IMMEDIATE")
    try:
        counts = [raw.executemany(sql, seq).rowcount for sql, seq in statements]
        raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    return counts


async def _check_writable(conn: aiosqlite.Connection, path: Path, version: int) -> None:
    """Refuse a file this process may only read. SQLite opens a file it may not write (owned by root
    while the bot runs as another user, a read-only mount) read-only without a word, so the bot started
    and its first write, clearing old reservations, was a 200-line traceback; ``doctor`` said ok. The
    probe writes the version the file already has, in a transaction rolled back; a store locked by
    another writer is left for later (its writes say so when they come)."""
    try:
        await conn.execute("BEGIN IMMEDIATE")
        await conn.execute(f"PRAGMA user_version = {int(version)}")
    except sqlite3.OperationalError as e:
        if getattr(e, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_READONLY:
            return
        raise StoreError(
            f"{path} cannot be written ({e}): give the user running agentbot write access to it, its "
            "-wal and -shm files and its directory (DATA_DIR), or mount it read-write"
        ) from None
    finally:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")


def _disk_trouble(e: sqlite3.Error) -> bool:
    """SQLite's "disk I/O error" or "database or disk is full": on a full disk (a full tmpfs as DATA_DIR)
    a new store said the second, an existing one the first, and neither names space."""
    return getattr(e, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL)


def _disk_hint(path: Path) -> str:
    return (
        f"check free space on the disk holding DATA_DIR ({path.parent}, e.g. `df -h`) and that it is writable"
    )


async def _apply(conn: aiosqlite.Connection, path: Path, m: Migration) -> None:
    # The version bump rides in the same transaction as the DDL: all or nothing.
    script = f"BEGIN IMMEDIATE;\n{m.sql}\nPRAGMA user_version = {m.version};\nCOMMIT;"
    try:
        await conn.executescript(script)
    except sqlite3.Error as e:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        said = f"{e} ({_disk_hint(path)})" if _disk_trouble(e) else str(e)
        raise MigrationError(
            f"Upgrading {path} to schema version {m.version} ({m.description}) failed: {said}. "
            f"The file is still at version {m.version - 1}."
        ) from e


async def when_reachable(fn: Callable[[], Awaitable[Any]], *, give_up: float, most: float = 5.0) -> Any:
    """``fn()`` once the database can be reached again: tried after 0.25 s, then twice as long each time
    (at most ``most`` seconds apart), and its :class:`StoreUnavailable` raised after ``give_up`` seconds.
    For writes that must not be lost to a PostgreSQL restart but need not hold anything up meanwhile."""
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + give_up, 0.25
    while True:
        await asyncio.sleep(delay)
        try:
            return await fn()
        except StoreUnavailable:
            if loop.time() + delay >= deadline:
                raise
            delay = min(delay * 2, most)
