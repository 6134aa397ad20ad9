"""PostgreSQL behind the same surface as :class:`bot.store.db.Database` (asyncpg, ``DATABASE_URL``).

The store modules write SQL both dialects read, with SQLite's ``?`` and ``:name`` placeholders;
:func:`translate` turns each statement's placeholders into PostgreSQL's ``$n`` once (and has inserts into
identity tables return their id) and caches it, so one set of queries serves both backends and the
contract suite holds both to the same behaviour.

Why every write transaction first takes one advisory lock: SQLite gives the store a single writer, and
its quota checks are written as single ``INSERT … SELECT … WHERE`` statements that are atomic only
because no other writer runs at the same time. PostgreSQL's READ COMMITTED would let two processes both
pass the same limit. ``pg_advisory_xact_lock`` restores "one writer at a time" across every process
sharing the database, and is released by COMMIT or ROLLBACK, so a crashed process never holds it.
Reads take no lock and see committed state, as SQLite's reader connection does. The quota hot path
(reservations and settlements, :mod:`bot.store.ledger`) does not take this lock: it runs as one function
call per batch that locks only the servers (guilds) its reserves charge (``pg_quota_v6``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg

from bot.store.db import (
    Closing,
    DatabaseTooNew,
    MigrationError,
    Params,
    StoreError,
    StoreUnavailable,
    when_reachable,
)
from bot.store.pg_acquire import CONNECT_TIMEOUT, Connections, connect_target, full_hint
from bot.store.pg_schema import IDENTITY_TABLES, PG_MIGRATIONS

__all__ = ["CONNECT_TIMEOUT", "PgDatabase", "connect_target", "translate", "when_reachable"]

WRITE_LOCK = 0x61_67_65_6E_74  # "agent": the advisory lock key every write transaction takes
_BEGIN = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|:([A-Za-z_]\w*)|::")
_RETURNS_ID = re.compile(rf"^\s*INSERT\s+INTO\s+({'|'.join(IDENTITY_TABLES)})\b", re.I)


class PgIntegrityError(sqlite3.IntegrityError):
    """A constraint violation, as the store's callers already catch it for SQLite."""


@dataclass(frozen=True, slots=True)
class Translated:
    sql: str
    names: tuple[str, ...] | None
    """Parameter names in ``$n`` order for ``:name`` statements; None for ``?`` statements."""
    returns_id: bool


@lru_cache(maxsize=512)
def translate(sql: str) -> Translated:
    """SQLite-flavoured SQL → PostgreSQL's (placeholders outside string literals only)."""
    names: list[str] = []
    positional = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal positional
        tok = m.group(0)
        if tok.startswith("'") or tok == "::":
            return tok
        if tok == "?":
            positional += 1
            return f"${positional}"
        name = m.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    out = _TOKEN.sub(sub, sql)
    if positional and names:
        raise ValueError("a statement mixes ? and :name placeholders")
    returns_id = bool(_RETURNS_ID.match(out)) and "RETURNING" not in out.upper()
    if returns_id:
        out = out.rstrip().rstrip(";") + " RETURNING id"
    return Translated(out, tuple(names) if names else None, returns_id)


def _args(t: Translated, params: Params) -> tuple[Any, ...]:
    if t.names is not None:
        if not isinstance(params, dict):
            raise TypeError("this statement takes named parameters (a dict)")
        return tuple(params[n] for n in t.names)
    if isinstance(params, dict):
        raise TypeError("this statement takes positional parameters")
    return tuple(params)


def _count(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else -1


@dataclass(slots=True)
class Cursor:
    """What the store reads of an aiosqlite cursor."""

    rowcount: int
    lastrowid: int | None


UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExistError among them
    asyncpg.OperatorInterventionError,
    asyncpg.InternalClientError,  # ProtocolError among them: a pooled connection from before a restart
)
"""Refused or lost connections, a server shutting down or starting up, no answer in time, and the errors
of a pooled connection that outlived its server (right after a restart, they read "Something went wrong")."""
LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.IdleSessionTimeoutError,
)
"""A connection that died under a statement, which is then safe to try again on a fresh one; a statement
that took too long (TimeoutError, an OSError; QueryCanceledError) is not: it would only take as long again."""


class PgRefused(sqlite3.OperationalError):
    """PostgreSQL refused a write: read-only (``default_transaction_read_only``, which managed servers set
    when their storage is nearly full; a standby after a failover) or out of disk. The bot says it as it
    says SQLite's full disk ("refused a write ... tell an admin"); it was "Something went wrong" and a
    traceback per command, and a run's charge failed with a traceback."""


REFUSED = (asyncpg.ReadOnlySQLTransactionError, asyncpg.DiskFullError)


