"""Per-server settings changed by one shard process apply in the others at once (issue 18.3).

Why LISTEN/NOTIFY rather than a version check on every read: settings are read on the hot path (every
quota check, every turn), and with a version check each read costs a round trip to PostgreSQL, about
what reading the settings themselves costs, so the cache would save nothing; with NOTIFY a cached read
costs no query and a change reaches the other processes within milliseconds of its commit. Measured
(``bench/settings_reads.py``, loopback PostgreSQL 15, load average 7 on 2 cores): 224 µs per read
uncached, 204 µs with a version check, 0.2 µs cached with NOTIFY; the other process's entry was dropped
a median 0.98 ms (max 3.5 ms) after the change began, before the change had returned in 48 of 50. The one risk of NOTIFY, a listener that lost its
connection and so missed a change, is closed by :meth:`GuildSettingsStore.trust`: while the listener is
not connected every read queries, and on reconnecting the whole cache is dropped.

One dedicated connection per process (LISTEN holds its connection, so it is not taken from the pool);
it is checked every ``ping`` seconds so a connection dropped without a FIN is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog

from bot.store.guild_settings import SETTINGS_CHANNEL, GuildSettingsStore
from bot.store.pg import connect_target

__all__ = ["SettingsListener"]

log = structlog.get_logger("bot.store.settings_sync")

SAY_EVERY = 60.0
"""Seconds between the lines of one outage after its first: every retry (2 s) logged one, 150 in five minutes."""


class SettingsListener:
    def __init__(
        self, url: str, store: GuildSettingsStore, *, ping: float = 30.0, retry: float = 2.0
    ) -> None:
        self.url = url
        self.store = store
        self.ping = ping
        self.retry = retry
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        """Connection attempts failed since the listener last listened."""
        self._said_at = 0.0

    async def start(self, within: float = 10.0) -> None:
        """Start listening; waits up to ``within`` seconds for the first connection (until then, and
        whenever it is lost, settings are read from the database every time, never stale)."""
        self._task = asyncio.create_task(self._run(), name="settings-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), within)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self.store.invalidate(int(payload))
        except ValueError:
            self.store.invalidate(None)

    async def _run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                target, timeout = connect_target(self.url)
                conn = await asyncpg.connect(target, timeout=timeout)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(SETTINGS_CHANNEL, self._on_notify)
                self.store.trust(True)  # listening from here on: what is cached from now is kept fresh
                self.connected.set()
                self.failures = 0
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self.ping)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=10)
                log.warning("settings_listener_lost")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                now = asyncio.get_running_loop().time()
                if self.failures == 1 or now - self._said_at >= SAY_EVERY:
                    self._said_at = now
                    log.warning(
                        "settings_listener_failed",
                        error=f"{type(e).__name__}: {e}",
                        retry_in=self.retry,
                        failed_attempts=self.failures,
                    )
            finally:
                self.connected.clear()
                self.store.trust(False)
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(self.retry)
