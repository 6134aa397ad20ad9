"""Bot-wide manners: one REST write budget shared by every session, and a cap on concurrent runs.

Discord limits a bot to about 50 requests per second across everything it does, on top of each
channel's own 5 writes per 5 s (which :class:`bot.streamer.WriteBudget` keeps per thread). With many
sessions at once, their streamers together could exceed the global limit and draw 429s that stall
every session, so every message write, typing indicator and reaction a session makes first takes a
token from one :class:`RestBudget` (``BOT_REST_WRITES_PER_SECOND``). Typing indicators are cosmetic:
they are sent only when the budget has room, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiolimiter import AsyncLimiter

log = structlog.get_logger().bind(logger="bot.pacing")

TYPING_EVERY = 8.0
"""Discord shows "typing…" for 10 s after one request; discord.py's own loop re-sends every 5 s,
which for a 3-minute run is 36 requests. One every 8 s keeps it visible with 40% fewer."""
TYPING_RETRY = 1.0
"""When the shared budget had no room, try again this much later (the indicator is a nicety)."""


class RestBudget:
    """A token bucket over all of one bot's REST writes (created inside the running event loop)."""

    def __init__(self, per_second: float) -> None:
        # Evenly spaced (a bucket of one): a bucket of a whole second's worth would let a burst and the
        # steady rate share one second, up to twice the rate in a window Discord counts.
        self.per_second = per_second
        self._limiter = AsyncLimiter(1, 1.0 / per_second)

    async def acquire(self) -> None:
        await self._limiter.acquire()

    async def try_acquire(self) -> bool:
        """Take a token only if one is free now (for writes that may be skipped, like typing)."""
        if not self._limiter.has_capacity():
            return False
        await self._limiter.acquire()  # has room: returns at once
        return True

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        await self.acquire()
        return await fn()


@contextlib.asynccontextmanager
async def typing_indicator(channel: Any, budget: RestBudget | None) -> AsyncIterator[None]:
    """Show "typing…" while the block runs, one request every :data:`TYPING_EVERY` seconds when the
    shared budget has room (skipped, not queued, when it is short)."""

    async def loop() -> None:
        while True:
            if budget is None or await budget.try_acquire():
                with contextlib.suppress(Exception):
                    await channel.typing()
                await asyncio.sleep(TYPING_EVERY)
            else:
                await asyncio.sleep(TYPING_RETRY)

    task = asyncio.create_task(loop(), name="typing")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RunSlots:
    """At most ``limit`` turns run at once, bot-wide; the rest wait in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self.running = 0

    def full(self) -> bool:
        return self.running >= self.limit

    @contextlib.asynccontextmanager
    async def hold(self, on_wait: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[None]:
        """Hold a slot while the block runs; ``on_wait`` is awaited once if this turn has to wait."""
        if self._sem.locked() and on_wait is not None:
            with contextlib.suppress(Exception):
                await on_wait()
        async with self._sem:
            self.running += 1
            try:
                yield
            finally:
                self.running -= 1
