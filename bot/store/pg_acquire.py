"""How the store gets its PostgreSQL connections: the URL's libpq ``connect_timeout`` (:func:`connect_target`),
and a pooled connection when the server has no room for another one (``max_connections``, or a
role's ``CONNECTION LIMIT``).

Why: the pool opens connections as it needs them (up to 10 per process), and PostgreSQL refuses one past
its limit with "sorry, too many clients already". Every store call that happened to need the new one
failed with that error: with a few shard processes on a server sized a little short, members read
"Something went wrong" (and the log a traceback) while the process still held working connections of its
own. Now a call that cannot open a connection waits for one of the process's own to come back (asyncpg's
pool hands out live connections first), one warning line names the setting to raise, and only if no
connection is free for :data:`FULL_GIVE_UP` seconds does the call fail as the store being unavailable
(said to members as such; queued charges keep waiting as in an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog

from bot.store.db import StoreUnavailable

__all__ = ["CONNECT_TIMEOUT", "Connections", "connect_target", "full_hint"]

log = structlog.get_logger("bot.store.pg")

CONNECT_TIMEOUT = 10.0
"""Seconds a new connection may take: PostgreSQL answers in milliseconds, and asyncpg's default (60 s)
kept doctor and start-up silent for a minute in front of a host that took the connection and said nothing.
A URL's ``connect_timeout`` (libpq's) sets it instead: see :func:`connect_target`."""


def connect_target(url: str) -> tuple[str, float]:
    """``url`` as asyncpg takes it, and the seconds a new connection may take. asyncpg sends a query
    parameter it does not know to the server as a setting, and libpq's ``connect_timeout`` (common in
    operators' URLs) was refused as 'unrecognized configuration parameter "connect_timeout"'."""
    base, q, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    kept, timeout = [], CONNECT_TIMEOUT
    for part in query.split("&") if q else []:
        key, _, value = part.partition("=")
        if key != "connect_timeout":
            kept.append(part)
        elif float(value or 0) > 0:  # checked by postgres_url_problem; libpq's 0 is "wait forever": ours
            timeout = float(value)
    return base + ("?" + "&".join(kept) if kept else "") + hash_ + fragment, timeout


FULL = (
    ": PostgreSQL has no room for another connection: raise its max_connections (each bot process needs up "
    "to 12; README: Scaling), or the user's CONNECTION LIMIT"
)


def full_hint(e: BaseException) -> str:
    """What to do about a refused connection, when it was refused for want of room (at start-up the
    shard process after the first read only 'sorry, too many clients already')."""
    return FULL if isinstance(e, asyncpg.TooManyConnectionsError) else ""


FULL_GIVE_UP = 30.0
"""Seconds a call waits for a connection while PostgreSQL refuses new ones, before it fails."""
RETRY_EVERY = 1.0
"""Seconds between tries to open one meanwhile (another process may have closed some)."""
WARN_EVERY = 60.0
"""The warning is logged at most this often while the server stays full."""


class Connections:
    """``acquire``/``release`` over an asyncpg pool, and :meth:`connection` as a context manager."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._returned = asyncio.Condition()
        self._warned_at: float | None = None

    async def acquire(self) -> Any:
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            try:
                return await self.pool.acquire()
            except asyncpg.TooManyConnectionsError as e:
                now = loop.time()
                deadline = deadline if deadline is not None else now + FULL_GIVE_UP
                if now >= deadline:
                    raise StoreUnavailable(
                        f"the database cannot be reached: PostgreSQL has no free connection ({e}) and none "
                        f"of this process's came free within {FULL_GIVE_UP:g} s"
                    ) from e
                if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
                    self._warned_at = now
                    log.warning(
                        "postgresql_out_of_connections",
                        error=f"{type(e).__name__}: {e}",
                        open_here=self.pool.get_size(),
                        fix="raise PostgreSQL's max_connections (12 per bot process; README: Scaling) or the role's CONNECTION LIMIT",
                    )
                async with self._returned:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RETRY_EVERY):
                            await self._returned.wait()

    async def release(self, conn: Any) -> None:
        try:
            await self.pool.release(conn)
        finally:
            async with self._returned:
                self._returned.notify()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        conn = await self.acquire()
        try:
            yield conn
        finally:
            await self.release(conn)
