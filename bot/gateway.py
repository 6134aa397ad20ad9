"""Connecting to the gateway with a bound: one line per failed attempt, give up after N, stop on close;
and the gateway's echoes of messages written by bots, left unbuilt (:func:`skip_bot_messages`).

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
from discord import StageChannel, TextChannel, Thread, VoiceChannel
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


_LAST_MESSAGE_KEPT = (TextChannel, VoiceChannel, Thread, StageChannel)
"""The channels whose ``last_message_id`` discord.py keeps from each MESSAGE_CREATE."""


def skip_bot_messages(state: Any) -> None:
    """MESSAGE_CREATE and MESSAGE_UPDATE events of messages written by bots (the gateway's echoes of this
    bot's own posts and edits, 1.5 per agent step at 100 sessions) are not built into ``Message`` objects:
    no listener takes them (``AgentBot.dispatch`` drops them), and building one cost 70-84 us of CPU each
    in ``bench/bot_load.py``. What discord.py does with them besides is kept: a channel's
    ``last_message_id``, and an edit of a message whose view it tracks goes the whole way. Installed only
    without a message cache (the cache would keep them)."""
    if state._messages is not None:
        return
    create, update = state.parsers["MESSAGE_CREATE"], state.parsers["MESSAGE_UPDATE"]

    def message_create(data: Any) -> None:
        if not (data.get("author") or {}).get("bot"):
            return create(data)
        channel, _ = state._get_guild_channel(data)
        if channel is not None and channel.__class__ in _LAST_MESSAGE_KEPT:
            channel.last_message_id = int(data["id"])
        return None

    def message_update(data: Any) -> None:
        if not (data.get("author") or {}).get("bot") or ("components" in data and _tracked(state, data)):
            return update(data)
        return None

    state.parsers["MESSAGE_CREATE"], state.parsers["MESSAGE_UPDATE"] = message_create, message_update


def _tracked(state: Any, data: Any) -> bool:
    """Whether discord.py would update a view from this edit's components (its own test)."""
    try:
        entity_id = int(data["interaction"]["id"])
    except (KeyError, TypeError, ValueError):
        entity_id = int(data["id"])
    return bool(state._view_store.is_message_tracked(entity_id))
