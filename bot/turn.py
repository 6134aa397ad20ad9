"""One turn of a session: the agent's run, rendered into the thread, and what is kept of it.

A stopped or timed-out turn keeps what it completed: whole steps go to the session's history, the partial
answer is posted and marked, quota reservations are settled, and nothing half-written is stored. Each
finished step is checkpointed with its usage, cost and duration, so a turn resumed after a crash goes on
counting from there (its footer and ``/usage`` agree).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
import structlog

from agent.config import ConfigError
from agent.events import FinalEvent, RunResult, StepStarted, ToolCallEvent, ToolResultEvent, Usage
from agent.messages import Message
from agent.models.router import RoutedModel
from bot.assembly import (
    WorkspaceUnavailable,
    assemble,
    charge_cut_judge,
    charge_judge,
    classified,
    cooling_for,
    route,
    step_cost,
    step_need,
)
from bot.attach import file_contents, file_stamps, new_paths, sees_images, take, with_note
from bot.checkpoint import checkpoint_meta, closing_writes, convert, state_from, whole_steps
from bot.discord_sink import NO_MENTIONS, DiscordSink
from bot.notes import (
    AttachmentsRefused,
    FilesWritten,
    Paused,
    Refused,
    Routed,
    SaveFailed,
    SaveWaiting,
    Superseded,
    TurnFailed,
    route_shown,
)
from bot.pacing import RestBudget, typing_indicator
from bot.progress import ProgressRenderer
from bot.run_policy import POST_REFUSED, can_attach, can_post, read_outside, remember_answer, turn_services
from bot.store import QuotaBudget, StoreError, StoreUnavailable, when_reachable
from bot.streamer import ThreadStreamer, WriteBudget
from bot.turn_end import FINAL, SESSION_STATUS, close_ended, ended, final_of
from bot.turn_request import TurnRequest, error_id
from bot.views import retry_offer

if TYPE_CHECKING:
    from bot.services import Services

log = structlog.get_logger("bot.turn")

SAVE_WAITS = 300.0  # s a turn's closing writes wait for PostgreSQL, as queued charges do (bot.store.ledger)


class ShuttingDown(Exception):
    """The bot is shutting down: this turn stops at a step boundary and resumes at the next start."""


class Turn:
    def __init__(
        self,
        sv: Services,
        req: TurnRequest,
        budget: WriteBudget,
        rest: RestBudget | None = None,
        on_gone: Callable[[str], Any] | None = None,
    ) -> None:
        """``budget``: the thread's 5-per-5 s window (shared with the header and every other turn);
        ``rest``: the bot-wide REST budget; ``on_gone``: called when a write finds the thread gone."""
        self.sv, self.req, self.budget, self.rest = sv, req, budget, rest
        assert req.channel is not None
        self.channel = req.channel
        self.streamer = ThreadStreamer(
            DiscordSink(req.channel, rest),
            writes=budget.writes,
            name=req.session.id,
            budget=budget,
            on_gone=on_gone,
        )
        self.renderer = ProgressRenderer(
            self.streamer, notify=req.requester_id, attach=can_attach(req.channel)
        )
        self.in_run = False
        """Between the run's start and its settling: a closed thread may cancel it (not while it saves)."""
        self.status: str | None = None
        """How the turn ended for the session (done, stopped, failed), once it has."""
        cp = req.resume
        self.state = state_from(req.prompt, cp)
        self.resume_msgs = [Message.from_dict(d) for d in (cp or {}).get("messages") or ()] or None
        self.turn_id: int | None = None
        self.error: Exception | None = None  # what ended the turn as failed, if anything did
        self.model: RoutedModel | None = None
        self._converted: list[tuple[Message, dict[str, Any]]] = []
        self._stored = self._boundary = 0  # messages saved; steps done as the current one started
        """How many of ``_converted`` this turn's checkpoints hold: a step saves only the messages after."""
        self.services: dict[str, Any] = {}
        self._files: dict[str, Any] = {}
        self._final: dict[str, Any] = {}
        """The answer, in every checkpoint from just before it is shown (``bot.turn_end``)."""
        self._saved: tuple[int, int, int] | None = None
        """What the last checkpoint held (steps, messages, model calls): an unchanged state is not saved
        again (each of a step's tool results used to save the same state once more)."""

    async def run(
        self,
        stopped_by: Callable[[], str | None],
        closing: Callable[[], bool],
        closed: Callable[[], str | None] = lambda: None,
    ) -> RunResult | None:
        """``closed()``: why the thread can take nothing more (deleted, archived, locked), once it is so;
        the turn then stops as if stopped by that reason (``stopped_by`` returns it too)."""
        sv, req, s, state = self.sv, self.req, self.req.session, self.state
        for note in req.notes:
            self.renderer.feed(note)
        if ended(req.resume):
            return await close_ended(self)
        try:
            history_dicts = await sv.sessions.history(s.id, without_turn=req.supersedes)
            need = step_need(sv, req.prompt, history_dicts)
            began = await sv.quotas.begin_session(
                s.guild_id,
                req.requester_id,
                req.role_ids,
                s.id,
                count_request=req.count_request,
                need_tokens=need,
                need_usd=step_cost(sv, need),
            )
        except (StoreError, sqlite3.Error) as e:  # a full disk, PostgreSQL down: nothing ran; say so
            eid = error_id()
            log.error("turn_not_started", session_id=s.id, error_id=eid, error=f"{type(e).__name__}: {e}")
            self.renderer.feed(TurnFailed.of(e, eid))  # it used to end in silence (a runner traceback)
            await self.streamer.close(within=60)
            self.status = (
                "refused"  # the header goes back to the last turn's state; a queued one stays queued
            )
            return None
        except BaseException:  # the streamer's writer task must not outlive the turn
            await self.streamer.close(within=10)
            raise
        if not began.allowed:
            await sv.quotas.end_session(s.id)  # a new session's slot, taken when it started
            if req.queued_id is not None:
                await sv.sessions.drop_queued(req.queued_id)
            asker = req.requester_id if req.requester_id != s.user_id else None
            self.renderer.feed(Refused(began.message, asker))
            await self.streamer.close(within=60)
            self.status = "refused"  # nothing ran: the thread's header goes back to the last turn's state
            return None
        started_wall = time.time()
        result: RunResult | None = None
        status = "done"
        try:
            gs = await sv.guild_settings.get(s.guild_id) if s.guild_id else None
            self.turn_id = await sv.sessions.start_turn(
                s.id,
                req.prompt,
                req.requester_id,
                queued_id=req.queued_id,
                message_id=req.message_id,
                supersedes=req.supersedes,
            )
            if req.attachments and not self.resume_msgs:  # a kill before step 1 re-runs it with them
                files = [[f.filename, f.url, f.size, f.content_type] for f in req.attachments]
                self._files = {"attachments": files}  # kept in every checkpoint: a Retry sends them again
                await sv.sessions.checkpoint(self.turn_id, self._files)
            if req.supersedes is not None:
                self.renderer.feed(Superseded(req.prompt))
            self.in_run = True
            if closed():  # the thread closed while this turn was getting ready: run nothing
                raise asyncio.CancelledError
            await sv.sessions.set_status(s.id, "running")
            budget = QuotaBudget(sv.quotas, s.guild_id, req.requester_id, req.role_ids, s.id)
            try:
                model = self.model = req.model or await route(sv, s, req.prompt, gs)
            except asyncio.CancelledError:  # stopped while a judge routed it: that call was billed
                if req.model is None and (cut := await charge_cut_judge(sv, s, req.prompt, budget)):
                    state.add_usage(*cut)
                raise
            how = model.route
            # A classified follow-up: say where it went. Not on a resume: its header (a first turn) or
            # the note before the restart (a follow-up) said it already.
            if req.model is None and classified(how) and not any(route_shown(n) for n in req.notes):
                self.renderer.feed(Routed(how.tier, how.model, how.writer, how.reasons))
            # Routed when the session started: its judge call was charged then (an edit's re-run of this
            # request reuses the route, and charged that one call a second time).
            judged = req.judged if req.model is not None else await charge_judge(how, budget)
            req.judged = None  # shown by this turn only
            if judged is not None:
                state.add_usage(judged[0], how.judge_usage or Usage(), judged[1])
            built = await assemble(sv, s, req.prompt, req.requester_id, self.channel, gs, model)
            ctx = built.context
            history = [Message.from_dict(d) for d in history_dicts]
            recalled = ctx.services.get("memory_recalled", ())
            ctx.services.update(turn_services(sv, gs, req, state, history, recalled))  # memory, fetch rules
            self.services = ctx.services  # the auto-store reads its memory policy (bot.run_policy)
            for ev in built.events:
                self.renderer.feed(ev)
            got = None
            if req.attachments and ctx.workspace is not None and not self.resume_msgs:
                vision = sees_images(sv, model.provider, model.name, how.writer)
                readable = "read_file" in built.agent.tools.names()  # /config tools can turn it off
                got = await take(sv, req.attachments, Path(ctx.workspace), vision=vision, readable=readable)
                if got.refused:
                    self.renderer.feed(AttachmentsRefused(tuple(got.refused)))
            before = await asyncio.to_thread(file_stamps, ctx.workspace)
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(typing_indicator(self.channel, self.rest))
                async with asyncio.timeout(sv.bot_settings.turn_timeout):
                    run = built.agent.run(
                        with_note(req.prompt, got),
                        history,
                        context=ctx,
                        budget=budget,
                        extra_system=built.extra_system,
                        state=state,
                        resume=self.resume_msgs,
                        resume_step=int(req.resume.get("step", 0)) if req.resume and self.resume_msgs else 0,
                        images=got.images if got is not None else (),
                    )
                    running = 0  # this step's tool calls still running
                    async with contextlib.aclosing(run) as events:
                        async for ev in events:
                            if isinstance(ev, StepStarted) and ev.step > state.steps:  # a step boundary
                                self._boundary = ev.step - 1
                                if closing():
                                    raise ShuttingDown  # nothing of this step has run yet
                                if self.streamer.refused or not can_post(self.channel):  # nothing shows
                                    self.streamer.refused = POST_REFUSED  # stopped "by" it, below
                                    raise asyncio.CancelledError
                            self.renderer.feed(ev)
                            if isinstance(ev, FinalEvent):
                                result = ev.result
                            elif isinstance(ev, ToolCallEvent):
                                running += 1
                            elif isinstance(ev, ToolResultEvent):
                                running -= 1
                                # The step's model call is saved while other calls still run; after the
                                # last one the whole step follows at once (the next StepStarted, with no
                                # wait between): saving both was half of all checkpoint writes.
                                if running > 0:
                                    await self._checkpoint()
                            elif isinstance(ev, StepStarted):
                                running = 0
                                await self._checkpoint()
            assert result is not None
            status = SESSION_STATUS.get(result.status, "failed")
            files = await asyncio.to_thread(new_paths, ctx.workspace, started_wall, before)
            if status == "done":  # paid for: saved before it shows, so a kill now cannot pay it again
                await self._keep(result, files=files, from_web=read_outside(result, self.services))
            self.renderer.finish(result)
            if files:
                got_files = await asyncio.to_thread(file_contents, ctx.workspace, files)
                self.renderer.feed(FilesWritten(tuple(got_files)))
        except (ShuttingDown, asyncio.CancelledError) as e:
            by = stopped_by() or self.streamer.refused
            if isinstance(e, ShuttingDown) or by is None:
                # Not a user's Stop: a shutdown (or a crash-like cancel). Keep the turn running with its
                # checkpoint; the next start resumes it. History is untouched, so nothing is half-written.
                await self._pause()
                if isinstance(e, asyncio.CancelledError):
                    raise
                return None
            result = self._stopped_by(by)
            mid_call = self.renderer.stopped_mid_call(by)
            await self._keep(result, by=by, mid_call=mid_call)
            self.renderer.finish(result, stopped_by=by, mid_call=mid_call)
            status = "stopped"
        except TimeoutError:
            result = self._stopped(f"Stopped after {sv.bot_settings.turn_timeout:.0f} s (time limit).")
            mid_call = self.renderer.stopped_mid_call("a time limit")
            await self._keep(result, by="a time limit", mid_call=mid_call)
            self.renderer.finish(result, stopped_by="a time limit", mid_call=mid_call)
            status = "stopped"
        except Exception as e:
            eid = error_id()
            self.error = e
            if isinstance(e, StoreUnavailable | ConfigError):  # an outage or the set-up, not a bug: one line
                log.error("turn_failed", session_id=s.id, guild_id=s.guild_id, error_id=eid, error=str(e))
            else:
                log.exception("turn_failed", session_id=s.id, guild_id=s.guild_id, error_id=eid)
            note = TurnFailed.of(e, eid)
            result = state.result("error", note.text, error=type(e).__name__)
            self.renderer.feed(note)
            status = "failed"
        self.in_run = False
        self.status = status
        await self._settle(result, status)
        req.post_refused = self.streamer.refused is not None  # its last writes included
        if result is not None and result.status == "completed":
            await remember_answer(self.sv, self.req, result, self.services)
        elif status == "failed" and self.streamer.gone is None:
            await self._offer_retry()
        return result

    async def _keep(self, result: RunResult, **more: Any) -> None:
        """The turn's end (its answer, or its stop) saved as it will be shown, before it is: a kill
        before the footer cannot run it again, nor show a second footer (``bot.turn_end``)."""
        self._final = {FINAL: final_of(result, error_note=self.renderer.error_note, **more)}
        await self._checkpoint(force=True)

    def _stopped_by(self, by: str) -> RunResult:
        steps = self.state.steps
        return self._stopped(f"Stopped by {by} after {steps} step{'s' if steps != 1 else ''}.")

    def _stopped(self, why: str) -> RunResult:
        partial = self.state.last_text
        return self.state.result(
            "cancelled", why + (f"\n\nPartial answer so far:\n\n{partial}" if partial.strip() else "")
        )

    async def _offer_retry(self) -> None:
        """A message with a button, so not a streamer block; it still waits its turn in the thread's budget."""
        text, view = retry_offer(
            self.req.session.id,
            cooling_for(self.model),
            host_broken=isinstance(self.error, WorkspaceUnavailable),
        )
        await self.budget.acquire(self.rest)
        try:
            await self.channel.send(text, view=view, allowed_mentions=NO_MENTIONS, silent=True)
        except discord.HTTPException:
            log.warning("retry_offer_failed", session_id=self.req.session.id)

    async def _settle(self, result: RunResult | None, status: str) -> None:
        """Persist whole steps, close the turn, release the quota slot, then let the writes finish. With
        PostgreSQL unreachable the first failing write ends the attempt (the thread is told once) and the
        rest, from it, are made once it is back (README: Scaling): nothing is lost, the slot is freed."""
        sv, s = self.sv, self.req.session
        writes = closing_writes(sv.sessions, s.id, self.turn_id, result, status, self._converted)
        waiting = False
        # The turn stays open (resumable, see bot.turn_end) until its answer, or a member's stop, is shown:
        # closed first, a kill before the footer left the header "running" (with Stop) for good.
        if self._final or status == "stopped":
            await self.streamer.flush(within=900)
        try:
            await writes()
        except StoreUnavailable as e:
            waiting = True
            log.error("turn_save_waiting", session_id=s.id, error=str(e))
            if not isinstance(self.error, StoreUnavailable):  # else the turn's own note said it already
                self.renderer.feed(SaveWaiting())
        except Exception as e:  # a locked or full database: say so; the answer above is still shown
            eid = error_id()
            log.error("turn_save_failed", session_id=s.id, error_id=eid, error=f"{type(e).__name__}: {e}")
            self.renderer.feed(SaveFailed(eid))
        finally:
            if not waiting:
                try:
                    await sv.quotas.end_session(s.id)
                except Exception:
                    log.error("quota_release_failed", session_id=s.id, exc_info=True)
            await self.streamer.close(within=900)
        if waiting:
            try:
                await when_reachable(writes, give_up=SAVE_WAITS)
                await when_reachable(lambda: sv.quotas.end_session(s.id), give_up=SAVE_WAITS)
                log.info("turn_saved_after_outage", session_id=s.id)
            except Exception as e:  # as after a crash: the next start finds the turn and closes it
                log.error("turn_save_failed", session_id=s.id, error=f"{type(e).__name__}: {e}")

    async def _pause(self) -> None:
        try:
            await self._checkpoint(force=True)  # its duration too
            whole = whole_steps(self.state, self._boundary)
            self.renderer.feed(Paused(whole, redo=whole < self.state.steps))
        finally:
            await self.sv.quotas.end_session(self.req.session.id)
            await self.streamer.close(within=10)

    async def _checkpoint(self, force: bool = False) -> None:
        st = self.state
        key = (st.steps, len(st.messages), st.usage.requests)
        if self.turn_id is None or (key == self._saved and not force):
            return
        start = min(self._stored, convert(st.messages, self._converted))  # a replaced message: from it
        try:
            await self.sv.sessions.checkpoint(
                self.turn_id,
                checkpoint_meta(st) | {"step": whole_steps(st, self._boundary)} | self._files | self._final,
                messages=[d for _, d in self._converted[start:]],
                start=start,
            )
            self._saved, self._stored = key, len(self._converted)
        except Exception:
            log.warning("checkpoint_failed", turn_id=self.turn_id, exc_info=True)
