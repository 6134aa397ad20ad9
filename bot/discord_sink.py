"""The streamer's :class:`~bot.streamer.Sink` over a Discord thread (or any messageable channel).

Every send goes out with ``allowed_mentions`` none and link previews suppressed, and carries the
streamer's nonce with ``enforce_nonce``, so a send retried after an error never appears twice.
"""

from __future__ import annotations

import io

import aiohttp
import discord

from bot.streamer import SinkError

NO_MENTIONS = discord.AllowedMentions.none()


def _retry_after(e: discord.HTTPException) -> float | None:
    try:
        value = e.response.headers.get("Retry-After")  # type: ignore[union-attr]
        return float(value) if value else None
    except (AttributeError, ValueError):
        return None


def to_sink_error(e: BaseException) -> SinkError:
    if isinstance(e, discord.RateLimited):
        return SinkError(str(e), status=429, retry_after=e.retry_after)
    if isinstance(e, discord.NotFound):
        return SinkError("the message or thread no longer exists", status=404, retryable=False, gone=True)
    if isinstance(e, discord.Forbidden):
        return SinkError(f"missing permission: {e.text}", status=403, retryable=False, gone=True)
    if isinstance(e, discord.HTTPException):
        retryable = e.status == 429 or e.status >= 500
        return SinkError(
            f"HTTP {e.status}: {e.text}", status=e.status, retryable=retryable, retry_after=_retry_after(e)
        )
    return SinkError(f"{type(e).__name__}: {e}", retryable=True)


class DiscordSink:
    def __init__(self, channel: discord.abc.Messageable) -> None:
        self.channel = channel

    async def send(
        self, content: str, *, nonce: str, files: list[tuple[str, bytes]] | None = None
    ) -> tuple[int, str]:
        try:
            msg = await self.channel.send(
                content,
                nonce=nonce,
                files=[discord.File(io.BytesIO(data), filename=name) for name, data in files or ()],
                allowed_mentions=NO_MENTIONS,
                suppress_embeds=True,
            )
        except (TimeoutError, discord.HTTPException, aiohttp.ClientError, OSError) as e:
            raise to_sink_error(e) from e
        return msg.id, msg.content

    async def edit(self, message_id: int, content: str) -> None:
        try:
            await self._partial(message_id).edit(content=content, allowed_mentions=NO_MENTIONS)
        except (TimeoutError, discord.HTTPException, aiohttp.ClientError, OSError) as e:
            raise to_sink_error(e) from e

    async def delete(self, message_id: int) -> None:
        try:
            await self._partial(message_id).delete()
        except (TimeoutError, discord.HTTPException, aiohttp.ClientError, OSError) as e:
            raise to_sink_error(e) from e

    def _partial(self, message_id: int) -> discord.PartialMessage:
        return self.channel.get_partial_message(message_id)  # type: ignore[attr-defined,no-any-return]
