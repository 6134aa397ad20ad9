"""Life in an agent thread: who may continue it, what the header shows, and how a thread ends (README
"What members see in a session thread").

* **Who starts a paid turn.** In a public thread the requester's messages, and others' only when they
  mention the bot or reply to it, so a "thanks!" costs nothing; in a private thread every member was
  invited, so anyone. Someone else writing without asking is told once how to ask (per person per
  thread, in memory: a restart may tell them once more).
* **How a thread ends.** Deleting, archiving or locking it stops its run at once and drops queued
  follow-ups, and nothing more is written (which would reopen it).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import TYPE_CHECKING

import discord
import structlog
from discord import app_commands
from discord.ext import commands

from agent.memory.types import MemoryStoreError
from agent.tools.memory_tools import private_namespace
from bot.attach import files_only, incoming
from bot.cogs.research import TOLD_EVERY
from bot.control import roles_of, spend
from bot.discord_sink import NO_MENTIONS
from bot.formatting import DmLimit, Refusal, tell, tell_in_dm
from bot.mentions import mentions_bot, replies_to_bot, strip_bot_mentions
from bot.run_policy import can_post
from bot.runner import FOLLOW_UPS_WAITING, TurnRequest
from bot.thread_header import LIMIT_STATES, HeaderState, show_state

if TYPE_CHECKING:
    from bot.app import AgentBot

log = structlog.get_logger("bot.cogs.threads")

QUEUED = "⏳"
CANNOT_POST = "I am missing **Send Messages in Threads**"
HINTS_KEPT = 10_000
QUEUE_FULL = (
    f"⏳ You already have {FOLLOW_UPS_WAITING} follow-ups waiting here; I'll answer those first. "
    "Ask this again once they are answered."
)
"""(thread, user) pairs remembered as already told how to ask; the oldest are forgotten first."""
HOW_TO_ASK = (
    "-# I only answer the person who started this research here. To ask me something, mention me "
    "or reply to one of my messages."
)


class ThreadLife:
    """The runner's :class:`~bot.runner.TurnHooks`: the header's state and ⏳ reactions."""

    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot
        self._waited: set[int] = set()
        """Turns (by ``id``) whose header says they wait for a slot, until they start."""
        self.closed_by_member: OrderedDict[int, None] = OrderedDict()
        """Threads whose run their archiving or locking stopped: the header said "running" until reopened."""

    async def _show(self, req: TurnRequest, state: HeaderState, at: float | None = None) -> None:
        session = await self.bot.services.sessions.get(req.session.id)
        channel = req.channel
        if session is not None and channel is not None:
            runner = self.bot.runner
            window = runner.write_budget(session.id)  # the thread's one window, shared with its turns
            await show_state(
                self.bot.services, session, channel, state, budget=runner.rest_budget, window=window, at=at
            )

    async def _last_state(self, req: TurnRequest) -> tuple[HeaderState, float | None]:
        """The state (and its time) of the session's last turn that ran: a refused turn ran nothing."""
        last = await self.bot.services.sessions.latest_turn(req.session.id)
        if last is None or last.finished_at is None:
            return "stopped", None
        state: HeaderState = (
            LIMIT_STATES.get(last.status, "done")
            if last.status in ("completed", "max_iterations", "budget", "done")
            else "failed"
            if last.status in ("error", "failed")
            else "stopped"
        )
        return state, last.finished_at.timestamp()

    async def show_last(self, req: TurnRequest) -> None:
        """The header as the session's last turn that ran ended."""
        await self._show(req, *await self._last_state(req))

    async def waiting(self, req: TurnRequest) -> None:
        self._waited.add(id(req))
        await self._show(req, "queued")

    async def started(self, req: TurnRequest) -> None:
        # Only a queued one has ⏳; a new session's request is stored too, from its header on (no ⏳).
        queued = req.message_id is not None and req.queued_id is not None and not req.header_written
        if queued and req.channel is not None and self.bot.user is not None:
            await self.bot.runner.rest_budget.acquire(req.channel.id)
            with contextlib.suppress(discord.HTTPException):
                await req.channel.get_partial_message(req.message_id).remove_reaction(  # type: ignore[attr-defined]
                    QUEUED, self.bot.user
                )
        if req.pressed is not None:  # its Retry (or Re-run) button, pressed: shown spent
            await spend(self.bot.runner, req.session.id, req.pressed)
        waited = id(req) in self._waited
        self._waited.discard(id(req))
        if waited or not req.header_written:  # a fresh header already shows "running" and Stop
            await self._show(req, "running")

    async def ended(self, req: TurnRequest, status: str) -> None:
        if status == "closed":  # the thread is deleted or archived: an edit would fail or reopen it
            if req.channel is not None and req.channel.id in self.closed_by_member:
                # Stored (bot.resume keeps it too): a restart before the reopening left "running" for good.
                with contextlib.suppress(Exception):
                    await self.bot.services.sessions.set_status(req.session.id, "stopped")
            return
        if status == "refused":
            await self.show_last(req)
            if req.pressed is not None:  # a limit refused its Retry: pressed again once it resets
                await spend(self.bot.runner, req.session.id, req.pressed, disabled=False)
            return
        state: HeaderState = status if status in ("done", "stopped", "failed") else "stopped"  # type: ignore[assignment]
        if state == "done":  # or a limit's stop, which the session counts as done (see LIMIT_STATES)
            with contextlib.suppress(Exception):  # an outage: "done" still
                last = await self.bot.services.sessions.latest_turn(req.session.id)
                state = LIMIT_STATES.get(last.status, "done") if last is not None else state
        await self._show(req, state)
        thread = req.channel
        # The turn stopped (bot.turn): the gateway said the permission went, or Discord refused a send.
        if isinstance(thread, discord.Thread) and (req.post_refused or not can_post(thread)):
            with contextlib.suppress(discord.HTTPException):
                member = self.bot.get_user(req.requester_id) or await self.bot.fetch_user(req.requester_id)
                ran = (
                    "it stopped at its next step, charged only for what it had done."
                    if state == "stopped"
                    else "it ended, but what it wrote could not be shown there."  # the answer refused
                )
                text = (
                    f"I can no longer post in {thread.mention} ({CANNOT_POST} there): your research in {ran}"
                )
                await tell_in_dm(member, thread, text, self.bot.dm_limit)


