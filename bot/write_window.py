"""A thread's own write window: Discord takes about 5 writes per 5 s per channel, edits included.

One :class:`WriteBudget` per thread, shared by everything that writes there (the header, every turn's
streamer, the bot's notes), so together they stay inside the channel's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class WriteBudget:
    """A sliding window: at most ``writes`` in any ``per`` seconds (Discord: 5 per 5 s per channel)."""

    def __init__(
        self, writes: int = 5, per: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.writes, self.per, self.clock = writes, per, clock
        self._stamps: deque[float] = deque()

    def wait_time(self) -> float:
        """Seconds until the window has room for one more write."""
        now = self.clock()
        while self._stamps and now - self._stamps[0] >= self.per:
            self._stamps.popleft()
        if len(self._stamps) < self.writes:
            return 0.0
        return self._stamps[0] + self.per - now + 0.01

    def used(self) -> int:
        """Writes in the current window."""
        self.wait_time()
        return len(self._stamps)

    def short(self) -> bool:
        """True while writes are being paced: merge pending changes rather than spend a write on each."""
        self.wait_time()
        return len(self._stamps) * 2 >= self.writes or (
            bool(self._stamps) and self.clock() - self._stamps[-1] < 2 * self.per / self.writes
        )

    async def acquire(self, rest: Any | None = None) -> None:
        """Wait for room, count one write, then wait for the bot-wide turn (``rest``, a RestBudget) if
        given: for writers other than the streamer, e.g. the header.

        The write is counted again when the bot-wide turn comes, as Discord counts it when it arrives:
        counted only before a wait of seconds for that turn, five writes could arrive in less than 5 s
        together with the streamer's (6 in 5 s in ``bench/bot_load.py`` at 20 sessions)."""
        for _ in range(self.writes):  # another writer may take the room first: look again
            wait = self.wait_time()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        at = self.take()
        if rest is not None:
            await rest.acquire()
            self.retime(at)

    def take(self, at: float | None = None) -> float:
        """Count a write (``at`` for one made elsewhere in the same channel, e.g. the session header)."""
        stamp = self.clock() if at is None else at
        self._stamps.append(stamp)
        return stamp

    def retime(self, at: float) -> None:
        """Count the write counted at ``at`` from now (it went later: after a wait, or once it was sent)."""
        with contextlib.suppress(ValueError):
            self._stamps.remove(at)
        self._stamps.append(self.clock())