@contextmanager
def reachable() -> Iterator[None]:
    """A server that cannot be reached becomes :class:`StoreUnavailable`, which the bot tells users as such
    (it was "Something went wrong" and a traceback per command while PostgreSQL restarted); a refused
    write becomes :class:`PgRefused`."""
    try:
        yield
    except UNREACHABLE as e:
        raise StoreUnavailable(f"the database cannot be reached: {type(e).__name__}: {e}") from e
    except REFUSED as e:
        raise PgRefused(f"PostgreSQL refused the write: {type(e).__name__}: {e}") from e


def _integrity(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(*a: Any, **kw: Any) -> Any:
        try:
            with reachable():
                return await fn(*a, **kw)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise PgIntegrityError(str(e)) from e

    return wrapped


class PgConnection:
    """One pooled connection, with the aiosqlite methods the store uses."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._c = conn

    @_integrity
    async def execute(self, sql: str, params: Params = ()) -> Cursor:
        t = translate(sql)
        args = _args(t, params)
        if t.returns_id or t.sql.lstrip().upper().startswith(("SELECT", "WITH")):
            rows = await self._c.fetch(t.sql, *args)
            return Cursor(len(rows), int(rows[0][0]) if t.returns_id and rows else None)
        status = await self._c.execute(t.sql, *args)
        return Cursor(_count(status), None)

    @_integrity
    async def executemany(self, sql: str, seq: Sequence[Params]) -> None:
        t = translate(sql)
        await self._c.executemany(t.sql.removesuffix(" RETURNING id"), [_args(t, p) for p in seq])

    @_integrity
    async def execute_fetchall(self, sql: str, params: Params = ()) -> list[asyncpg.Record]:
        t = translate(sql)
        return list(await self._c.fetch(t.sql, *_args(t, params)))


class _PoolFloorInOneLine(logging.Filter):
    """asyncpg's pool (0.32) reconnects its ``min_size`` floor after an outage and logs each failed try
    with a traceback, every 1 to 60 s for as long as PostgreSQL is away: per process, pages of log, and
    in console format seconds of rendering each, blocking the event loop. Unreachable is said in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        e = record.exc_info[1] if record.exc_info else None
        if e is not None and isinstance(e, UNREACHABLE):
            record.msg, record.args = f"{record.getMessage()}: {type(e).__name__}: {e}", None
            record.exc_info = record.exc_text = None
        return True


def _pool_log_in_one_line() -> None:
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _PoolFloorInOneLine) for f in pool_log.filters):
        pool_log.addFilter(_PoolFloorInOneLine())


class PgDatabase(Closing):
    """Use :meth:`open`. Same methods as :class:`bot.store.db.Database`."""

    backend = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str, version: int) -> None:
        super().__init__()
        self.pool = pool
        self.connections = Connections(pool)  # waits for its own while PostgreSQL has no room for more
        self.path = _redact(url)
        self.schema_version = version

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 2, max_size: int = 10, setting: str = "DATABASE_URL"
    ) -> PgDatabase:
        """``setting``: where the URL came from, as the error names it (``migrate-store --to``)."""
        _pool_log_in_one_line()
        target, timeout = connect_target(url)
        try:
            pool = await asyncpg.create_pool(
                target,
                min_size=min_size,
                max_size=max_size,
                command_timeout=60,
                reset=_no_session_state,
                timeout=timeout,
            )
        except (TimeoutError, OSError, ValueError, OverflowError, asyncpg.PostgresError) as e:
            # ValueError, OverflowError: a URL asyncpg cannot use (checked earlier by postgres_url_problem)
            why = f"{type(e).__name__}: {e}"
            if isinstance(e, TimeoutError):  # its text is empty: "TimeoutError: ", after a minute of silence
                why = f"no answer within {timeout:g} s: is that host and port a PostgreSQL server?"
            raise StoreError(f"{setting}: cannot connect to {_redact(url)}: {why}{full_hint(e)}") from e
        try:
            version = await _migrate(pool, url, setting)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, url, version)

    async def close(self) -> None:
        await super().close()
        await self.pool.close()

    async def _dead(self, conn: asyncpg.Connection) -> None:
        """``conn`` failed as a connection: it and every other pooled one are from before the server
        restarted (or went away), so none is handed out again; the next use gets a fresh one."""
        with contextlib.suppress(asyncpg.InterfaceError):  # a lost one is already closed and given back
            conn.terminate()
        await self.pool.expire_connections()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgConnection]:
        """BEGIN and the write lock in one round trip (this is the hot path of every quota write);
        COMMIT on exit, ROLLBACK on any exception (the pool also resets a connection it gets back
        mid-transaction, e.g. after a cancellation). A BEGIN that fails on a dead connection is tried once
        more on a fresh one: nothing was written, so that is safe for every write."""
        with reachable():
            for retry in (False, True):
                async with self.connections.connection() as conn:
                    try:
                        await conn.execute(_BEGIN)
                    except LOST as e:
                        if retry or isinstance(e, TimeoutError):
                            raise
                        await self._dead(conn)
                        continue
                    try:
                        yield PgConnection(conn)
                    except BaseException:
                        if not conn.is_closed() and conn.is_in_transaction():
                            await asyncio.shield(conn.execute("ROLLBACK"))
                        raise
                    await conn.execute("COMMIT")
                    return

    @asynccontextmanager
    async def transaction_reading(
        self, sql: str, params: Params = ()
    ) -> AsyncIterator[tuple[PgConnection, list[asyncpg.Record]]]:
        """As :meth:`bot.store.db.Database.transaction_reading`: a transaction and its first read."""
        async with self.transaction() as conn:
            yield conn, await conn.execute_fetchall(sql, params)

    async def write(self, sql: str, params: Params = ()) -> tuple[int, int | None]:
        async with self.transaction() as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount, cur.lastrowid

    async def write_many(self, statements: Sequence[tuple[str, Sequence[Params]]]) -> list[int]:
        """As :meth:`bot.store.db.Database.write_many`: one transaction (a statement with several parameter
        sets counts one changed row per set)."""
        counts: list[int] = []
        async with self.transaction() as conn:
            for sql, seq in statements:
                if len(seq) == 1:
                    counts.append((await conn.execute(sql, seq[0])).rowcount)
                else:
                    if seq:
                        await conn.executemany(sql, seq)
                    counts.append(len(seq))
        return counts

    async def fetchall(self, sql: str, params: Params = ()) -> list[asyncpg.Record]:
        """A read, tried once more on a fresh connection if the first one was dead (a read is safe twice)."""
        t = translate(sql)
        args = _args(t, params)
        with reachable():
            for retry in (False, True):
                async with self.connections.connection() as conn:
                    try:
                        return list(await conn.fetch(t.sql, *args))
                    except LOST as e:
                        if retry or isinstance(e, TimeoutError):
                            raise
                        await self._dead(conn)
        raise AssertionError  # not reached: the second attempt returns or raises


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """The pool's reset of a connection it gets back, minus the reset query.

    asyncpg still rolls back an open transaction first (``Connection._reset``); its default reset query
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is one more round trip after every
    pooled call, paid by the quota hot path once per batch, for state this store never leaves behind: its
    advisory locks are transaction-scoped, and it never SETs, LISTENs or keeps a cursor open.
    """


