"""Runs sessions' turns: one worker task per session, follow-ups queued in order (and in the store), Stop.

Every task here has an owner (this runner) and a timeout (``BOT_TURN_TIMEOUT_SECONDS``). A follow-up that
arrives while a turn runs is stored before it is queued, so a crash or ``kill -9`` loses none: the next
start answers it after resuming the turn it waited for. Each thread has one write budget shared by all
its turns, notes and the header, so turn boundaries and resumes stay within 5 writes per 5 s too.

Bot-wide (issue 20.6): at most ``BOT_MAX_CONCURRENT_RUNS`` turns run at once (the rest wait, fair between
servers), and every session's writes share one REST budget (``BOT_REST_WRITES_PER_SECOND``). What a thread
shows around turns (the header's state, ⏳ reactions) is the cogs' business: the runner only calls its
:class:`TurnHooks`. A thread that is deleted, archived or locked stops its session (:meth:`close_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from agent.events import RunResult
from bot.notes import NotStarted
from bot.pacing import RestBudget, RunSlots
from bot.streamer import WriteBudget
from bot.turn import Turn
from bot.turn_request import TurnHooks, TurnRequest, error_id

if TYPE_CHECKING:
    from bot.services import Services

__all__ = ["SessionRunner", "TurnHooks", "TurnRequest"]

log = structlog.get_logger("bot.runner")

FOLLOW_UPS_WAITING = 5
"""Follow-ups one member may have queued in one session. Each waits in memory and the store and is then
run or refused (a refusal is a message in the thread): a member posting 300 follow-ups during one turn
queued 300 turns. Five is more than a conversation asks ahead of an answer."""


@dataclass
class _Worker:
    session_id: str
    queue: deque[TurnRequest] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    current: asyncio.Task[RunResult | None] | None = None
    stopped_by: str | None = None
    turn: Turn | None = None
    thread_id: int | None = None
    closed: str | None = None
    """Why the thread can take nothing more (deleted, archived, locked), once it is so."""
    restart: TurnRequest | None = None
    """The running turn again with its message's edit: queued first once the stopped turn has settled."""
    arriving: Counter[int] = field(default_factory=Counter)
    """Follow-ups being stored, by member: counted as waiting before they reach ``queue``."""
    waiting: asyncio.Event | None = None
    """Set by a Stop while the next turn waits for a run slot (so it never starts); None once it runs."""
    pending: TurnRequest | None = None
    """The turn waiting for a run slot (an edit of its message changes what it will run)."""


