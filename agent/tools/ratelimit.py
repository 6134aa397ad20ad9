"""Per-tool rate limits: a :class:`~agent.tools.registry.ToolGuard` with token buckets.

Each limited tool has two buckets per call: one per (server, user, tool) with the configured rate, and
one per (server, tool) holding ``server_multiplier`` times as much, so one busy user cannot spend the
whole server's allowance and a busy server cannot hammer an API. A call takes one token from both or
from neither; a refusal tells the model how long to wait or to use another tool.

Why not a waiting limiter here (aiolimiter, or the bot's REST budget in bot/pacing.py): a limited call
here is *refused at once* with the wait it would need, so the model can use another tool meanwhile, and
a test's clock is injected; a waiting limiter makes callers wait on the event loop's clock and cannot
say how long. Two small buckets do both.

Config: ``TOOL_RATE_LIMITS="web_search=10/60,fetch_url=30/60"`` (calls per seconds, per user) and
``TOOL_RATE_SERVER_MULTIPLIER=5``. Tools not listed are not limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.setting_parsers import Rate
from agent.tools.registry import Tool, ToolContext

Clock = Callable[[], float]
DEFAULT_LIMITS = "web_search=10/60,fetch_url=30/60,run_python=10/60"


@dataclass(slots=True)
class _Bucket:
    capacity: float
    rate: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self) -> float:
        """Seconds until one token is there (0 when one is)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class RateLimitGuard:
    """Token buckets per (server, tool) and (server, user, tool). Single event loop, no locks needed."""

    def __init__(
        self,
        limits: dict[str, Rate],
        *,
        server_multiplier: float = 5.0,
        clock: Clock = time.monotonic,
        max_buckets: int = 50_000,
    ) -> None:
        if server_multiplier < 1:
            raise ValueError("TOOL_RATE_SERVER_MULTIPLIER must be at least 1")
        self.limits = dict(limits)
        self.server_multiplier = server_multiplier
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[tuple[str, ...], _Bucket] = {}

    def _bucket(self, key: tuple[str, ...], rate: Rate, scale: float, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self._max_buckets:
                self._prune(now)
            full = rate.count * scale
            b = self._buckets[key] = _Bucket(full, rate.per_second * scale, full, now)
        b.refill(now)
        return b

    def _prune(self, now: float) -> None:
        """Forget full buckets: a new one starts full, so nothing changes for anyone."""
        for key, b in list(self._buckets.items()):
            b.refill(now)
            if b.tokens >= b.capacity:
                del self._buckets[key]

    async def check(self, tool: Tool, ctx: ToolContext) -> str | None:
        rate = self.limits.get(tool.name) or tool.default_rate
        if rate is None:
            return None
        now = self._clock()
        server = ctx.namespace or "-"
        user = ctx.user_id or "-"
        mine = self._bucket(("u", server, user, tool.name), rate, 1.0, now)
        shared = self._bucket(("s", server, tool.name), rate, self.server_multiplier, now)
        if mine.tokens >= 1 and shared.tokens >= 1:
            mine.tokens -= 1
            shared.tokens -= 1
            return None
        per = f"{rate.count} calls per {rate.seconds:g} s"
        if mine.tokens < 1:
            wait, scope = mine.wait(), f"{per} for each user"
        else:
            wait, scope = (
                shared.wait(),
                f"{round(rate.count * self.server_multiplier)} calls per {rate.seconds:g} s for this server",
            )
        return (
            f"rate limit: {tool.name} is limited to {scope}. Wait {math.ceil(wait)} s before calling it "
            "again, or continue with another tool or with what you already have."
        )
