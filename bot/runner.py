"""Runs agent turns for sessions: one worker task per session, follow-ups queued in order, Stop.

Every task here has an owner (this runner) and a timeout (``BOT_TURN_TIMEOUT_SECONDS``). A stopped or
timed-out turn keeps what it completed: whole steps go to the session's history, the partial answer
is posted and marked, quota reservations are settled, and nothing half-written is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import discord
import structlog

from agent.events import FinalEvent, RunResult, StepStarted, ToolResultEvent
from agent.loop import Agent, RunState
from agent.messages import Message
from agent.models.base import ModelSettings
from agent.tools.registry import ToolContext
from bot.discord_sink import DiscordSink
from bot.pacing import RestBudget, RunSlots, typing_indicator
from bot.progress import ProgressRenderer
from bot.run_policy import is_private, turn_services
from bot.store import QuotaBudget, SessionRecord, StoreError
from bot.streamer import ThreadStreamer, WriteBudget

if TYPE_CHECKING:
    from bot.services import Services

log = structlog.get_logger().bind(logger="bot.runner")


@dataclass
class TurnRequest:
    session: SessionRecord
    prompt: str
    requester_id: int
    requester_name: str
    role_ids: tuple[int, ...] = ()
    channel: discord.abc.Messageable | None = None
    """Where the turn writes: always the session's own thread (or the DM/channel it lives in)."""
    resume: list[dict[str, Any]] | None = None
    """A checkpoint's whole steps: the turn continues after them (after a restart)."""
    resume_step: int = 0
    count_request: bool = True
    header_written: bool = False
    """The session header was just posted in this thread: it counts against the thread's write budget."""
    message_id: int | None = None
    """The follow-up message that asked for this turn (its ⏳ goes when the turn starts)."""


class TurnHooks(Protocol):
    """What the thread shows around turns (``bot.cogs.threads``): the header's state, ⏳ reactions."""

    async def waiting(self, req: TurnRequest) -> None: ...

    async def started(self, req: TurnRequest) -> None: ...

    async def ended(self, req: TurnRequest, status: str) -> None: ...


class _Paused(Exception):
    """The bot is shutting down: this turn stops at a step boundary and resumes at the next start."""


@dataclass
class _Worker:
    session_id: str
    queue: deque[TurnRequest] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    current: asyncio.Task[RunResult | None] | None = None
    stopped_by: str | None = None
    streamer: ThreadStreamer | None = None
    in_run: bool = False
    """Between the turn's start and its settling: a stop may cancel it (not while it saves)."""
    status: str | None = None
    thread_id: int | None = None
    closed: str | None = None
    """Why the thread can take nothing more (deleted, archived, locked), once it is so."""


MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 8 * 1024 * 1024


def _new_files(workspace: Path | None, since: float) -> list[tuple[str, bytes]]:
    """Files the agent wrote in its workspace during this turn, to attach (at most 10, 8 MB each)."""
    if workspace is None:
        return []
    from agent.tools.files import workspace_files
    from agent.tools.safe_names import safe_name

    out: list[tuple[str, bytes]] = []
    for path in workspace_files(workspace):
        try:
            st = path.stat()
            if st.st_mtime >= since - 1 and st.st_size <= MAX_ATTACHMENT_BYTES:
                name = safe_name(str(path.relative_to(workspace)).replace("/", "_"))  # no bidi/newlines
                out.append((name, path.read_bytes()))
        except OSError:
            continue
        if len(out) >= MAX_ATTACHMENTS:
            break
    return out


def error_id() -> str:
    return uuid.uuid4().hex[:8]


