"""Each shard id in exactly one process, and one shard count for all (issue 18.3), for as long as it runs.

Why: two processes on one shard both get its servers' events from Discord and answer everything twice,
and the one starting later takes the other's live runs for interrupted ones (it resumes them again and
drops their quota reservations and concurrency slots). Processes with different shard counts disagree
on which process owns a server. Both were silent: every process started and looked healthy.

How: PostgreSQL's session-level advisory locks, held on one connection of this process's own for as
long as it runs: an exclusive lock per shard id it serves, and a shared lock on its shard count. A
process whose shard id is taken, or that finds a lock on another count, refuses to start, naming the
setting. The locks go with the connection, so a killed process never leaves one behind. A process
without shard settings serves shard 0 of 1, so a second bot on the same database is refused too.
Only ``agentbot run`` claims shards: ``agentbot sync`` or ``doctor`` next to a running bot serve none.

The locks also go when the connection is lost (a PostgreSQL restart, a network cut): :meth:`ShardClaim.watch`
notices (the connection's end, or a check every ``CHECK_EVERY`` seconds), reconnects every
``RETRY_EVERY`` seconds and takes the same locks again. If another process took one meanwhile (it
started while this one was cut off), this process has lost the shard: it says so in one line and stops
(``agentbot run`` exits 1; README: Scaling). Its own old session, still holding the locks on a server
that has not noticed the cut yet, is ended first, so a network blip does not read as a takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from agent.config import ConfigError
from bot.store.db import StoreError, StoreUnavailable
from bot.store.pg import UNREACHABLE, connect_target
from bot.store.pg_acquire import full_hint

__all__ = ["ShardClaim", "served"]

log = structlog.get_logger("bot.store.shard_claim")

CHECK_EVERY = 5.0
"""Seconds between checks of an idle lock connection; a lost socket is noticed at once."""
RETRY_EVERY = 1.0
"""Seconds between reconnection attempts while PostgreSQL is unreachable: a process starting right after
PostgreSQL comes back races this one for its shards (the winner keeps them, the other stops)."""

SHARD_LOCKS = 0x6167_5301
"""The advisory lock space (first key) of shard ids; the second key is the id."""
COUNT_LOCKS = 0x6167_5302
"""The advisory lock space of shard counts; the second key is the count."""

KEEPALIVE = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}
"""A process that dies with its host (not a killed process, whose socket the kernel closes) would hold
its shards until PostgreSQL notices the dead connection: with the system's TCP defaults, two hours.
Set for this connection, PostgreSQL notices within about a minute, and a restarted process can start."""

_HOLDER = """
SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
   AND classid = $1::bigint::oid AND objid = $2::bigint::oid
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

