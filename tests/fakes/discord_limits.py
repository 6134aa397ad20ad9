"""Rate limits and failures for the fake Discord: injected 429/5xx answers and a per-channel write limit.

discord.py's retry logic is only exercised if the answers look exactly like Discord's: a 429 needs a JSON
body with ``retry_after`` *and* a ``Via`` header (without ``Via`` discord.py assumes a Cloudflare ban and
raises at once); successful answers carry ``X-RateLimit-*`` headers that make the client wait *before*
it would exceed a bucket.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BUCKET_HASH = "fake-channel-writes"
"""One bucket for create, edit and delete in a channel: discord.py then paces the three together."""


def rate_limited_body(retry_after: float, *, is_global: bool) -> dict[str, Any]:
    return {
        "message": "You are being rate limited.",
        "retry_after": retry_after,
        "global": is_global,
        "code": 0,
    }


def rate_limited_headers(retry_after: float, *, scope: str, via: bool) -> dict[str, str]:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after))), "X-RateLimit-Scope": scope}
    if via:
        headers["Via"] = "1.1 google"
    return headers


@dataclass
class Fault:
    """An injected answer for the next ``remaining`` requests matching ``method`` and the ``path`` glob."""

    method: str
    path: str
    status: int
    remaining: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and fnmatch.fnmatchcase(path, self.path)


class FaultInjector:
    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        if not fault.path.startswith("/"):
            raise ValueError(f"fault path must start with '/' (relative to /api/v10), got {fault.path!r}")
        if fault.remaining < 1:
            raise ValueError(f"fault count must be at least 1, got {fault.remaining}")
        self.faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.remaining -= 1
                fault.hits += 1
                return fault
        return None


@dataclass
class WriteDecision:
    allowed: bool
    headers: dict[str, str]
    retry_after: float = 0.0


class ChannelWriteLimiter:
    """Discord's per-channel message write limit as a fixed window: ``limit`` writes per ``per`` seconds.

    The window opens at a channel's first write and closes ``per`` seconds later. ``grace`` forgives a
    client that comes back a few milliseconds before the window it was told about has closed.
    """

    def __init__(
        self,
        limit: int = 5,
        per: float = 5.0,
        *,
        grace: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or per <= 0:
            raise ValueError(f"write limit needs limit >= 1 and per > 0, got limit={limit} per={per}")
        self.limit = limit
        self.per = per
        self.grace = grace
        self._clock = clock
        self._windows: dict[int, tuple[float, int]] = {}

    def acquire(self, channel_id: int) -> WriteDecision:
        now = self._clock()
        start, used = self._windows.get(channel_id, (now, 0))
        if now >= start + self.per - self.grace:
            start, used = now, 0
        reset_after = max(0.0, start + self.per - now)
        if used >= self.limit:
            headers = self._headers(0, reset_after)
            return WriteDecision(False, headers, retry_after=math.ceil(reset_after * 1000) / 1000)
        used += 1
        self._windows[channel_id] = (start, used)
        return WriteDecision(True, self._headers(self.limit - used, reset_after))

    def _headers(self, remaining: int, reset_after: float) -> dict[str, str]:
        reset_after = math.ceil(reset_after * 1000) / 1000
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": BUCKET_HASH,
        }
