"""Each shard id in exactly one process, and one shard count for all (issue 18.3), checked at start-up.

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
If the connection is lost later (a PostgreSQL restart), the locks are gone until the next start.
"""

from __future__ import annotations

import asyncpg

from agent.config import ConfigError
from bot.store.db import StoreError

__all__ = ["ShardClaim"]

SHARD_LOCKS = 0x6167_5301
"""The advisory lock space (first key) of shard ids; the second key is the id."""
COUNT_LOCKS = 0x6167_5302
"""The advisory lock space of shard counts; the second key is the count."""

KEEPALIVE = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}
"""A process that dies with its host (not a killed process, whose socket the kernel closes) would hold
its shards until PostgreSQL notices the dead connection: with the system's TCP defaults, two hours.
Set for this connection, PostgreSQL notices within about a minute, and a restarted process can start."""

_OTHER_COUNTS = """
SELECT DISTINCT objid::bigint FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid = 2 AND classid = $1::bigint::oid AND objid <> $2::bigint::oid
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class ShardClaim:
    """Use :meth:`take`; :meth:`close` releases the claim (closing its connection)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def take(cls, url: str, shard_count: int | None, shard_ids: list[int] | None) -> ShardClaim:
        count = shard_count or 1
        ids = sorted(set(shard_ids)) if shard_ids else list(range(count))
        try:
            conn = await asyncpg.connect(url, server_settings=KEEPALIVE)
        except (OSError, TimeoutError, asyncpg.PostgresError) as e:
            raise StoreError(f"DATABASE_URL: cannot connect ({type(e).__name__}: {e})") from e
        try:
            await conn.execute("SELECT pg_advisory_lock_shared($1, $2)", COUNT_LOCKS, count)
            if others := [r[0] for r in await conn.fetch(_OTHER_COUNTS, COUNT_LOCKS, count)]:
                raise ConfigError(
                    f"DISCORD_SHARD_COUNT={shard_count or '1 (not set)'}, but another agentbot process sharing this DATABASE_URL "
                    f"runs with DISCORD_SHARD_COUNT={others[0]}: every process needs the same count (to "
                    "change it, stop them all and start them all with the new one; README: Scaling)"
                )
            taken = [
                i
                for i in ids
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", SHARD_LOCKS, i)
            ]
            if taken:
                raise ConfigError(
                    f"DISCORD_SHARD_IDS: shard {', '.join(map(str, taken))} of {count} is already served by "
                    "another agentbot process sharing this DATABASE_URL, and two processes on one shard "
                    "answer everything twice: give each shard id to exactly one process (one that died "
                    "with its host holds it for up to a minute more; README: Scaling)"
                )
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()