_OTHER_COUNTS = """
SELECT DISTINCT objid::bigint FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid = 2 AND classid = $1::bigint::oid AND objid <> $2::bigint::oid
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

_ANY = """
SELECT EXISTS (SELECT 1 FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid = 2 AND classid = $1::bigint::oid
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
"""


async def served(conn: asyncpg.Connection) -> bool:
    """Whether a running ``agentbot run`` uses this database: every one holds a lock on its shard count
    (shard 0 of 1 without shard settings) for as long as it runs. ``migrate-store`` refuses such a target."""
    return bool(await conn.fetchval(_ANY, COUNT_LOCKS))


class ShardClaim:
    """Use :meth:`take`; :meth:`watch` keeps the claim; :meth:`close` releases it (closing its connection)."""

    def __init__(self, conn: asyncpg.Connection, url: str, shard_count: int | None, ids: list[int]) -> None:
        self._conn, self._url, self._setting, self._ids = conn, url, shard_count, ids
        self._count = shard_count or 1
        self._cut = asyncio.Event()
        conn.add_termination_listener(lambda _c: self._cut.set())
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def take(cls, url: str, shard_count: int | None, shard_ids: list[int] | None) -> ShardClaim:
        count = shard_count or 1
        ids = sorted(set(shard_ids)) if shard_ids else list(range(count))
        conn = await _connect(url)
        try:
            await _claim(conn, shard_count, ids)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, url, shard_count, ids)

    def watch(self, on_lost: Callable[[str], object]) -> None:
        """Keep the claim while the process runs; ``on_lost(why)`` once another process took a shard."""
        self._watch = asyncio.create_task(self._keep(on_lost), name="shard-claim")

    async def _keep(self, on_lost: Callable[[str], object]) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_EVERY):
                    await self._cut.wait()
            if await self._alive():
                continue
            log.warning("shard_claim_connection_lost", shards=self._ids, shard_count=self._count)
            while True:
                try:
                    why = await self.retake()
                    break
                except StoreUnavailable:
                    await asyncio.sleep(RETRY_EVERY)
            if why is not None:
                log.error("shard_claim_lost", error=why)
                on_lost(why)
                return
            log.info("shard_claim_retaken", shards=self._ids, shard_count=self._count)

    async def _alive(self) -> bool:
        if self._conn.is_closed():
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=CHECK_EVERY)
        except (*UNREACHABLE, asyncpg.InterfaceError):
            return False
        return True

    async def retake(self) -> str | None:
        """Take the locks again on a new connection after the old one was lost. Returns why this
        process lost its claim (another took a shard, or runs another count), None when taken again;
        raises :class:`StoreUnavailable` while PostgreSQL cannot be reached."""
        stale = self._conn.get_server_pid()
        try:
            conn = await _connect(self._url)
        except StoreError as e:
            raise StoreUnavailable(str(e)) from e
        try:
            await _claim(conn, self._setting, self._ids, stale=stale)
        except ConfigError as e:
            await conn.close()
            return (
                f"{e} — this process lost the claim while its connection to PostgreSQL was down, "
                "so it stops serving these shards"
            )
        except (*UNREACHABLE, asyncpg.PostgresError) as e:
            conn.terminate()
            raise StoreUnavailable(f"{type(e).__name__}: {e}") from e
        self._conn.terminate()
        self._conn, self._cut = conn, asyncio.Event()
        conn.add_termination_listener(lambda _c: self._cut.set())
        return None

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._conn.close()


async def _connect(url: str) -> asyncpg.Connection:
    try:
        target, timeout = connect_target(url)
        return await asyncpg.connect(target, server_settings=KEEPALIVE, timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        raise StoreError(f"DATABASE_URL: cannot connect ({type(e).__name__}: {e}){full_hint(e)}") from e


async def _claim(conn: asyncpg.Connection, shard_count: int | None, ids: list[int], stale: int = 0) -> None:
    """Take the count's shared lock and every shard's lock on ``conn``, or raise ConfigError naming the
    setting. A lock held by ``stale`` (this process's own lost session, which the server may not have
    noticed yet) is freed by ending that session."""
    count = shard_count or 1
    await conn.execute("SELECT pg_advisory_lock_shared($1, $2)", COUNT_LOCKS, count)
    if others := [r[0] for r in await conn.fetch(_OTHER_COUNTS, COUNT_LOCKS, count)]:
        raise ConfigError(
            f"DISCORD_SHARD_COUNT={shard_count or '1 (not set)'}, but another agentbot process sharing this DATABASE_URL "
            f"runs with DISCORD_SHARD_COUNT={others[0]}: every process needs the same count (to "
            "change it, stop them all and start them all with the new one; README: Scaling)"
        )
    taken = []
    for i in ids:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", SHARD_LOCKS, i):
            continue
        if stale and await conn.fetchval(_HOLDER, SHARD_LOCKS, i) == stale:
            await conn.execute("SELECT pg_terminate_backend($1)", stale)  # its locks go as it exits
            with contextlib.suppress(TimeoutError):
                await conn.execute("SELECT pg_advisory_lock($1, $2)", SHARD_LOCKS, i, timeout=10)
                continue
        taken.append(i)
    if taken:
        raise ConfigError(
            f"DISCORD_SHARD_IDS: shard {', '.join(map(str, taken))} of {count} is already served by "
            "another agentbot process sharing this DATABASE_URL, and two processes on one shard "
            "answer everything twice: give each shard id to exactly one process (one that died "
            "with its host holds it for up to a minute more; README: Scaling)"
        )
