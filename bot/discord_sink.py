"""The streamer's :class:`~bot.streamer.Sink` over a Discord thread (or any messageable channel).

Every send goes out with link previews suppressed and carries the streamer's nonce with
``enforce_nonce``, so a send retried after an error never appears twice. Mentions are off and the
message is silent (SUPPRESS_NOTIFICATIONS: members who joined the thread are not notified once per
step) except for the one message the streamer marks ``notify``: the final answer, which pings the
person who asked and nobody else. Every write is made in a turn of the bot-wide
:class:`~bot.pacing.RestBudget`, in this thread's lane (:meth:`DiscordSink.turn`).
"""

from __future__ import annotations

import io
from contextlib import AbstractAsyncContextManager

import aiohttp
import discord

from bot.pacing import RestBudget
from bot.stream_sink import Grant, SinkError

NO_MENTIONS = discord.AllowedMentions.none()

THREAD_GONE_CODES = {
    10003: "the thread was deleted",  # Unknown Channel
    50083: "the thread is archived",  # Thread is archived (and locked, or the bot may not reopen it)
    50001: "the bot can no longer see the thread",  # Missing Access (removed from a private thread)
}


def ping_only(user_id: int) -> discord.AllowedMentions:
    """Allowed mentions that can notify this one user and nobody else (no roles, no @everyone)."""
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)])


def _retry_after(e: discord.HTTPException) -> float | None:
    try:
        value = e.response.headers.get("Retry-After")  # type: ignore[union-attr]
        return float(value) if value else None
    except (AttributeError, ValueError):
        return None


def to_sink_error(e: BaseException) -> SinkError:
    if isinstance(e, discord.RateLimited):
        return SinkError(str(e), status=429, retry_after=e.retry_after)
    code = getattr(e, "code", 0)
    if isinstance(e, discord.HTTPException) and code in THREAD_GONE_CODES:
        return SinkError(
            THREAD_GONE_CODES[code], status=e.status, retryable=False, gone=True, thread_gone=True
        )
    if isinstance(e, discord.NotFound):
        return SinkError("the message no longer exists", status=404, retryable=False, gone=True)
    if isinstance(e, discord.Forbidden):
        return SinkError(
            f"missing permission: {e.text}", status=403, retryable=False, gone=True, forbidden=True
        )
    if isinstance(e, discord.HTTPException):
        retryable = e.status == 429 or e.status >= 500
        return SinkError(
            f"HTTP {e.status}: {e.text}", status=e.status, retryable=retryable, retry_after=_retry_after(e)
        )
    return SinkError(f"{type(e).__name__}: {e}", retryable=True)


class DiscordSink:
    def __init__(self, channel: discord.abc.Messageable, budget: RestBudget) -> None:
        self.channel = channel
        self.budget = budget

    def turn(self) -> AbstractAsyncContextManager[Grant]:
        """This thread's turn among all the bot's REST writers."""
        return self.budget.turn(lane=self.channel.id)  # type: ignore[attr-defined]

    async def send(
        self,
        content: str,
        *,
        nonce: str,
        files: list[tuple[str, bytes]] | None = None,
        notify: int | None = None,
    ) -> tuple[int, str]:
        try:
            msg = await self.channel.send(
                content,
                nonce=nonce,
                files=[discord.File(io.BytesIO(data), filename=name) for name, data in files or ()],
                allowed_mentions=NO_MENTIONS if notify is None else ping_only(notify),
                suppress_embeds=True,
                silent=notify is None,
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