class SessionRunner:
    def __init__(self, services: Services) -> None:
        self.sv = services
        self._workers: dict[str, _Worker] = {}
        self._budgets: dict[str, WriteBudget] = {}
        self._prune_at = 0.0
        self._closing = False
        self.rest_budget = RestBudget(services.bot_settings.rest_writes_per_second * services.owner.share)
        """Every session's writes share it (issue 20.6): Discord's global limit is per bot, so a shard
        process takes its shards' share of it (issue 18.3)."""
        share = services.bot_settings.max_concurrent_runs * services.owner.share
        self.slots = RunSlots(max(1, int(share + 1e-9)))
        """The bot-wide cap on running turns, this process's shards' share of it, as the REST budget."""
        self.hooks: TurnHooks | None = None
        self._born = time.monotonic()

    # --- public API ------------------------------------------------------------------------------
    def is_running(self, session_id: str) -> bool:
        return bool((w := self._workers.get(session_id)) and w.current and not w.current.done())

    def live_sessions(self) -> set[str]:
        """The sessions this process runs now (a worker each): at start-up these are not interrupted."""
        return set(self._workers)

    def stoppable(self, session_id: str) -> bool:
        """A turn runs, or waits for a run slot (a Stop then keeps it from starting)."""
        return self.is_running(session_id) or bool((w := self._workers.get(session_id)) and w.waiting)

    def stopping(self, session_id: str) -> bool:
        """A Stop is ending a :meth:`stoppable` turn: a second press is told so (after an edit's, it is not)."""
        return bool((w := self._workers.get(session_id)) and w.stopped_by and not w.restart)

    def asked_by(self, session_id: str) -> int | None:
        """Who asked the turn that runs (or waits for a slot) now: it is charged to them, so they may stop it."""
        w = self._workers.get(session_id)
        req = w and (w.pending or (w.turn.req if w.turn else None))
        return req.requester_id if req else None

    def running(self) -> int:
        """Turns running now (for the health report)."""
        return sum(1 for sid in list(self._workers) if self.is_running(sid))

    def busy(self) -> bool:
        """Any session still has a worker (a turn running or queued)."""
        return bool(self._workers)

    def write_budget(self, session_id: str) -> WriteBudget:
        """The thread's write budget: kept while it has writes in the window, so a new turn (or the
        header before it) counts what the previous one wrote."""
        now = time.monotonic()
        if now >= self._prune_at:
            # Pruning looks at every budget: done on every call it was 3 scans of all sessions per
            # session started (O(sessions²), 2% of the bot's CPU at 100 sessions). A budget idle for a
            # window is empty, so pruning once per window keeps the same budgets alive.
            self._prune_at = now + WriteBudget().per
            for sid in [s for s, b in self._budgets.items() if not b.used() and s not in self._workers]:
                del self._budgets[sid]
        budget = self._budgets.get(session_id)
        if budget is None:
            budget = self._budgets[session_id] = WriteBudget(self.sv.bot_settings.writes_per_5s)
        return budget

    async def submit(self, req: TurnRequest) -> Literal["started", "queued", "full"]:
        """Start the turn, or queue it behind the session's running one (stored, so it survives a crash);
        while the bot stops, only store it. ``"full"``: the requester already has
        :data:`FOLLOW_UPS_WAITING` turns queued in the session, and this one is dropped."""
        sid = req.session.id
        if self._closing:  # stored for the next start to answer: raising here lost it without a word
            await self._store(req)
            return "queued"
        w = self._workers.get(sid)
        if self._alive(w) and req.queued_id is None:
            assert w is not None
            who = req.requester_id
            if sum(r.requester_id == who for r in w.queue) + w.arriving[who] >= FOLLOW_UPS_WAITING:
                return "full"
            w.arriving[who] += 1  # before the await: a flood's messages arrive together
            try:
                await self._store(req)
            finally:
                w.arriving[who] -= 1
            # The running turn may have ended while the follow-up was stored: queued behind a worker
            # that had already left, it was never answered (its ⏳ stayed; seen under load in CI).
            w = self._workers.get(sid)
        if not self._alive(w):
            w = _Worker(sid, thread_id=req.session.thread_id)
            self._workers[sid] = w
            w.queue.append(req)  # a stored one keeps its id: its turn takes it out of the store
            w.task = asyncio.create_task(self._work(w), name=f"session:{sid}")
            return "started"
        w.queue.append(req)
        return "queued"

    @staticmethod
    def _alive(w: _Worker | None) -> bool:
        return w is not None and w.task is not None and not w.task.done()

    async def _store(self, req: TurnRequest) -> None:
        """Keep a turn that waits in the store, so the next start answers it after a crash."""
        if req.queued_id is None:
            req.queued_id = await self.sv.sessions.queue_turn(
                req.session.id, req.prompt, req.requester_id, req.requester_name, req.role_ids, req.message_id
            )

    async def stop(self, session_id: str, by: str, said: Callable[[], Awaitable[Any]] | None = None) -> bool:
        """Cancel the running turn; returns once it has posted what it had (False if none ran). ``said`` (the
        member's "Stopping…") waits for the stop to be saved: said first, a kill -9 then ran it on, charged."""
        w = self._workers.get(session_id)
        if w is not None and w.waiting is not None and w.stopped_by is None:
            w.stopped_by = by  # it waits for a run slot: it stops waiting and never starts
            if w.pending is not None and w.pending.queued_id is not None:  # dropped before "Stopping…":
                with contextlib.suppress(Exception):  # kept until it settled, a kill -9 right after the
                    async with asyncio.timeout(2):  # reply had the restart answer it
                        await self.sv.sessions.drop_queued(w.pending.queued_id)
                        await self.sv.sessions.set_status(session_id, "stopped")  # bot.resume: its header
            w.waiting.set()
            if said is not None:
                await said()
            return True
        if w is None or w.current is None or w.current.done() or (w.turn and w.turn.status):  # ended: saving
            return False  # (a Stop after an edit drops its re-run; cut short, a turn's end stayed open)
        w.restart, w.stopped_by = w.restart if by.startswith("an edit") else None, by
        if w.turn is not None and w.turn.turn_id is not None:
            try:
                async with asyncio.timeout(2):  # the member is answered within Discord's 3 s
                    await self.sv.sessions.request_stop(w.turn.turn_id, by)
            except Exception:  # an outage: the stop still happens here, only a kill now would lose it
                log.warning("stop_not_saved", session_id=session_id, exc_info=True)
        w.current.cancel()
        try:
            if said is not None:
                await said()
        finally:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(w.current), 30)
        return True

    def queued(self, message_id: int) -> bool:
        """The turn that message asked for waits: queued, or for a run slot."""
        return any(
            r.message_id == message_id for w in self._workers.values() for r in (w.pending, *w.queue) if r
        )

    def active(self, session_id: str) -> bool:
        """A turn of the session is running or queued."""
        return session_id in self._workers

    async def edited(
        self, message_id: int, prompt: str
    ) -> Literal["restarted", "requeued", "unchanged"] | None:
        """The message that asked for a running or queued turn was edited to ``prompt`` (issue 17.3).

        A queued turn simply takes the new text (in the store too). A running one is stopped (its
        partial answer stays in the thread, "stopped by an edit") and run again with the edit, first in
        the queue; the stopped turn is superseded, so its steps leave the conversation. ``None``: no turn
        here was asked by that message (it finished, or never ran)."""
        for w in list(self._workers.values()):
            pending = [
                r for r in (w.restart, w.pending, *w.queue) if r is not None and r.message_id == message_id
            ]
            if pending:
                if pending[0].prompt == prompt:
                    return "unchanged"
                pending[0].prompt = prompt
                if pending[0].queued_id is not None:
                    await self.sv.sessions.edit_queued(pending[0].queued_id, prompt)
                return "requeued"
            t = w.turn
            if t is None or t.req.message_id != message_id or w.current is None or w.current.done():
                continue
            if t.req.prompt == prompt:
                return "unchanged"
            w.restart = dataclasses.replace(
                t.req, prompt=prompt, resume=None, queued_id=None, notes=[], count_request=True
            )
            await self.stop(w.session_id, by="an edit of the message")
            return "restarted"
        return None

    async def withdrawn(self, message_id: int) -> bool:
        """The message that asked for a queued turn was deleted: the turn is dropped unanswered, so
        nothing is charged (one waiting for a slot says it stopped; a running one goes on: its answer
        may already be half-written)."""
        for w in list(self._workers.values()):
            if w.pending is not None and w.pending.message_id == message_id:  # waiting for a slot
                return await self.stop(w.session_id, by="the deletion of its message")
            for req in [r for r in w.queue if r.message_id == message_id]:
                w.queue.remove(req)
                if req.queued_id is not None:
                    await self.sv.sessions.drop_queued(req.queued_id)
                return True
        return False

    def close_thread(self, thread_id: int, reason: str) -> bool:
        """The thread was deleted, archived or locked: stop its session's run without writing anything
        more into it, and drop its queued follow-ups (nothing more is charged; stored ones are dropped
        when the worker ends). False if none ran."""
        w = next((w for w in self._workers.values() if w.thread_id == thread_id), None)
        if w is None:
            return False
        self._gone(w, reason)
        return True

    def _gone(self, w: _Worker, reason: str) -> None:
        w.closed = w.closed or reason
        if w.turn is not None:
            w.turn.streamer.abandon(reason)
        if w.stopped_by is None:  # not already being stopped (a second cancel would cut its saving short)
            w.stopped_by = reason
            if w.turn is not None and w.turn.in_run and w.current is not None and not w.current.done():
                w.current.cancel()
        if w.waiting is not None:
            # Waiting for a run slot, it held its member's session slot and its place in line until a
            # slot freed (minutes when the bot is full): the member could start nothing new meanwhile.
            w.waiting.set()

    async def _hook(self, name: str, *args: Any) -> None:
        if self.hooks is None:
            return
        try:
            async with asyncio.timeout(30):
                await getattr(self.hooks, name)(*args)
        except Exception:
            log.warning("turn_hook_failed", hook=name, exc_info=True)

    async def shutdown(self, grace: float = 20.0) -> int:
        """Stop taking turns; running turns pause at their next step boundary (within ``grace``, else
        where they are), keeping their checkpoint so the next start resumes them. Queued follow-ups stay
        in the store for the next start. Returns how many turns were running (paused for the next start)."""
        self._closing = True
        paused = sum(1 for w in self._workers.values() if w.current and not w.current.done())
        tasks = [w.task for w in self._workers.values() if w.task and not w.task.done()]
        if not tasks:
            return paused
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for w in self._workers.values():
            if w.current and not w.current.done():
                w.current.cancel()
        if pending:
            await asyncio.wait(pending, timeout=15)
        return paused

    def inherit_window(self, session_id: str) -> None:
        """A process cannot see what the one before it wrote: a thread it takes over counts its window
        as full when this process began (the header and a step just before a kill made 6 writes in 5 s)."""
        budget = self.write_budget(session_id)
        for _ in range(budget.writes - budget.used()):
            budget.take(at=self._born)

    async def _wait(self, req: TurnRequest) -> None:
        """The turn waits for a run slot: stored like a queued follow-up first, so a restart answers it
        (it was in memory only, and its header said "waiting" forever)."""
        with contextlib.suppress(Exception):
            await self._store(req)
        await self._hook("waiting", req)

    async def _work(self, w: _Worker) -> None:
        try:
            while w.queue and not self._closing and not w.closed:
                req = w.queue.popleft()
                await self._one(w, req)
        finally:
            if w.closed:  # the thread is gone: its stored follow-ups would answer into nothing
                for req in [*w.queue]:
                    if req.queued_id is not None:
                        with contextlib.suppress(Exception):
                            await self.sv.sessions.drop_queued(req.queued_id)
                w.queue.clear()
            self._workers.pop(w.session_id, None)

    async def _one(self, w: _Worker, req: TurnRequest) -> None:
        """One turn, in a run slot; the hooks say when it waits, starts and how the session ends."""
        w.stopped_by = None
        status: str | None = None
        w.waiting, w.pending = asyncio.Event(), req
        async with self.slots.hold(
            on_wait=lambda: self._wait(req), unless=w.waiting, key=req.session.guild_id
        ):
            w.waiting = w.pending = None
            if self._closing or w.closed:
                w.queue.appendleft(req)  # kept (and stored) for the next start, or dropped if closed
                if w.closed:  # a new session's slot, taken at its start (the next start drops the rest)
                    await self.sv.quotas.end_session(w.session_id)
                return
            if w.stopped_by is not None:  # stopped while it waited for a slot: nothing ran or is charged
                await self.sv.quotas.end_session(w.session_id)  # a new session's slot (taken at its start)
                if req.queued_id is not None:
                    await self.sv.sessions.drop_queued(req.queued_id)
                turn = Turn(self.sv, req, self.write_budget(w.session_id), self.rest_budget)
                turn.renderer.feed(NotStarted(w.stopped_by))
                await turn.streamer.close(within=60)
                if not w.queue:
                    await self._hook("ended", req, "stopped")
                with contextlib.suppress(Exception):  # the header says it now (see stop)
                    await self.sv.sessions.set_status(w.session_id, "idle")
                return
            await self._hook("started", req)
            turn = w.turn = Turn(
                self.sv,
                req,
                self.write_budget(w.session_id),
                self.rest_budget,
                on_gone=lambda reason: self._gone(w, reason),
            )
            w.current = asyncio.create_task(
                turn.run(lambda: w.stopped_by, lambda: self._closing, lambda: w.closed),
                name=f"turn:{w.session_id}",
            )
            try:
                await w.current
                status = turn.status
            except asyncio.CancelledError:
                if asyncio.current_task() and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                status = turn.status
            except Exception:
                log.exception("turn_crashed", session_id=w.session_id, error_id=error_id())
                status = "failed"
            finally:
                w.turn = None
                if w.restart is not None:  # the message was edited: run it again, replacing this turn
                    w.restart.supersedes = turn.turn_id
                    w.queue.appendleft(w.restart)
                    if self._closing:  # the next start answers the edit (in memory only, it was lost)
                        with contextlib.suppress(Exception):
                            await self._store(w.restart)
                    w.restart = None
        if w.closed:
            await self._hook("ended", req, "closed")
        elif not w.queue and (not self._closing or status is not None):
            # Shutting down, a paused turn (no status) keeps "running" for the next start to resume; one
            # that ended meanwhile says so (its header said "running" with a Stop button for good).
            await self._hook("ended", req, status or "stopped")
