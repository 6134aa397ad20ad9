"""Connecting to the gateway with a bound: one line per failed attempt, give up after N, stop on close.

discord.py 2.7's ``AutoShardedClient.launch_shard`` retries a failed connect every 5 s forever, logs
a full traceback each time and never looks at ``close()``, so a bot whose gateway is unreachable
ignored SIGTERM (it needed SIGKILL) and filled the log. :class:`BoundedGateway` replaces that one
method; everything after the connect (READY, resumes, reconnects) is discord.py's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
import yarl
from discord.gateway import DiscordWebSocket
from discord.shard import Shard

log = structlog.get_logger("bot.gateway")

RETRY_SECONDS = 5.0
"""discord.py's own pause between connect attempts."""


class GatewayUnreachable(Exception):
    """``DISCORD_CONNECT_ATTEMPTS`` connects in a row failed; the message says what to check."""


class BoundedGateway:
    """Mix into an ``AutoShardedClient`` (before it in the bases); ``max_connect_attempts`` 0 = no limit."""

    max_connect_attempts: int = 10

    async def launch_shard(self: Any, gateway: yarl.URL, shard_id: int, *, initial: bool = False) -> None:
        attempt = 0
        while not self.is_closed():
            try:
                coro = DiscordWebSocket.from_client(self, initial=initial, gateway=gateway, shard_id=shard_id)
                ws = await asyncio.wait_for(coro, timeout=self.shard_connect_timeout)
            except Exception as e:
                attempt += 1
                why = f"{type(e).__name__}: {e}".strip().rstrip(":")
                limit = self.max_connect_attempts
                if limit and attempt >= limit:
                    raise GatewayUnreachable(
                        f"could not connect to the Discord gateway ({gateway}) in {attempt} attempts "
                        f"(last: {why}): check the network, or DISCORD_GATEWAY_URL; DISCORD_CONNECT_ATTEMPTS "
                        "sets how many tries"
                    ) from None
                log.warning(
                    "gateway_connect_failed",
                    shard=shard_id,
                    attempt=attempt,
                    error=why,
                    retry_in=RETRY_SECONDS,
                )
                with contextlib.suppress(TimeoutError):  # or less, once close() has been called
                    await asyncio.wait_for(self._closing_event().wait(), RETRY_SECONDS)
                continue
            # The same two lines as discord.py's launch_shard after a successful connect.
            shards = self._AutoShardedClient__shards
            shards[shard_id] = ret = Shard(ws, self, self._AutoShardedClient__queue.put_nowait)
            ret.launch()
            return

    def _closing_event(self: Any) -> asyncio.Event:
        if getattr(self, "_bounded_closing", None) is None:
            self._bounded_closing = asyncio.Event()
        return self._bounded_closing

    async def close(self: Any) -> None:
        self._closing_event().set()
        await super().close()  # type: ignore[misc]
