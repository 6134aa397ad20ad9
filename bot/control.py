"""What cogs and buttons ask of sessions: start one (the one way, for /research and mentions), stop, retry.

Decisions: a new session is routed before its header is posted, so the header names the model that will
run (an auto-routed session's tier is the classifier's pick) and the first turn runs that model; the header
is a write in the thread's budget like any other. Stop is for the requester, the member who asked the running
turn (it is charged to them), or a member with Manage Threads, Retry for the member who asked the failed turn (charged to them), checked here, not only by Discord.

The header is rendered by :mod:`bot.thread_header` from the session record, also when its state changes
later, so the record keeps the tier and model as the header shows them ("medium (auto) (why)" for a
classified session: the stored tier then names no requested tier and each follow-up is routed afresh).
A thread whose header cannot be posted is deleted (there is no session to show), and the requester is
added to the thread, since Discord notifies only a thread's members (issue 20).

Edit to re-run (issue 17.3): editing the message that asked for a turn restarts it if it still runs or
waits (:meth:`SessionRunner.edited`); a finished turn gets a "Re-run with the edit" button. Only the
message's author may press it, and only for the session's latest turn: a later turn was answered on top
of the earlier answer, so replacing an older one would leave a conversation nobody had. A re-run is an
ordinary turn (same limits and charges) that supersedes the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import discord
import structlog

from agent.attachments import IncomingFile
from agent.tools.safe_names import safe_name
from bot.assembly import charge_judge, classified, route, step_cost, step_need, who_runs
from bot.channels import channel_refusal
from bot.notes import untrusted
from bot.rerun import EditRerun, files_of
from bot.run_policy import can_post
from bot.runner import SessionRunner, TurnRequest
from bot.store import QuotaBudget, QuotaDecision, SessionRecord, new_session_id
from bot.thread_header import post_header
from bot.views import spent_view

if TYPE_CHECKING:
    from bot.services import Services

log = structlog.get_logger("bot.control")


SEEN_KEPT = 10_000


class HeaderRefused(Exception):
    """Discord refused a new session's header, so nothing runs; ``removed``: the empty thread was deleted
    (it stays where the bot lacks Manage Threads, and saying "removed" sent nobody to clear it)."""

    def __init__(self, *, removed: bool) -> None:
        super().__init__("the session's header was refused")
        self.removed = removed

    def said(self, need: str) -> str:
        """What the member reads: ``need`` names the permission and where."""
        if self.removed:
            return f"Discord refused my first message in the thread I opened, so I removed it: I need {need}."
        return (
            f"Discord refused my first message in the thread I opened, and I could not remove that thread "
            f"(deleting it needs **Manage Threads**): a moderator can delete it. I need {need}."
        )


async def spend(
    runner: SessionRunner, session_id: str, message: discord.Message | None, *, disabled: bool = True
) -> None:
    """Show ``message``'s buttons disabled (or enabled again): a write in the thread's window. A Retry
    left live after the turn it started answered, pressed again, got a private "nothing to retry"."""
    if message is None or not message.components:
        return
    await runner.write_budget(session_id).acquire(runner.rest_budget)
    with contextlib.suppress(discord.HTTPException):  # the thread closed meanwhile: it stays
        await message.edit(view=spent_view(message, disabled=disabled))


def roles_of(member: Any, guild_id: int | None) -> tuple[int, ...]:
    return tuple(r.id for r in getattr(member, "roles", ()) if r.id != guild_id)


class SessionControl(EditRerun):
    def __init__(self, services: Services, runner: SessionRunner) -> None:
        self.sv = services
        self.runner = runner
        self._offers: OrderedDict[int, discord.Message] = OrderedDict()
        """Each turn's re-run offer (by turn id), edited by later edits of its message."""
        self._offering: set[int] = set()
        """Turns whose offer is being written: an edit meanwhile is shown by that write."""
        self.starting: dict[int, asyncio.Event] = {}
        """Threads just opened whose session is not recorded yet (routing can take a model call): a
        message posted there meanwhile waits for it instead of being taken for one in no session."""
        self._taking: dict[int, set[asyncio.Event]] = {}
        """Members' messages being taken (a follow-up queued, a mention opening its session): an edit
        arriving meanwhile waits for it (it found nothing to edit, and the typo was answered)."""
        self.born = discord.utils.utcnow()
        """When this process began: the bot's messages since are its own (:mod:`bot.missed`)."""
        self._seen: OrderedDict[int, None] = OrderedDict()
        """Messages this process's cogs received (the latest :data:`SEEN_KEPT`): a message read back
        at start-up (:mod:`bot.missed`) that is among them was taken by a cog, not missed."""

    @contextlib.contextmanager
    def taking(self, message_id: int) -> Iterator[None]:
        """Around a cog's handling of a new message, entered before its first await (each cog's
        listener for it is one taker)."""
        done = asyncio.Event()
        self._taking.setdefault(message_id, set()).add(done)
        self._seen[message_id] = None
        while len(self._seen) > SEEN_KEPT:
            self._seen.popitem(last=False)
        try:
            yield
        finally:
            done.set()
            takers = self._taking[message_id]
            takers.discard(done)
            if not takers:
                del self._taking[message_id]

    def seen(self, message_id: int) -> bool:
        """Whether a cog of this process received the message (see ``_seen``)."""
        return message_id in self._seen

    async def taken(self, message_id: int) -> None:
        """Until the cogs have taken the message (an edit or a deletion of it acts on what they made)."""
        for taking in [*self._taking.get(message_id, ())]:
            await taking.wait()

    async def may_start(
        self, guild_id: int | None, member: Any, task: str, session_id: str | None = None
    ) -> QuotaDecision:
        """Whether the member's limits allow a new session that can take at least one step. With
        ``session_id``, the new session's concurrency slot is taken with the check, atomically (two
        /research at the same instant both passed a read-only check, and the second was refused inside
        its own thread): :meth:`start_session` with that id keeps it, and gives it back if it fails."""
        need, roles = step_need(self.sv, task, []), roles_of(member, guild_id)
        usd = step_cost(self.sv, need)
        if session_id is None:
            return await self.sv.quotas.check(guild_id, member.id, roles, need_tokens=need, need_usd=usd)
        # No read-only check first: begin_session makes the same one inside its transaction (a read less).
        return await self.sv.quotas.begin_session(
            guild_id,
            member.id,
            roles,
            session_id,
            count_request=False,
            hold_request=True,
            need_tokens=need,
            need_usd=usd,
        )

    async def start_session(
        self,
        thread: discord.Thread,
        member: Any,
        task: str,
        tier: str | None,
        attachments: tuple[IncomingFile, ...] = (),
        *,
        message_id: int | None = None,
        session_id: str | None = None,
    ) -> SessionRecord | None:
        """Record the session, route it, post its header in ``thread``, add the requester and start the
        first turn. :class:`HeaderRefused` if Discord refused the header: the session is marked failed and
        the thread deleted where the bot may. ``session_id``: the id :meth:`may_start` took a slot for
        (released if this fails)."""
        ready = self.starting[thread.id] = asyncio.Event()  # before any await: see ``starting``
        sid = session_id or new_session_id()
        try:
            started = await self._start_session(thread, member, task, tier, attachments, message_id, sid)
        except Exception:
            await self.sv.quotas.end_session(sid)
            raise
        finally:
            del self.starting[thread.id]
            ready.set()
        if isinstance(started, bool):  # no turn will release the slot ``may_start`` took
            await self.sv.quotas.end_session(sid)
            raise HeaderRefused(removed=started)
        return started

    async def _start_session(
        self,
        thread: discord.Thread,
        member: Any,
        task: str,
        tier: str | None,
        attachments: tuple[IncomingFile, ...],
        message_id: int | None,
        session_id: str,
    ) -> SessionRecord | bool:
        """The session, or whether the thread was removed after Discord refused its header."""
        sv = self.sv
        guild_id = thread.guild.id if thread.guild else None
        gs = await sv.guild_settings.get(guild_id) if guild_id else None
        if tier is None:
            tier = gs.default_tier if gs is not None and "default_tier" in gs.overrides else "auto"
        parent = thread.parent_id or thread.id
        rec = SessionRecord(
            id=session_id,
            guild_id=guild_id,
            channel_id=parent,
            thread_id=thread.id,
            user_id=member.id,
            task=task,
            tier=tier,
            model="",
        )
        try:
            model: Any = await route(sv, rec, task, gs)
        except Exception:  # the turn routes again and reports what failed, with a Retry button
            log.warning("route_failed", session_id=rec.id, exc_info=True)
            model = None
        how = model.route if model is not None else None
        if how is None:
            rec.model = "chosen when the run starts"
        else:
            why = f" ({'; '.join(how.reasons[:2])})" if how.reasons else ""
            rec.tier = f"{how.tier} (auto){why}" if classified(how) else how.tier
            rec.model = who_runs(how)
        rest = self.runner.rest_budget
        name = getattr(member, "display_name", str(member))
        roles = roles_of(member, guild_id)
        try:
            session = await sv.sessions.create(rec)
            # The session's request is stored with it, as one that waits is: a kill between the header
            # and the turn's start left "running" in the thread for good and the research never ran. Its
            # turn takes it out of the store as it starts; a restart before then runs it (bot.resume).
            queued_id = await sv.sessions.queue_turn(session.id, task, member.id, name, roles, message_id)
        except Exception:  # e.g. the database went away: no empty thread stays behind (the caller says why)
            await self._drop_thread(thread, "could not record the session of the thread it opened")
            raise
        judged = None
        # The judge's call was made: charged now, whatever becomes of the session. After the session is
        # stored: a store that is down fails that at once, where a charge waits for it to come back.
        if how is not None:
            budget = QuotaBudget(sv.quotas, guild_id, member.id, roles_of(member, guild_id), session_id)
            judged = await charge_judge(how, budget)
        try:
            await post_header(sv, thread, session, budget=rest, window=self.runner.write_budget(session.id))
        except discord.HTTPException:
            await sv.sessions.set_status(session.id, "failed")
            await sv.sessions.drop_queued(queued_id)
            return await self._drop_thread(thread, "could not post in the thread it opened")
        # Discord notifies only members of a thread: the requester joins so the answer reaches them.
        await rest.acquire()
        try:
            await thread.add_user(member)
        except discord.HTTPException:
            pass
        await self.runner.submit(
            TurnRequest(
                session,
                task,
                member.id,
                name,
                roles,
                thread,
                model=model,
                header_written=True,
                message_id=message_id,
                queued_id=queued_id,
                attachments=attachments,
                judged=judged,
            )
        )
        return session

    async def _drop_thread(self, thread: discord.Thread, why: str) -> bool:
        """Whether the thread is gone: deleting one takes Manage Threads, which README's invite lacks."""
        await self.runner.rest_budget.acquire()
        try:
            await thread.delete(reason=f"agentbot: {why}")
        except discord.NotFound:  # deleted meanwhile (a moderator): gone all the same
            return True
        except discord.HTTPException:
            return False
        return True

    async def _allowed(self, interaction: discord.Interaction, session_id: str, what: str) -> Any:
        """The session, if the caller may act on it; otherwise the refusal is sent and ``None`` returned."""
        session = await self.sv.sessions.get(session_id)
        if session is None:
            await interaction.response.send_message("This session no longer exists.", ephemeral=True)
            return None
        perms, asker = interaction.permissions, self.runner.asked_by(session_id)
        if interaction.user.id not in (session.user_id, asker) and not (
            perms.manage_threads or perms.administrator
        ):
            await interaction.response.send_message(
                f"Only the person who started this research, the member who asked the running turn, or "
                f"someone with Manage Threads, can {what} it.",
                ephemeral=True,
            )
            return None
        return session

    async def stop(self, interaction: discord.Interaction, session_id: str) -> None:
        if await self._allowed(interaction, session_id, "stop") is None:
            return
        if not self.runner.stoppable(session_id):
            await interaction.response.send_message("Nothing is running in this session.", ephemeral=True)
            return
        if self.runner.stopping(session_id):  # a second press: the first one's "Stopping…" said it
            await interaction.response.send_message(
                "Already stopping: this turn is being stopped.", ephemeral=True
            )
            return
        # The nickname goes into the stop note (the history the model reads) and the footer: shown as
        # written, never as a masked link, a mention or a right-to-left override of the line.
        name = getattr(interaction.user, "display_name", str(interaction.user))
        say = interaction.response.send_message
        # "Stopping…" only once the stop is saved (a kill -9 right after it must not run the turn on).
        if not await self.runner.stop(
            session_id,
            by=untrusted(safe_name(name, "a member")),
            said=lambda: say("Stopping…", ephemeral=True),
        ):  # it ended meanwhile, or has ended and is posting its answer (its turn task still runs)
            done = self.runner.is_running(session_id)
            await say(
                "This turn has already finished: its answer is being posted."
                if done
                else "Nothing is running in this session.",
                ephemeral=True,
            )

    async def retry(self, interaction: discord.Interaction, session_id: str) -> None:
        """Run the session's failed last turn again. Only the member who asked that turn may (README:
        Retry button): the retry is their request again, charged to them under their limits, so
        neither the session's requester nor a moderator spends it for them."""
        session = await self.sv.sessions.get(session_id)
        latest = await self.sv.sessions.latest_turn(session_id)
        say = interaction.response.send_message
        if session is None:
            await say("This session no longer exists.", ephemeral=True)
            return
        if latest is not None and latest.requester_id != interaction.user.id:
            await say(
                "Only the member who asked this turn can retry it (a retry is charged to them). "
                "You can ask in a new message instead.",
                ephemeral=True,
            )
            return
        if latest is None:
            await say("There is nothing to retry here.", ephemeral=True)
            return
        if self.runner.active(session_id):  # a double click: the first press's turn is already queued
            await say("A turn is already running here.", ephemeral=True)
            return
        if latest.status != "error":  # an old button, pressed after the retry (or a later turn) answered
            await say("The last turn did not fail, so there is nothing to retry.", ephemeral=True)
            return
        if refused := await self._channel_refusal(session, interaction.channel):
            await say(refused, ephemeral=True)
            return
        # The same request again, tied to its message: an edit of it then re-runs the retry (the latest
        # turn); untied, the edit's re-run button refused ("only the latest turn").
        # Submitted before anything else is awaited, so a second press sees this turn as active.
        # Its files too: the failed turn's messages, which told the model of them, leave the history.
        await self._pressed(
            interaction,
            session,
            latest.prompt,
            message_id=latest.message_id,
            attachments=files_of(latest),
            pressed=interaction.message,
        )
        await say("Retrying…", ephemeral=True)

    async def _channel_refusal(self, session: SessionRecord, where: Any = None) -> str | None:
        """/research's refusal where ``/config channels`` no longer lists the session's channel: a
        Retry or Re-run starts work as a new request does (follow-ups in the thread still go on).
        ``where``: the thread a button was pressed in; one the bot may no longer post in is refused as
        a follow-up there is (a Retry there ran its first step, charged, with nothing shown)."""
        if where is not None and not can_post(where):
            return f"I can't post in {where.mention}: I am missing **Send Messages in Threads** there."
        if session.guild_id is None:
            return None
        gs = await self.sv.guild_settings.get(session.guild_id)
        return channel_refusal(gs, session.channel_id, guild=getattr(where, "guild", None))

    async def _pressed(
        self, interaction: discord.Interaction, session: Any, prompt: str, **more: Any
    ) -> None:
        """A turn a button asked for: the member who pressed it is its requester."""
        member = interaction.user
        name = getattr(member, "display_name", "")
        roles = roles_of(member, interaction.guild_id)
        await self.runner.submit(
            TurnRequest(session, prompt, member.id, name, roles, interaction.channel, **more)
        )  # type: ignore[arg-type]