class ThreadsCog(commands.Cog):
    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot
        self._told: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._where = DmLimit(TOLD_EVERY)  # mentions in a thread that is no session: told once a minute
        self._life = ThreadLife(bot)
        self._stopped = self._life.closed_by_member
        self._full: OrderedDict[tuple[int, int], int] = OrderedDict()
        """(thread, member) told that their follow-ups wait in full (see FOLLOW_UPS_WAITING): the id of
        the message that was told."""

    async def cog_load(self) -> None:
        self.bot.runner.hooks = self._life

    # --- follow-ups ---------------------------------------------------------------------------------
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        with self.bot.control.taking(message.id):
            await self._follow_up(message)

    async def _follow_up(self, message: discord.Message) -> None:
        bot = self.bot
        if message.author.bot or not isinstance(message.channel, discord.Thread):
            return
        if message.is_system():  # a rename's notice carries the new name as its text: no question
            return
        if (starting := bot.control.starting.get(message.channel.id)) is not None:
            await starting.wait()  # the thread was just opened: its session is being recorded
        session = await bot.services.sessions.by_thread(message.channel.id)
        if session is None or session.never_started:
            await self._not_here(message, never=session is not None)
            return
        private = message.channel.type == discord.ChannelType.private_thread
        asked = mentions_bot(bot, message) or replies_to_bot(bot, message)
        if not (private or message.author.id == session.user_id or asked):
            await self._tell_how_to_ask(message, session.id)
            return
        me = message.guild.me if message.guild else None
        if me is not None and not message.channel.permissions_for(me).send_messages_in_threads:
            await bot.runner.rest_budget.acquire(
                message.channel.id
            )  # nothing could be shown: run (and charge) nothing
            await tell(message, f"I can't answer here: {CANNOT_POST} in this thread.", bot.dm_limit)
            return
        text = strip_bot_mentions(bot, message)
        if not text and message.attachments:
            text = files_only(message.attachments)
        if not text:
            return
        member = message.author
        roles = roles_of(member, message.guild.id if message.guild else None)
        state = await bot.runner.submit(
            TurnRequest(
                session,
                text,
                member.id,
                member.display_name,
                roles,
                message.channel,
                message_id=message.id,
                attachments=incoming(message.attachments),
            )
        )
        key = (message.channel.id, member.id)
        if state == "full":  # told once, until one of theirs is queued again
            if key not in self._full:
                self._full[key] = message.id
                while len(self._full) > HINTS_KEPT:
                    self._full.popitem(last=False)
                await bot.runner.write_budget(session.id).acquire(bot.runner.rest_budget)
                with contextlib.suppress(discord.HTTPException):
                    await message.reply(QUEUE_FULL, allowed_mentions=NO_MENTIONS, silent=True)
            return
        # Only a follow-up sent after the one told resets it: under load the 5th of a flood was stored
        # (queued) after the 6th was refused, and the 7th was told again.
        if self._full.get(key, 0) < message.id:
            self._full.pop(key, None)
        if state == "queued":
            # In the thread's lane, as its streamer's writes: a lane per message let a member's flood of
            # follow-ups go ahead of every other thread's writes in the round-robin REST budget.
            await bot.runner.rest_budget.acquire(message.channel.id)
            try:
                await message.add_reaction(QUEUED)
            except discord.NotFound:  # deleted already: withdrawn once this ends (on_raw_message_delete)
                return
            except discord.HTTPException:
                await bot.runner.write_budget(session.id).acquire(bot.runner.rest_budget)
                await message.reply(
                    "Queued: I'll answer this once the current turn has finished.",
                    allowed_mentions=NO_MENTIONS,
                    silent=True,
                )
                return
            if not bot.runner.queued(message.id) and bot.user is not None:
                # Its turn started while the mark was on its way (the REST budget can wait seconds):
                # the turn's start found no mark to take off, and ⏳ stayed on an answered message.
                with contextlib.suppress(discord.HTTPException):
                    await message.remove_reaction(QUEUED, bot.user)

    async def _not_here(self, message: discord.Message, *, never: bool = False) -> None:
        """A mention in a thread that is no session: Discord opens no thread inside a thread, so say
        where to ask instead of staying silent (where the server allows the bot). ``never``: the thread
        a session's refused header left (the bot could not delete it), where its requester's message
        ran a turn with no header, Stop or state; it is answered as no session's thread."""
        thread = message.channel
        if message.guild is None or not mentions_bot(self.bot, message):
            return
        gs = await self.bot.services.guild_settings.get(message.guild.id)
        if not gs.channel_allowed(thread.id, getattr(thread, "parent_id", None)):
            return
        if not self._where.allow(message.author.id, thread.id):
            return
        await self.bot.runner.rest_budget.acquire(thread.id)
        with contextlib.suppress(discord.HTTPException):
            await message.reply(
                ("Nothing runs in this thread: Discord refused my first message here. " if never else "")
                + "I can't start research inside a thread. Use /research (or mention me) in a text channel, "
                "and I'll open a thread for it.",
                allowed_mentions=NO_MENTIONS,
                silent=True,
            )

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """Edit to re-run (issue 17.3): raw, since the edited message may not be cached."""
        message = payload.message
        if message.author.bot or message.guild is None:
            return
        await self.bot.control.edited(message, strip_bot_mentions(self.bot, message))

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """A queued follow-up whose message is deleted is withdrawn (raw: it may not be cached)."""
        await self.bot.control.taken(payload.message_id)  # deleted at once: it is being queued
        await self.bot.runner.withdrawn(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        """A moderator's purge comes as one event: its queued follow-ups are withdrawn as one by one
        (they were answered, and charged, though their messages were gone)."""
        for message_id in payload.message_ids:
            await self.bot.runner.withdrawn(message_id)

    async def _tell_how_to_ask(self, message: discord.Message, session_id: str) -> None:
        key = (message.channel.id, message.author.id)
        if key in self._told:
            return
        self._told[key] = None
        while len(self._told) > HINTS_KEPT:
            self._told.popitem(last=False)
        # A write in the thread like the run's own: outside its window, a few members chatting during a
        # run made 9 writes in 5 s.
        runner = self.bot.runner
        await runner.write_budget(session_id).acquire(runner.rest_budget)
        with contextlib.suppress(discord.HTTPException):
            await message.reply(HOW_TO_ASK, allowed_mentions=NO_MENTIONS, silent=True)

    # --- how threads end ----------------------------------------------------------------------------
    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        self.bot.runner.close_thread(payload.thread_id, "the thread was deleted")
        await self._forget_private_notes(payload.guild_id, payload.thread_id)

    async def _forget_private_notes(self, guild_id: int | None, thread_id: int) -> None:
        """A deleted thread's private notes go with it: only inside that thread could they be recalled,
        published or forgotten, so nobody could reach them again, and retention evicts a private scope
        only when its thread saves a note: they stayed on disk, and in every backup, for good."""
        sv = self.bot.services
        session = await sv.sessions.by_thread(thread_id) if sv.memory is not None and guild_id else None
        if sv.memory is None or session is None:
            return
        try:
            gone = await sv.memory.clear(private_namespace(str(guild_id), session.id))
        except MemoryStoreError as e:
            log.warning("private_notes_not_forgotten", session_id=session.id, error=str(e))
            return
        if gone:
            log.info("private_notes_forgotten", session_id=session.id, rows=gone)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """The bot was removed from the server (kicked, banned, the server deleted; not an outage, which
        discord.py reports as unavailable): its runs there stop as if their threads were deleted. A model
        call under way went on, holding a run slot and billed, and a queued follow-up was answered into
        a thread the bot could no longer see, until some write happened to be refused."""
        for thread in guild.threads:
            self.bot.runner.close_thread(thread.id, "the bot was removed from the server")

    @commands.Cog.listener()
    async def on_thread_remove(self, thread: discord.Thread) -> None:
        """A moderator removed the bot from the thread: its run stops as if the thread were deleted. In
        a private thread the bot can no longer see, the run went on, billed, until a write was refused;
        with Manage Threads its next write would have put the bot back where it was removed from."""
        self.bot.runner.close_thread(thread.id, "the bot was removed from the thread")

    @commands.Cog.listener()
    async def on_raw_thread_update(self, payload: discord.RawThreadUpdateEvent) -> None:
        meta, tid = payload.data.get("thread_metadata") or {}, payload.thread_id
        closed = "the thread was locked" if meta.get("locked") else "the thread was archived"
        if meta.get("locked") or meta.get("archived"):
            if self.bot.runner.close_thread(tid, closed):
                self._stopped[tid] = None  # its header could not say so
                while len(self._stopped) > HINTS_KEPT:
                    self._stopped.popitem(last=False)
        else:  # reopened or unlocked, or another change (a rename): the store says which (one read)
            await self._reopened(tid, known=self._stopped.pop(tid, False) is None)

    async def _reopened(self, thread_id: int, *, known: bool) -> None:
        """An archived thread reopened (a member posted there), or a locked one unlocked: the run its
        closing stopped could not say so (an archived thread's messages cannot be edited), so its header
        still read "⏳ running" with a Stop button. It shows how the session's last turn ended.
        ``known``: this process saw the closing; else the session's stored status says so (``stopped``:
        :meth:`ThreadLife.ended`, or ``bot.resume`` for a thread closed while the bot was down)."""
        bot = self.bot
        session = await bot.services.sessions.by_thread(thread_id)
        if session is None or not (known or session.status == "stopped"):
            return
        thread = bot.get_channel(thread_id)
        if thread is None or bot.runner.active(session.id):
            return  # a turn starting there (the requester's reply) shows its own state
        req = TurnRequest(session, session.task, session.user_id, "", (), thread)
        await self._life.show_last(req)
        if session.status == "stopped" and not bot.runner.active(session.id):  # else the turn set it
            await bot.services.sessions.set_status(session.id, "idle")

    @app_commands.command(name="stop", description="Stop the agent running in this thread.")
    @app_commands.guild_only()
    async def stop(self, interaction: discord.Interaction) -> None:
        channel = interaction.channel
        session = (
            await self.bot.services.sessions.by_thread(channel.id)
            if isinstance(channel, discord.Thread)
            else None
        )
        if session is None:
            raise Refusal("Use /stop inside an agent thread.")
        await self.bot.control.stop(interaction, session.id)


async def setup(bot: AgentBot) -> None:
    await bot.add_cog(ThreadsCog(bot))