class SessionRunner:
    def __init__(self, services: Services) -> None:
        self.sv = services
        self._workers: dict[str, _Worker] = {}
        self._closing = False
        self.rest_budget = RestBudget(services.bot_settings.rest_writes_per_second)
        """Every session's writes share it (issue 20.6): Discord's global limit is per bot."""
        self.slots = RunSlots(services.bot_settings.max_concurrent_runs)
        self.hooks: TurnHooks | None = None
        self._channel_budgets: dict[int, WriteBudget] = {}

    def channel_budget(self, channel_id: int) -> WriteBudget:
        """Discord's 5 writes per 5 s is per channel, not per turn: a thread's streamers and its header
        edits share one window (idle windows are forgotten)."""
        for cid in [c for c, b in self._channel_budgets.items() if c != channel_id and b.used() == 0]:
            del self._channel_budgets[cid]
        budget = self._channel_budgets.get(channel_id)
        if budget is None:
            budget = WriteBudget(self.sv.bot_settings.writes_per_5s, 5.0)
            self._channel_budgets[channel_id] = budget
        return budget

    # --- public API ------------------------------------------------------------------------------
    def is_running(self, session_id: str) -> bool:
        w = self._workers.get(session_id)
        return bool(w and w.current and not w.current.done())

    def submit(self, req: TurnRequest) -> str:
        """Queue a turn; returns ``"started"`` or ``"queued"`` (a turn of this session is running)."""
        if self._closing:
            raise RuntimeError("the bot is shutting down")
        sid = req.session.id
        w = self._workers.get(sid)
        if w is None or w.task is None or w.task.done():
            w = _Worker(sid, thread_id=req.session.thread_id)
            self._workers[sid] = w
            w.queue.append(req)
            w.task = asyncio.create_task(self._work(w), name=f"session:{sid}")
            return "started"
        w.queue.append(req)
        return "queued"

    async def stop(self, session_id: str, by: str) -> bool:
        """Cancel the running turn; returns once it has posted what it had (False if none ran)."""
        w = self._workers.get(session_id)
        if w is None or w.current is None or w.current.done():
            return False
        w.stopped_by = by
        w.current.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(w.current), 30)
        return True

    def close_thread(self, thread_id: int, reason: str) -> bool:
        """The thread was deleted, archived or locked: stop its session's run without writing anything
        more into it, and drop its queued follow-ups (nothing more is charged). False if none ran."""
        w = next((w for w in self._workers.values() if w.thread_id == thread_id), None)
        if w is None:
            return False
        self._gone(w, reason)
        return True

    def _gone(self, w: _Worker, reason: str) -> None:
        w.queue.clear()
        w.closed = w.closed or reason
        if w.streamer is not None:
            w.streamer.abandon(reason)
        if w.in_run and w.current is not None and not w.current.done() and w.stopped_by is None:
            w.stopped_by = reason
            w.current.cancel()

    async def _hook(self, name: str, *args: Any) -> None:
        if self.hooks is None:
            return
        try:
            async with asyncio.timeout(30):
                await getattr(self.hooks, name)(*args)
        except Exception:
            log.warning("turn_hook_failed", hook=name, exc_info=True)

    async def shutdown(self, grace: float = 20.0) -> None:
        """Stop taking turns; running turns pause at their next step boundary (within ``grace``, else
        where they are), keeping their checkpoint so the next start resumes them."""
        self._closing = True
        tasks = [w.task for w in self._workers.values() if w.task and not w.task.done()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for w in self._workers.values():
            if w.current and not w.current.done():
                w.current.cancel()
        if pending:
            await asyncio.wait(pending, timeout=15)

    async def resume_interrupted(self, fetch_channel: Any) -> int:
        """At start-up: turns left running by a crash or a restart continue from their checkpoint.

        ``fetch_channel(id)`` returns the thread or raises. A turn whose thread is gone is closed as
        ``interrupted``. Completed steps are not redone, so they are not charged twice.
        """
        sv = self.sv
        resumed = 0
        for turn in await sv.sessions.running_turns():
            session = await sv.sessions.get(turn.session_id)
            state = turn.state or {}
            await sv.sessions.finish_turn(
                turn.id, "interrupted", {"resumed": True, "step": state.get("step", 0)}
            )
            if session is None or session.thread_id is None:
                continue
            try:
                channel = await fetch_channel(session.thread_id)
            except Exception:  # the thread is gone: nowhere to resume or offer a retry
                log.warning("resume_thread_gone", session_id=session.id, thread_id=session.thread_id)
                await sv.sessions.set_status(session.id, "failed")
                continue
            step = int(state.get("step", 0))
            msgs = state.get("messages") or None
            try:
                await channel.send(
                    f"♻️ Interrupted by a restart: resuming from step {step + 1}."
                    if msgs
                    else "♻️ Interrupted by a restart before its first step: starting again.",
                    allowed_mentions=discord.AllowedMentions.none(),
                )
            except discord.HTTPException:
                pass
            self.submit(
                TurnRequest(
                    session,
                    turn.prompt,
                    turn.requester_id,
                    str(turn.requester_id),
                    (),
                    channel,
                    resume=msgs,
                    resume_step=step if msgs else 0,
                    count_request=False,
                )
            )
            resumed += 1
        return resumed

    # --- internals -------------------------------------------------------------------------------
    async def _work(self, w: _Worker) -> None:
        while w.queue and not self._closing:
            req = w.queue.popleft()
            w.stopped_by = None
            w.status = None
            async with self.slots.hold(on_wait=lambda req=req: self._hook("waiting", req)):
                if self._closing or w.closed:
                    break
                await self._hook("started", req)
                w.current = asyncio.create_task(self._turn(req, w), name=f"turn:{w.session_id}")
                try:
                    await w.current
                except asyncio.CancelledError:
                    if asyncio.current_task() and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                        raise
                except Exception:
                    log.exception("turn_crashed", session_id=w.session_id, error_id=error_id())
                    w.status = "failed"
            if w.closed:
                await self._hook("ended", req, "closed")
            elif not w.queue and not self._closing:
                await self._hook("ended", req, w.status or "stopped")
        self._workers.pop(w.session_id, None)

    async def _turn(self, req: TurnRequest, w: _Worker) -> RunResult | None:
        sv = self.sv
        s = req.session
        channel = req.channel
        assert channel is not None
        eid = error_id()
        blog = log.bind(session_id=s.id, guild_id=s.guild_id, user_id=req.requester_id)
        began = await sv.quotas.begin_session(
            s.guild_id, req.requester_id, req.role_ids, s.id, count_request=req.count_request
        )
        if not began.allowed:
            await channel.send(f"⛔ {began.message}", allowed_mentions=discord.AllowedMentions.none())
            return None
        streamer = ThreadStreamer(
            DiscordSink(channel, self.rest_budget),
            writes=sv.bot_settings.writes_per_5s,
            name=s.id,
            on_gone=lambda reason: self._gone(w, reason),
            budget=self.channel_budget(channel.id) if hasattr(channel, "id") else None,
        )
        w.streamer = streamer
        if req.header_written:
            streamer.budget.take()
        started_wall = time.time()
        renderer = ProgressRenderer(streamer, notify=req.requester_id)
        state = RunState(task=req.prompt)
        turn_id: int | None = None
        result: RunResult | None = None
        status = "done"
        try:
            gs = await sv.guild_settings.get(s.guild_id) if s.guild_id else None
            history = [Message.from_dict(d) for d in await sv.sessions.history(s.id)]
            turn_id = await sv.sessions.start_turn(s.id, req.prompt, req.requester_id)
            w.in_run = True
            if w.closed:  # the thread closed while this turn was getting ready: run nothing
                w.stopped_by = w.closed
                raise asyncio.CancelledError
            await sv.sessions.set_status(s.id, "running")
            budget = QuotaBudget(sv.quotas, s.guild_id, req.requester_id, req.role_ids, s.id)
            agent, ctx, extra = await self._prepare(req, gs, renderer)
            recalled = ctx.services.get("memory_recalled", ())
            ctx.services.update(turn_services(sv, gs, req, state, history, recalled))  # memory, fetch rules
            await self._charge_judge(agent.model, budget)
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(typing_indicator(channel, self.rest_budget))
                async with asyncio.timeout(sv.bot_settings.turn_timeout):
                    async with contextlib.aclosing(
                        agent.run(
                            req.prompt,
                            history,
                            context=ctx,
                            budget=budget,
                            extra_system=extra,
                            state=state,
                            resume=[Message.from_dict(d) for d in req.resume] if req.resume else None,
                            resume_step=req.resume_step,
                        )
                    ) as events:
                        async for ev in events:
                            if self._closing and isinstance(ev, StepStarted) and ev.step > state.steps:
                                raise _Paused  # a step boundary: nothing of this step has run yet
                            renderer.feed(ev)
                            if isinstance(ev, FinalEvent):
                                result = ev.result
                            elif isinstance(ev, StepStarted | ToolResultEvent) and turn_id is not None:
                                await self._checkpoint(turn_id, state)
            assert result is not None
            status = {"completed": "done", "max_iterations": "done"}.get(result.status, "failed")
            renderer.finish(result)
            files = await asyncio.to_thread(_new_files, ctx.workspace, started_wall)
            if files:
                renderer.s.add("final", "📎 Files written in this turn:", files=files)
        except (_Paused, asyncio.CancelledError) as e:
            if isinstance(e, _Paused) or w.stopped_by is None:
                # Not a user's Stop: a shutdown (or a crash-like cancel). Keep the turn running with its
                # checkpoint; the next start resumes it. History is untouched, so nothing is half-written.
                await self._pause(s, turn_id, state, streamer, renderer)
                if isinstance(e, asyncio.CancelledError):
                    raise
                return None
            by = w.stopped_by
            result = state.result(
                "cancelled",
                f"Stopped by {by} after {state.steps} step{'s' if state.steps != 1 else ''}."
                + (f"\n\nPartial answer so far:\n\n{state.last_text}" if state.last_text.strip() else ""),
            )
            renderer.finish(result, stopped_by=by)
            status = "stopped"
        except TimeoutError:
            limit = sv.bot_settings.turn_timeout
            result = state.result(
                "cancelled",
                f"Stopped after {limit:.0f} s (time limit)."
                + (f"\n\nPartial answer so far:\n\n{state.last_text}" if state.last_text.strip() else ""),
            )
            renderer.finish(result, stopped_by="a time limit")
            status = "stopped"
        except Exception as e:
            blog.exception("turn_failed", error_id=eid)
            what = (
                "the bot's database refused a write (locked or out of space?)"
                if isinstance(e, sqlite3.Error | StoreError)
                else "something went wrong"
            )
            result = state.result(
                "error",
                f"⚠️ This turn stopped: {what} (error id `{eid}`).",
                error=f"{type(e).__name__}",
            )
            renderer.s.add("note", result.text)
            status = "failed"
        w.in_run = False
        w.status = w.status or status
        await self._settle(s, turn_id, result, status, streamer)
        if result is not None and result.status == "completed":
            await self._remember(req, result)
        elif status == "failed":
            await self._offer_retry(channel, s.id)
        return result

    async def _offer_retry(self, channel: discord.abc.Messageable, session_id: str) -> None:
        from bot.views import retry_view

        try:
            await channel.send(
                "This turn failed. You can try it again:",
                view=retry_view(session_id),
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException:
            log.warning("retry_offer_failed", session_id=session_id)

    async def _settle(
        self,
        s: SessionRecord,
        turn_id: int | None,
        result: RunResult | None,
        status: str,
        streamer: ThreadStreamer,
    ) -> None:
        """Persist whole steps, close the turn, release the quota slot, then let the writes finish."""
        sv = self.sv
        try:
            if result is not None and result.messages and status != "failed":
                # A failed turn adds nothing: Retry runs the same request again on a clean history.
                msgs = list(result.messages)
                if status == "stopped":
                    msgs.append(Message("assistant", result.text))
                await sv.sessions.append_messages(s.id, [m.to_dict() for m in msgs])
            if turn_id is not None:
                summary: dict[str, Any] = {}
                if result is not None:
                    summary = {
                        "status": result.status,
                        "steps": result.steps,
                        "tokens": result.usage.total_tokens,
                        "cost_usd": result.cost.usd,
                        "cost_known": result.cost.known,
                        "models": result.models,
                        "text": result.text[:4000],
                    }
                turn_status = result.status if result is not None else "error"
                await sv.sessions.finish_turn(turn_id, turn_status, summary)
            await sv.sessions.set_status(s.id, "idle" if status in ("done", "stopped") else "failed")
        except Exception as e:  # a locked or full database: say so; the answer above is still shown
            eid = error_id()
            log.error("turn_save_failed", session_id=s.id, error_id=eid, error=f"{type(e).__name__}: {e}")
            streamer.add(
                "note",
                f"⚠️ This turn's answer could not be saved to the bot's database (error id "
                f"`{eid}`), so a follow-up will not see it. An admin can check `agentbot doctor`.",
            )
        finally:
            try:
                await sv.quotas.end_session(s.id)
            except Exception:
                log.error("quota_release_failed", session_id=s.id, exc_info=True)
            await streamer.close(within=900)

    async def _pause(
        self,
        s: SessionRecord,
        turn_id: int | None,
        state: RunState,
        streamer: ThreadStreamer,
        renderer: ProgressRenderer,
    ) -> None:
        sv = self.sv
        try:
            if turn_id is not None:
                await self._checkpoint(turn_id, state)
            renderer.s.end_live()
            renderer.s.add(
                "note",
                f"⏸️ The bot is restarting: this run pauses after step {state.steps} "
                "and resumes when it is back.",
            )
        finally:
            await sv.quotas.end_session(s.id)
            await streamer.close(within=10)

    async def _checkpoint(self, turn_id: int, state: RunState) -> None:
        try:
            await self.sv.sessions.checkpoint(
                turn_id,
                {
                    "step": state.steps,
                    "messages": [m.to_dict() for m in state.messages],
                    "tokens": state.usage.total_tokens,
                    "cost_usd": state.cost.usd,
                    "at": time.time(),
                },
            )
        except Exception:
            log.warning("checkpoint_failed", turn_id=turn_id, exc_info=True)

    async def _charge_judge(self, model: Any, budget: QuotaBudget) -> None:
        """A judge classifier's call is real spending: it goes on the requester's quota like any other."""
        decision = getattr(model, "decision", None)
        if decision is None or decision.usage is None or not decision.model:
            return
        from agent.budget import BudgetExceeded
        from agent.models.prices import default_prices

        cost = default_prices().cost(decision.model, decision.usage)
        try:
            token = await budget.reserve(decision.model, decision.usage, cost.usd if cost.known else None)
        except BudgetExceeded:
            return  # the call already happened; the run's own first reservation will refuse if needed
        provider = decision.model.split(":", 1)[0] if ":" in decision.model else "openai"
        await budget.settle(token, decision.model, provider, decision.usage, cost)

    async def _prepare(
        self, req: TurnRequest, gs: Any, renderer: ProgressRenderer
    ) -> tuple[Agent, ToolContext, str | None]:
        sv = self.sv
        s = req.session
        requested = s.tier if s.tier in ("simple", "medium", "complex") else None
        model = await sv.model_for(
            dict(gs.tiers) if gs is not None else {},
            req.prompt,
            requested,
            dict(gs.research) if gs is not None else None,
        )
        decision = getattr(model, "decision", None)
        if decision is not None:
            why = f" ({'; '.join(decision.reasons[:2])})" if getattr(decision, "reasons", None) else ""
            writer = getattr(model, "writer", None)
            who = f"{model.name} researches, {writer} writes" if writer else model.name
            renderer.s.add("note", f"🧭 {decision.tier} tier → {who}{why}")
        enabled = [n for n in sv.tools.names() if gs is None or gs.tool_enabled(n)]
        if sv.memory is None or s.guild_id is None:
            enabled = [n for n in enabled if n not in ("recall", "remember")]
        tools = sv.tools.subset(enabled)
        max_steps = gs.max_steps if gs is not None else sv.agent_settings.agent_max_steps
        workspace = Path(sv.data_dir) / "workspaces" / s.id
        await asyncio.to_thread(workspace.mkdir, parents=True, exist_ok=True)
        ctx = ToolContext(
            session_id=s.id,
            namespace=str(s.guild_id) if s.guild_id else None,
            user_id=str(req.requester_id),
            workspace=workspace,
            services={"http": sv.http, "memory": sv.memory},
        )
        extra_parts = []
        parent = getattr(req.channel, "parent_id", None)
        persona = gs.persona_for(getattr(req.channel, "id", None), parent) if gs is not None else None
        if persona:
            extra_parts.append(f"Server instructions: {persona}")
        if sv.memory is not None and s.guild_id is not None:
            from agent.memory.integration import format_recalled, recall_for_task, recalled_event

            hits = await recall_for_task(sv.memory, str(s.guild_id), req.prompt)
            ctx.services["memory_recalled"] = hits  # remember marks notes made after a planted one
            if hits:
                extra_parts.append(format_recalled(hits))
                renderer.feed(recalled_event(hits))
        agent = Agent(
            model,
            tools,
            reader=sv.reader_for(model, gs.reader if gs is not None else True),
            max_iterations=max_steps,
            settings=ModelSettings(
                temperature=sv.agent_settings.agent_temperature,
                max_tokens=sv.agent_settings.agent_max_tokens,
                stream=sv.agent_settings.agent_stream,
                reasoning_effort=sv.agent_settings.reasoning_effort,
            ),
        )
        return agent, ctx, "\n\n".join(extra_parts) or None

    async def _remember(self, req: TurnRequest, result: RunResult) -> None:
        sv = self.sv
        s = req.session
        if sv.memory is None or s.guild_id is None:
            return
        if is_private(req.channel):
            return  # a private thread's research must not become searchable by the whole server
        gs = await sv.guild_settings.get(s.guild_id)
        if not gs.memory_auto_store:
            return
        from agent.memory.integration import store_research

        try:
            await store_research(
                sv.memory,
                str(s.guild_id),
                req.prompt,
                result.text,
                result.sources,
                author=str(req.requester_id),
                thread=str(s.thread_id or ""),
                session=s.id,
                retention=sv.retention_for(gs),
            )
        except Exception:
            log.warning("memory_store_failed", session_id=s.id, exc_info=True)
