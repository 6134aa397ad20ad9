"""Bot-wide manners: one REST write budget shared fairly by every session, and a cap on concurrent runs.

Discord limits a bot to about 50 requests per second across everything it does, on top of each
channel's own 5 writes per 5 s (which :class:`bot.write_window.WriteBudget` keeps per thread). With
many sessions at once, their streamers together could exceed the global limit and draw 429s that stall
every session, so every message write, typing indicator and reaction a session makes first takes a
turn from one :class:`RestBudget` (``BOT_REST_WRITES_PER_SECOND``). Typing indicators are cosmetic:
they are sent only when the budget has room, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

import structlog

from agent.tools.fair_slots import FairSlots

log = structlog.get_logger("bot.pacing")

CATCH_UP = 0.1
"""Seconds of lateness a busy event loop may make up at once: at 40/s, 4 turns (44 in a second at
most, under Discord's 50); at a low rate, less than one turn."""
TYPING_EVERY = 8.0
"""Discord shows "typing…" for 10 s after one request; discord.py's own loop re-sends every 5 s,
which for a 3-minute run is 36 requests. One every 8 s keeps it visible with 40% fewer."""
TYPING_RETRY = 1.0
"""When the shared budget had no room, try again this much later, doubling up to :data:`TYPING_EVERY`
while it has none (the indicator is a nicety)."""


class _Waiter:
    __slots__ = ("fut", "holds")

    def __init__(self, fut: asyncio.Future[None], holds: bool) -> None:
        self.fut, self.holds = fut, holds


class RestBudget:
    """Every REST write of one bot, evenly spaced at ``per_second`` and granted fairly.

    Writers wait in *lanes* (one per thread: a session's streamer passes its thread id; a call
    without a lane is a lane of its own). Turns go round-robin over the lanes that wait, in the
    order they began waiting, so with N sessions each streaming one write at a time every session
    gets a turn every N / ``per_second`` seconds: no session is starved, however many others stream
    (a plain token bucket serves whoever asks first after each refill, and a session can lose that
    race every time). A lane's writes keep their own order.

    Writes made inside :meth:`turn` also count as *in flight* until their answer arrives, and at
    most ``in_flight`` are: when Discord (or the network) slows down, or answers a global 429
    (discord.py then holds every request until it may retry), the bot stops handing out turns
    instead of piling up requests that would all fire, over the limit, the moment the hold ends.
    Evenly spaced (a bucket of one): a bucket of a whole second's worth would let a burst and the
    steady rate share one second, up to twice the rate in a window Discord counts.
    """

    def __init__(self, per_second: float, *, in_flight: int | None = None) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be above 0, got {per_second}")
        self.per_second = per_second
        self.interval = 1.0 / per_second
        self.in_flight_limit = in_flight or max(4, round(per_second))
        """A second's worth: enough for the rate while answers take up to a second; few enough that
        the burst when a hold ends stays under Discord's 50 per second."""
        self.in_flight = 0
        self._lanes: OrderedDict[Hashable, deque[_Waiter]] = OrderedDict()
        self._next_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- taking a turn ------------------------------------------------------------------------------
    async def acquire(self, lane: Hashable | None = None) -> None:
        """Wait for a turn (for a write made right after; not counted in flight)."""
        await self._wait(lane, holds=False)

    @contextlib.asynccontextmanager
    async def turn(self, lane: Hashable | None = None) -> AsyncIterator[Turn]:
        """Wait for a turn, and count the block as one write in flight until it ends. Decide what to
        write inside the block (it carries everything that changed while the lane waited); a turn
        left unused (:meth:`Turn.unused`) goes to the next lane at once."""
        grant = Turn(waited=await self._wait(lane, holds=True))
        try:
            yield grant
        finally:
            self.in_flight -= 1
            if not grant.used:
                self._next_at = min(self._next_at, self._now())
            self._schedule()

    def try_acquire(self) -> bool:
        """Take a turn only if one is free now and nobody waits (for writes that may be skipped)."""
        now = self._now()
        if self._lanes or not self._free(now):
            return False
        self._take(now)
        return True

    def waiting(self) -> int:
        """Writers waiting for a turn."""
        return sum(len(q) for q in self._lanes.values())

    # --- the schedule -------------------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _free(self, now: float) -> bool:
        return now >= self._next_at and self.in_flight < self.in_flight_limit

    def _take(self, now: float) -> None:
        # A turn granted late (the event loop was busy) does not push the rest back: up to
        # CATCH_UP seconds of lateness are made up, or a loop running late hands out fewer turns
        # than the rate (36/s of 40 at 300 sessions when only one interval was). Idle time is not
        # saved up beyond that, so a burst is at most CATCH_UP's worth of turns over the rate.
        self._next_at = max(now - CATCH_UP, self._next_at) + self.interval

    async def _wait(self, lane: Hashable | None, *, holds: bool) -> bool:
        """True if other writers were ahead (not merely the spacing between two turns)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._lanes and self._free(now):
            self._take(now)
            self.in_flight += holds
            return False
        contended = bool(self._lanes) or self.in_flight >= self.in_flight_limit
        waiter = _Waiter(loop.create_future(), holds)
        self._lanes.setdefault(object() if lane is None else lane, deque()).append(waiter)
        self._schedule()
        try:
            await waiter.fut
        except asyncio.CancelledError:
            if waiter.fut.done() and not waiter.fut.cancelled():  # granted as it was cancelled
                self.in_flight -= holds
                self._next_at = min(self._next_at, loop.time())
                self._schedule()
            raise
        return contended

    def _schedule(self) -> None:
        if self._timer is not None or not self._lanes or self.in_flight >= self.in_flight_limit:
            return  # already armed, nobody waits, or a write's end will call again
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(max(self._next_at, loop.time()), self._serve)

    def _serve(self) -> None:
        self._timer = None
        now = self._now()
        while self._lanes and self._free(now):
            lane, queue = next(iter(self._lanes.items()))
            waiter = queue.popleft()
            if queue:
                self._lanes.move_to_end(lane)  # round-robin: its next write waits for the others
            else:
                del self._lanes[lane]
            if waiter.fut.cancelled():
                continue
            waiter.fut.set_result(None)
            self._take(now)
            self.in_flight += waiter.holds
            break
        self._schedule()


class Turn:
    """A turn granted by :meth:`RestBudget.turn`."""

    __slots__ = ("used", "waited")

    def __init__(self, *, waited: bool) -> None:
        self.waited = waited
        """Others were served first: writes are scarce, so this one should carry all it can."""
        self.used = True

    def unused(self) -> None:
        """Nothing was written: the next lane may go now."""
        self.used = False


@contextlib.asynccontextmanager
async def typing_indicator(channel: Any, budget: RestBudget | None) -> AsyncIterator[None]:
    """Show "typing…" while the block runs, one request every :data:`TYPING_EVERY` seconds when the
    shared budget has room (skipped, not queued, when it is short)."""

    async def loop() -> None:
        retry = TYPING_RETRY
        while True:
            if budget is None or budget.try_acquire():
                with contextlib.suppress(Exception):
                    await channel.typing()
                retry = TYPING_RETRY
                await asyncio.sleep(TYPING_EVERY)
            else:
                # Backing off: while the budget is short it stays short (every write queues), and a
                # retry each second for each session was 3-10 wakeups per agent step at 100-300 sessions.
                await asyncio.sleep(retry)
                retry = min(retry * 2, TYPING_EVERY)

    task = asyncio.create_task(loop(), name="typing")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RunSlots(FairSlots):
    """At most ``limit`` turns run at once, bot-wide, shared fairly between servers (``key``) as
    :class:`~agent.tools.fair_slots.FairSlots` shares them: with one bot-wide FIFO, one busy server
    filled every slot and its queue, and another server's first request waited behind all of it."""

    def full(self) -> bool:
        return self.running >= self.limit

    @contextlib.asynccontextmanager
    async def hold(
        self,
        on_wait: Callable[[], Awaitable[None]] | None = None,
        unless: asyncio.Event | None = None,
        key: Hashable = None,
    ) -> AsyncIterator[None]:
        """Hold a slot while the block runs; ``on_wait`` is awaited once if this turn has to wait.
        ``unless``: once set, stop waiting and run the block without a slot (a /stop of a waiting turn:
        the block sees it stopped and runs nothing). ``key``: the turn's server."""
        if self.full() and on_wait is not None:
            with contextlib.suppress(Exception):
                await on_wait()
        if self.running < self.limit and not self._waiting:
            self._take(key)
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            me = (next(self._arrivals), key, granted)
            self._waiting.append(me)
            told = asyncio.ensure_future(unless.wait()) if unless is not None else None
            try:
                await asyncio.wait([granted] + ([told] if told else []), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                if granted.done():
                    self.release(key)
                raise
            finally:
                if told is not None:
                    told.cancel()
                if not granted.done():
                    granted.cancel()
                    self._waiting.remove(me)
                    self._forget(key)
            if granted.cancelled():
                yield
                return
        try:
            yield
        finally:
            self.release(key)
