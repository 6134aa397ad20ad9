"""A user's requests in every server together (``QUOTA_REQUESTS_PER_DAY_ALL_SERVERS``, issue 18.3).

Every other limit is per user per server, and a server's requests all reach one shard process, so those
hold across processes by construction. This one spans servers, so it spans shard processes: it is
checked and counted in :meth:`bot.store.quotas.QuotaStore.begin_session`'s transaction, which PostgreSQL
serialises across processes (the store's advisory write lock), so a user spread over servers on
different shards gets exactly the limit.

Counted in ``usage_daily`` under guild id :data:`ALL_SERVERS` (requests only), so no migration and one
indexed row per user per day; per-server reports never see that row (they name their server).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.limits import day_key, discord_timestamp, resets_at

__all__ = ["ALL_SERVERS", "count", "refusal", "used_today"]

ALL_SERVERS = -1


async def used_today(read: Any, user_id: int, now: datetime) -> int:
    """``read`` is a database's ``fetchall`` or a transaction's ``execute_fetchall``."""
    rows = await read(
        "SELECT requests FROM usage_daily WHERE guild_id = ? AND user_id = ? AND day = ?",
        (ALL_SERVERS, user_id, day_key(now)),
    )
    return int(next(iter(rows))[0]) if rows else 0


async def count(conn: Any, user_id: int, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO usage_daily (guild_id, user_id, day, requests) VALUES (?,?,?,1)"
        " ON CONFLICT (guild_id, user_id, day) DO UPDATE SET requests = usage_daily.requests + 1",
        (ALL_SERVERS, user_id, day_key(now)),
    )


def refusal(used: int, cap: int, now: datetime) -> str:
    reset = resets_at("requests_per_day", now)
    when = f" It resets {discord_timestamp(reset)}." if reset else ""
    return (
        f"Daily request limit reached: you've made {used:,} of {cap:,} requests today in all servers "
        f"together.{when}"
    )
