"""Start-up: follow-ups members sent while the bot was down (a restart, a deploy), answered like others.

Discord does not replay messages to a bot that was not connected: alice's reply in her thread during a
restart was never answered, and nothing told her. After the interrupted turns are resumed
(:mod:`bot.resume`), each active thread Discord lists for an owned server (GUILD_CREATE carries them;
an archived one is closed) that is a session is read back to the last message the bot wrote before
this process started. A message after it that would have been a follow-up (the requester's, any
member's in a private thread, or one asking the bot; with text or files) that no cog of this process
received and the store does not hold (a queued follow-up, a turn) is queued as one, oldest first,
behind a turn resumed there, with a note saying it came while the bot was restarting.

Why after the bot's last message: while the bot is up, every message it takes is answered, refused or
queued (stored, so :mod:`bot.resume` has it), each leaving the bot's reply or a stored row behind; only a
message sent while nobody listened has neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
import structlog

from bot.attach import files_only, incoming
from bot.control import roles_of
from bot.mentions import mentions_bot, replies_to_bot, strip_bot_mentions
from bot.notes import MissedRestored
from bot.run_policy import can_post
from bot.runner import TurnRequest

if TYPE_CHECKING:
    from bot.control import SessionControl

__all__ = ["answer_missed"]

log = structlog.get_logger("bot.missed")

READ_BACK = 25
"""Messages read back per thread (newest first): one request; a longer gap is rarely all questions."""


async def answer_missed(bot: discord.Client, control: SessionControl) -> int:
    """Queue the follow-ups sent while the bot was down; returns how many."""
    sv, found = control.sv, 0
    for guild in list(bot.guilds):
        if not sv.owner.owns(guild.id):
            continue
        for thread in list(guild.threads):
            if thread.archived or thread.locked or thread.last_message_id is None:
                continue
            try:
                found += await _thread(bot, control, thread)
            except Exception:  # one thread's failure (an outage, a lost permission) leaves the others
                log.warning("missed_follow_ups_failed", thread_id=thread.id, exc_info=True)
    if found:
        log.info("missed_follow_ups", queued=found)
    return found


async def _thread(bot: discord.Client, control: SessionControl, thread: discord.Thread) -> int:
    runner, sv = control.runner, control.sv
    session = await sv.sessions.by_thread(thread.id)
    if session is None or session.never_started or not can_post(thread):
        return 0
    mine = discord.utils.time_snowflake(control.born)  # the bot's messages since are this process's
    await runner.rest_budget.acquire()
    unanswered: list[discord.Message] = []
    async for message in thread.history(limit=READ_BACK):
        if bot.user is not None and message.author.id == bot.user.id:
            if message.id >= mine:  # a resumed turn's note, written just now
                continue
            break  # the last word before the restart: what came before it was taken then
        unanswered.append(message)
    if not unanswered:
        return 0
    stored = {q.message_id for q in await sv.sessions.queued_turns(sv.owner) if q.session_id == session.id}
    queued = 0
    for message in reversed(unanswered):  # oldest first
        text = _follow_up(bot, thread, session, message)
        # A cog took it (it came over the gateway since the start), or it is stored: queued before the
        # restart (bot.resume answers it) or a turn of its own.
        if not text or control.seen(message.id) or message.id in stored:
            continue
        if await sv.sessions.turn_for_message(message.id) is not None:
            continue
        await runner.submit(
            TurnRequest(
                session,
                text,
                message.author.id,
                getattr(message.author, "display_name", ""),
                roles_of(message.author, thread.guild.id),
                thread,
                message_id=message.id,
                attachments=incoming(message.attachments),
                notes=[MissedRestored(text)],
            )
        )
        queued += 1
    return queued


def _follow_up(bot: discord.Client, thread: discord.Thread, session: Any, message: discord.Message) -> str:
    """The follow-up's text as ``bot.cogs.threads`` would take it; empty if it is none."""
    if message.author.bot or message.is_system():
        return ""
    private = thread.type == discord.ChannelType.private_thread
    asked = mentions_bot(bot, message) or replies_to_bot(bot, message)
    if not (private or message.author.id == session.user_id or asked):
        return ""
    text = strip_bot_mentions(bot, message)
    return text or (files_only(message.attachments) if message.attachments else "")