def _redact(url: str) -> str:
    url = re.sub(r"://([^:/@]*):[^\s/?#]*@", r"://\1:***@", url)  # to the last @: a raw @ in a password
    # libpq and asyncpg also take the password as a parameter (``...db?password=...``): shown whole by
    # doctor ("... opened and migrated") and in "cannot connect to ..." before this.
    return re.sub(r"(?i)([?&]password=)[^&#\s]*", r"\1***", url)


async def _migrate(pool: asyncpg.Pool, url: str, setting: str = "DATABASE_URL") -> int:
    async with pool.acquire() as conn:
        if await conn.fetchval("SHOW transaction_read_only") == "on":
            # A standby's URL, or default_transaction_read_only: this read "Upgrading ... to schema version
            # 1 failed: cannot execute CREATE TABLE in a read-only transaction. The database is still at
            # version 0", of a database at the newest version, and named neither the setting nor the fix.
            raise StoreError(
                f"{setting}: {_redact(url)} is read-only (a standby replica, or default_transaction_read_only "
                "is on), and the bot writes its sessions, charges and settings there: point it at the "
                "primary server, with a user that may write. The database was not changed."
            )
        for m in PG_MIGRATIONS:
            try:
                async with conn.transaction():
                    # Two processes starting at once: the second waits here, then finds the work done (even
                    # CREATE TABLE IF NOT EXISTS races on PostgreSQL's catalog without it).
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                    version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
                    if version > len(PG_MIGRATIONS):
                        raise DatabaseTooNew(
                            f"{_redact(url)} has schema version {version}, but this agentbot only knows up to "
                            f"version {len(PG_MIGRATIONS)}: upgrade agentbot. The database was not changed."
                        )
                    if version < m.version:  # else done before, or by another process meanwhile
                        await conn.execute(m.sql)
                        await conn.execute("INSERT INTO schema_version VALUES ($1)", m.version)
            except asyncpg.PostgresError as e:
                # PostgreSQL 15 no longer lets every user create tables in schema public: a user granted
                # ALL on a database someone else owns was told "permission denied" and nothing more.
                fix = (
                    f" {setting}'s user may not create tables there: make it the database's owner "
                    "(ALTER DATABASE ... OWNER TO that user) or GRANT CREATE ON SCHEMA public TO it."
                    if isinstance(e, asyncpg.InsufficientPrivilegeError)
                    else f" {setting}'s search_path names a schema this database does not have: create it "
                    "(CREATE SCHEMA name AUTHORIZATION that user) or correct options=-c search_path=..."
                    if isinstance(e, asyncpg.InvalidSchemaNameError)
                    else ""
                )
                raise MigrationError(
                    f"Upgrading {_redact(url)} to schema version {m.version} ({m.description}) failed: {e}. "
                    f"The database is still at version {m.version - 1}.{fix}"
                ) from e
    return len(PG_MIGRATIONS)
