"""One pooled httpx client for every model call, and the retry policy the adapters share.

Pool limits matter more than anything else for many concurrent sessions: with httpx's default of
100 connections, 200 concurrent sessions queue behind each other (measured in bench/loop_overhead.py),
so the default pool is sized for a few hundred concurrent streams.
"""

from __future__ import annotations

import email.utils
import random
import time

import httpx

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=60.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=256, keepalive_expiry=30.0)


def make_client(
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, limits: httpx.Limits = DEFAULT_LIMITS
) -> httpx.AsyncClient:
    """The process's shared client; adapters take it as a parameter so tests and the bot share one pool."""
    return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP date), or None."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(
    attempt: int,
    *,
    initial: float = 1.0,
    maximum: float = 30.0,
    retry_after: float | None = None,
    max_retry_after: float = 120.0,
) -> float:
    """Exponential backoff with full jitter, but never shorter than what the server asked for.

    A stream generator must tell its consumer about a retry *before* sleeping, which tenacity's
    iterator (it sleeps inside ``__anext__``) cannot do; so streaming adapters use this small policy.
    """
    exp = min(maximum, initial * (2 ** (attempt - 1)))
    delay = exp / 2 + random.uniform(0, exp / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return delay
