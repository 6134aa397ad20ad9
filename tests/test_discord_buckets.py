"""discord.py's rate-limit buckets under many threads: the idle ones are still dropped, but the sweep
over all of them runs at most once a minute instead of once per new bucket (bot.app)."""

from __future__ import annotations

import asyncio

import discord

from bot.app import sweep_buckets_at_most


async def test_idle_buckets_are_dropped_by_one_sweep_a_minute() -> None:
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    buckets = http._buckets
    for i in range(300):  # buckets of threads that ended long ago
        buckets[f"old{i}"] = bucket = discord.http.Ratelimit(None)
        bucket._last_request -= 600
    now = [1000.0]
    sweep_buckets_at_most(http, 60.0, lambda: now[0])
    http.get_ratelimit("new0")  # the first new bucket sweeps: the idle ones go
    assert set(buckets) == {"new0"}
    for i in range(300):  # a burst of new threads within the minute: no sweep, nothing dropped
        http.get_ratelimit(f"busy{i}")
        buckets[f"busy{i}"]._last_request -= 600
    assert len(buckets) == 301
    now[0] += 60
    http.get_ratelimit("later")  # a minute on: the next new bucket sweeps again
    assert set(buckets) == {"new0", "later"}
