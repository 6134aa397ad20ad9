"""/research and mentions: open a thread, post the header, start the session.

Decisions (issue 20): the bot names the permissions it lacks before opening a thread; a private
request never falls back to a public thread (its research would be visible and stored server-wide).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from agent.tools.safe_names import visible_text
from bot.attach import files_only, incoming
from bot.channels import channel_refusal
from bot.control import HeaderRefused
from bot.discord_sink import NO_MENTIONS
from bot.formatting import DmLimit, Refusal, reply, tell
from bot.mentions import mentions_bot, strip_bot_mentions
from bot.splitting import splits_a_character
from bot.store import new_session_id

if TYPE_CHECKING:
    from bot.app import AgentBot


TOLD_EVERY = 60.0
"""A member's mentions that start nothing (no question, a limit reached) are answered once per channel in
this many seconds: each answer is a write in the channel, and a member flooding mentions had the bot
reply to every one."""


_LINKED = re.compile(r"\[([^\]\n]*)\]\(\s*<?[^)\s]*>?\s*\)")  # [text](url): the text
_CODES = re.compile(r"<(?:@[!&]?|#)\d+>|</[^<>:]+:\d+>|<t:-?\d+(?::\w)?>")  # mentions, commands, times
_EMOJI = re.compile(r"<a?(:\w+:)\d+>")
_LINE_MARKS = re.compile(r"^(?:#{1,3}\s+|-#\s+|>{1,3}\s*|[-*+]\s+|\d+[.)]\s+)+")
_FENCE = re.compile(r"^(?:`{3,}|~{3,})[\w+-]*$")  # a code block's fence: no words
_PAIRED = re.compile(r"(\*\*|__|~~|\|\||`+)(.+?)\1")  # bold, underline, strike, spoiler, code
_EMPHASIS = re.compile(r"(?<!\w)([*_])(\S(?:.*?\S)?)\1(?!\w)")


def _tidy(line: str) -> str:
    """One line of a task as a thread's name shows it: Discord renders no Markdown there, so
    ``**Tides** in [Brest](https://…)`` read with its asterisks and address; mentions, channel links
    and timestamps read as ``<@123>``."""
    line = _LINKED.sub(r"\1", line)
    line = _EMOJI.sub(r"\1", _CODES.sub("", line))
    line = _LINE_MARKS.sub("", _FENCE.sub("", line.strip()))
    line = _EMPHASIS.sub(r"\2", _PAIRED.sub(r"\2", line))
    line = re.sub(r"@(everyone|here)\b", r"\1", line)  # no @everyone in the notice
    return " ".join(line.split())


NO_THREADS_HERE = (
    "I can't open a thread in this channel's chat. Use /research (or mention me) in a text channel, and "
    "I'll open a thread for it there."
)


def thread_name(task: str) -> str:
    """Discord allows 100 characters; the task's first line with words, tidied of its Markdown, reads
    best. Direction overrides and invisible characters are dropped: the name must read as what it says.
    Mentions are dropped (the @ of @everyone and @here): Discord's notice of a new public thread in the
    channel is its name. A long name is cut between characters as shown (never inside a joined emoji)."""
    # A name shows under 100 characters: a line's first 300 are plenty, and tidying a 4,000-character
    # line of "*a " took 0.6 s of the event loop (the emphasis pattern backtracks).
    lines = (_tidy(line[:300]) for line in visible_text(task).splitlines())
    name = "🔎 " + next((line for line in lines if line), "research")
    if len(name) <= 95:
        return name
    cut = 95
    while cut > 60 and splits_a_character(name, cut):
        cut -= 1
    return name[:cut].rstrip()


class ResearchCog(commands.Cog):
    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot
        self._hinted, self._refused = DmLimit(TOLD_EVERY), DmLimit(TOLD_EVERY)

    @app_commands.command(
        name="research", description="Research a question with an AI agent in a new thread."
    )
    @app_commands.describe(
        task="What to research",
        tier="Model tier (default: chosen per task)",
        private="Open a private thread (only you, and those you add)",
        file="A file for the agent: text, CSV, JSON, code, PDF or an image",
    )
    @app_commands.guild_only()
    async def research(
        self,
        interaction: discord.Interaction,
        task: app_commands.Range[str, 1, 4000],
        tier: Literal["simple", "medium", "complex"] | None = None,
        private: bool = False,
        file: discord.Attachment | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if not visible_text(task).strip():  # Discord trims ASCII spaces, not U+3000, tabs or U+200B
            raise Refusal("Tell me what to research: the task held only blank characters.")
        channel = interaction.channel
        gs = await self.bot.services.guild_settings.get(interaction.guild_id)
        parent_id = getattr(channel, "parent_id", None)
        if channel is not None and (refused := channel_refusal(gs, channel.id, parent_id, interaction.guild)):
            raise Refusal(refused)
        if isinstance(channel, discord.Thread):
            raise Refusal("Use /research in a text channel: it opens its own thread.")
        if not isinstance(channel, discord.TextChannel):
            raise Refusal("/research works in text channels.")
        if not interaction.permissions.send_messages:  # else the bot posts where the member may not
            raise Refusal(
                "/research posts in this channel for you, and you can't post in this channel "
                "(you lack **Send Messages** here): use it where you can."
            )
        member, sid = interaction.user, new_session_id()
        perms = interaction.app_permissions
        thread = await self._open_thread(channel, member, task, perms, private=private, session_id=sid)
        files = incoming([file] if file else [])
        try:
            await self.bot.control.start_session(thread, member, task, tier, files, session_id=sid)
        except HeaderRefused as e:
            raise Refusal(e.said(f"**Send Messages in Threads** in {channel.mention}")) from None
        slots = self.bot.runner.slots
        if slots.full():
            await reply(
                interaction,
                f"Queued in {thread.mention}: the bot is already running its maximum of {slots.limit} "
                "research runs at once; yours starts as soon as one finishes.",
            )
            return
        await reply(interaction, f"Started in {thread.mention}.")

    async def _open_thread(
        self,
        channel: discord.TextChannel,
        member: discord.Member | discord.User,
        task: str,
        perms: discord.Permissions,
        *,
        private: bool,
        session_id: str,
        message: discord.Message | None = None,
    ) -> discord.Thread:
        """What /research and a mention share: the bot's permissions, the member's quota, then a thread of
        the kind asked for (on ``message`` for a mention); else :class:`Refusal` with what they read. A
        private request never falls back to a public thread (its research would be readable, and stored,
        server-wide). The member's concurrency slot is taken for ``session_id`` with the check, so two
        requests at the same instant cannot both pass it; it is given back if no thread opens."""
        news = getattr(channel, "type", None) == discord.ChannelType.news
        if news and private:  # Discord opens only announcement threads there, which anyone can read
            raise Refusal(
                f"{channel.mention} is an announcement channel, where Discord opens no private threads: "
                "ask in a text channel for a private thread."
            )
        lacking = missing_permissions(perms, private=private)
        if lacking:
            names = ", ".join(f"**{p}**" for p in lacking)
            raise Refusal(
                f"I can't start research in {channel.mention}: I am missing {names} there. "
                "A server admin can grant it to my role (or in this channel's permissions)."
            )
        decision = await self.bot.control.may_start(channel.guild.id, member, task, session_id)
        if not decision.allowed:
            raise Refusal(f"⛔ {decision.message}")
        archive = self.bot.bot_settings.thread_archive_minutes
        try:
            await self.bot.runner.rest_budget.acquire()
            if message is not None:
                return await message.create_thread(name=thread_name(task), auto_archive_duration=archive)
            return await channel.create_thread(
                name=thread_name(task),
                # An announcement channel's threads are announcement threads (type 10, as Discord
                # documents): a public thread (11) there was refused as a channel type it cannot act on.
                type=discord.ChannelType.private_thread
                if private
                else discord.ChannelType.news_thread
                if news
                else discord.ChannelType.public_thread,
                auto_archive_duration=archive,
                reason="agentbot /research",
            )
        except Exception as e:
            await self.bot.services.quotas.end_session(session_id)  # no thread: the slot goes back
            if isinstance(e, discord.HTTPException):
                raise Refusal(thread_refusal(e, channel, private=private)) from e
            raise

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        with self.bot.control.taking(message.id):
            await self._mentioned(message)

    async def _mentioned(self, message: discord.Message) -> None:
        """A mention of the bot (or its managed role) in an ordinary channel starts a session in a thread
        on that message."""
        bot = self.bot
        channel = message.channel
        chat = isinstance(channel, discord.VoiceChannel | discord.StageChannel)  # no threads in their chat
        if (
            message.author.bot
            or message.guild is None
            or not (chat or isinstance(channel, discord.TextChannel))
        ):
            return  # a thread is no TextChannel: its messages are follow-ups (bot.cogs.threads)
        if not mentions_bot(bot, message):
            return
        if not (await bot.services.guild_settings.get(message.guild.id)).channel_allowed(channel.id):
            return  # not even a hint: the server's admins keep the bot out of this channel
        if chat:
            if self._hinted.allow(message.author.id, channel.id):
                await bot.runner.rest_budget.acquire(channel.id)
                with contextlib.suppress(discord.HTTPException):
                    await message.reply(NO_THREADS_HERE, allowed_mentions=NO_MENTIONS, silent=True)
            return
        task = strip_bot_mentions(bot, message) or (
            files_only(message.attachments) if message.attachments else ""
        )
        if not task:
            if self._hinted.allow(message.author.id, channel.id):
                await bot.runner.rest_budget.acquire(channel.id)
                await message.reply(
                    "Ask me something after the mention, or use /research.", allowed_mentions=NO_MENTIONS
                )
            return
        perms, sid = channel.permissions_for(message.guild.me), new_session_id()
        try:
            thread = await self._open_thread(
                channel, message.author, task, perms, private=False, session_id=sid, message=message
            )
        except Refusal as e:
            if self._refused.allow(message.author.id, channel.id):
                await bot.runner.rest_budget.acquire(channel.id)
                await tell(message, str(e), bot.dm_limit)  # a DM when the reply itself is refused
            return
        files = incoming(message.attachments)
        try:
            await bot.control.start_session(
                thread, message.author, task, None, files, message_id=message.id, session_id=sid
            )
        except HeaderRefused as e:
            said = e.said("**Send Messages in Threads** here")
            await message.reply(said, allowed_mentions=NO_MENTIONS)


def missing_permissions(perms: discord.Permissions, *, private: bool) -> list[str]:
    """The permissions a session thread needs that the bot lacks here, by their names in Discord."""
    kind = "private" if private else "public"
    need = (
        "View Channel",
        f"Create {kind.title()} Threads",
        "Send Messages in Threads",
        "Read Message History",
    )
    if perms.administrator:
        return []
    return [label for label in need if not getattr(perms, label.lower().replace(" ", "_"))]


def thread_refusal(e: discord.HTTPException, channel: discord.abc.GuildChannel, *, private: bool) -> str:
    """Why Discord refused a thread, in words an admin can act on."""
    kind = "private" if private else "public"
    if isinstance(e, discord.Forbidden) and e.code == 50001:  # Missing Access: the channel is hidden from it
        return (
            f"Discord refused to open a {kind} thread in {channel.mention} (Missing Access): I can't see "
            f"that channel. I need **View Channel** there, with **Create {kind.title()} Threads** and "
            "**Send Messages in Threads**."
        )
    if isinstance(e, discord.Forbidden):
        tail = "; I did not open a public thread instead, since this research was meant to be private."
        return (
            f"Discord refused to open a {kind} thread in {channel.mention} ({e.text or 'Missing Permissions'}). "
            f"I need **Create {kind.title()} Threads** and **Send Messages in Threads** there"
            + (tail if private else ".")
        )
    return (
        f"Discord refused to open a thread in {channel.mention} (HTTP {e.status}: {e.text}). Try again later."
    )


async def setup(bot: AgentBot) -> None:
    await bot.add_cog(ResearchCog(bot))
