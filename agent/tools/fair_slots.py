"""At most ``limit`` holders at once, shared fairly between keys (servers), with a bound on the wait.

A freed slot goes to the waiting key holding the fewest slots, then the key served longest ago, then in
arrival order. With one first-come queue, one server that fetched many slow pages held every extraction
worker and queued the other servers' pages behind all of them. The bot's run slots
(``bot.pacing.RunSlots``) are these slots with a wait that a /stop can end.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Hashable


class FairSlots:
    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.running = 0
        self._held: Counter[Hashable] = Counter()
        self._waiting: list[tuple[int, Hashable, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._served: dict[Hashable, int] = {}
        """When each key holding or waiting for a slot last got one (dropped once it has neither)."""

    def waiting(self, key: Hashable | None = None) -> int:
        """Holders waiting (for ``key`` only, when given)."""
        return sum(1 for w in self._waiting if (key is None or w[1] == key) and not w[2].done())

    async def acquire(self, key: Hashable, wait: float) -> None:
        """Take a slot for ``key``; :class:`TimeoutError` after ``wait`` seconds without one."""
        if self.running < self.limit and not self._waiting:
            self._take(key)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        me = (next(self._arrivals), key, granted)
        self._waiting.append(me)
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(granted)
        except BaseException:
            if granted.done() and not granted.cancelled():  # granted just as it gave up: hand it on
                self.release(key)
            else:
                granted.cancel()
                if me in self._waiting:
                    self._waiting.remove(me)
                self._forget(key)
            raise

    def release(self, key: Hashable) -> None:
        self.running -= 1
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]
        self._forget(key)
        self._grant()

    def _take(self, key: Hashable) -> None:
        self.running += 1
        self._held[key] += 1
        self._served[key] = next(self._arrivals)

    def _forget(self, key: Hashable) -> None:
        """One entry per key in use: a key that holds nothing and waits for nothing counts as never served."""
        if key not in self._held and not any(w[1] == key for w in self._waiting):
            self._served.pop(key, None)

    def _grant(self) -> None:
        while self.running < self.limit and self._waiting:
            first = min(self._waiting, key=lambda w: (self._held[w[1]], self._served.get(w[1], -1), w[0]))
            self._waiting.remove(first)
            if not first[2].done():
                self._take(first[1])
                first[2].set_result(None)
