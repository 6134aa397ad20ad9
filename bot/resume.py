"""Start-up: turns a crash or a restart left running continue from their checkpoint, then the
follow-ups queued behind them are answered, in order (issue 15's kill -9 bugs live here).

Why apart from the runner: this reads the store once at start-up and only submits turns; the runner
runs them and knows nothing of restarts.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import Any

import discord
import structlog

from agent.attachments import IncomingFile
from bot.attach import incoming
from bot.checkpoint import with_charges
from bot.mentions import strip_mentions_of
from bot.notes import QueuedRestored, Resumed
from bot.runner import SessionRunner, TurnRequest
from bot.turn_end import STOPPED_BY, ended

__all__ = ["resume_interrupted"]

log = structlog.get_logger("bot.resume")


async def resume_interrupted(runner: SessionRunner, fetch_channel: Callable[[int], Awaitable[Any]]) -> int:
    """At start-up: turns left running by a crash or a restart continue from their checkpoint, then
    the follow-ups that were queued behind them are answered, in order.

    Only the servers this process owns (``sv.owner``): another shard process's turns are live.
    ``fetch_channel(id)`` returns the thread or raises. A session whose thread is gone is marked
    failed and its queued follow-ups dropped. Completed steps are not redone, so not charged twice.
    Sessions this process already runs are skipped: discord.py dispatches interactions before
    on_ready (which waits for every server, ``guild_ready_timeout`` after the last), so a /research
    can start here first; "resuming" it ran it twice and filled its thread's write window.
    """
    sv = runner.sv
    resumed = 0
    channels: dict[str, Any] = {}
    live = runner.live_sessions()  # not those resumed below: their queued follow-ups queue behind them

    async def channel_of(session: Any) -> Any:
        if session.id not in channels:
            runner.inherit_window(session.id)
            try:
                channels[session.id] = await fetch_channel(session.thread_id)
            except Exception:  # the thread is gone: nowhere to resume or answer
                log.warning("resume_thread_gone", session_id=session.id, thread_id=session.thread_id)
                await sv.sessions.set_status(session.id, "failed")
                channels[session.id] = None
            else:
                # Archived or locked while the bot was down: closed, as when it happens during a run
                # (bot.cogs.threads): a resumed run's first message reopened an archived thread.
                if getattr(channels[session.id], "archived", False) or getattr(
                    channels[session.id], "locked", False
                ):
                    log.info("resume_thread_closed", session_id=session.id, thread_id=session.thread_id)
                    # Its header may still say "running": re-rendered when it reopens (bot.cogs.threads).
                    await sv.sessions.set_status(session.id, "stopped")
                    channels[session.id] = None
        return channels[session.id]

    for turn in await sv.sessions.running_turns(sv.owner):
        state = turn.state or {}
        if isinstance(state.get("at"), int | float) and not ended(state):  # calls charged past it count too
            state = with_charges(state, await sv.quotas.charged_after(turn.session_id, float(state["at"])))
        if stopped := (turn.result or {}).get(STOPPED_BY):  # Stop was pressed just before the kill
            state = state | {STOPPED_BY: stopped}
        if turn.session_id in live:  # started here before on_ready: live, not interrupted
            continue
        # One that had ended (its answer saved, bot.turn_end) closes as itself: it stays running until then.
        end = {"turn_id": turn.id, "since": turn.started_at.timestamp()} if ended(state) else None
        session = await sv.sessions.get(turn.session_id)
        channel = await channel_of(session) if session and session.thread_id else None
        if end is None or channel is None:
            interrupted = {"resumed": True, "step": state.get("step", 0)}
            await sv.sessions.finish_turn(turn.id, "interrupted", interrupted)
        if channel is None:
            continue
        has_steps = bool(state.get("messages"))
        await runner.submit(
            TurnRequest(
                session,  # type: ignore[arg-type]
                turn.prompt,
                turn.requester_id,
                str(turn.requester_id),
                await _roles_of(channel, turn.requester_id),
                channel,
                resume=state | end if end else state if has_steps else None,
                count_request=False,
                notes=[] if end else [Resumed(int(state.get("step", 0)) if has_steps else 0)],
                header_written=True,  # the interrupted turn left its header showing "running"
                message_id=turn.message_id,
                attachments=()
                if has_steps
                else tuple(IncomingFile(*f) for f in state.get("attachments", ())),
            )
        )
        resumed += 1
    for session in await sv.sessions.stopped_waiting(sv.owner):  # its header still said "waiting"
        if session.id in live or not session.thread_id or (channel := await channel_of(session)) is None:
            continue
        if runner.hooks is not None:
            stopped = TurnRequest(session, session.task, session.user_id, "", (), channel)
            await runner.hooks.ended(stopped, "stopped")
        await sv.sessions.set_status(session.id, "idle")
    started: set[str] = set()  # sessions with a turn: their queued requests are follow-ups
    for q in await sv.sessions.queued_turns(sv.owner):
        if q.session_id in live:  # its worker here answers it already
            continue
        session = await sv.sessions.get(q.session_id)
        # The session's own request: its first, by its requester, with its task's text. A session whose
        # request a limit refused has no turn either, and its follow-up is not that request.
        first = (
            q.session_id not in started
            and session is not None
            and (q.requester_id, q.prompt) == (session.user_id, session.task)
            and await sv.sessions.latest_turn(q.session_id) is None
        )
        started.add(q.session_id)
        channel = await channel_of(session) if session and session.thread_id else None
        found = await _message_of(runner, channel, q.message_id, q.prompt) if channel is not None else None
        if found is None:  # its thread is gone, or its message was deleted: withdrawn
            await sv.sessions.drop_queued(q.id)
            continue
        files, prompt = found
        if first and session is not None and session.header_message_id is None:
            await _find_header(runner, channel, session)
        if prompt != q.prompt:  # edited while the bot was down (no event came for it)
            await sv.sessions.edit_queued(q.id, prompt)
        await runner.submit(
            TurnRequest(
                session,  # type: ignore[arg-type]
                prompt,
                q.requester_id,
                q.requester_name,
                q.role_ids,
                channel,
                queued_id=q.id,
                notes=[QueuedRestored(prompt, first)],
                message_id=q.message_id,
                attachments=files,
            )
        )
        resumed += 1
    settle_heap()
    return resumed


YOUNG_GC_THRESHOLD = 10_000
"""Allocations between collections of the youngest generation (Python's default is 700)."""
_heap_settled = False


def settle_heap() -> None:
    """Once per process, when start-up is over: what it loaded (discord.py's caches, chromadb,
    onnxruntime, the tokenizer: ~180k objects) lives as long as the process, so it is frozen out of the
    garbage collector's sweeps, and young collections run less often. Measured at 100 sessions
    (bench/bot_load.py, gc callbacks): collections took 0.39 ms of CPU per agent step (179 of them,
    one full collection of 127 ms among them); with this 0.08 ms (9 young ones). Anything frozen is
    never collected, so only what start-up left alive is, once."""
    global _heap_settled
    if _heap_settled:
        return
    _heap_settled = True
    gc.collect()  # what start-up dropped is freed, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


async def _roles_of(channel: Any, user_id: int) -> tuple[int, ...]:
    """The requester's roles now: a turn keeps no roles of its own, and without them a member whose
    role allows more than the server's limits was refused on resuming (their research lost)."""
    guild = getattr(channel, "guild", None)
    if guild is None:
        return ()
    member = guild.get_member(user_id)
    if member is None:
        try:
            member = await guild.fetch_member(user_id)
        except discord.HTTPException:  # left the server: the server's own limits apply
            return ()
    return tuple(r.id for r in member.roles if r.id != guild.id)


async def _find_header(runner: SessionRunner, channel: Any, session: Any) -> None:
    """A kill inside the header's own post left its id unstored, and the header said "running" after
    the restart had answered: it is the bot's first message in the thread (one REST read)."""
    me = getattr(getattr(channel, "guild", None), "me", None)
    await runner.rest_budget.acquire()
    try:
        async for m in channel.history(limit=1, oldest_first=True):
            if me is not None and m.author.id == me.id and m.content.startswith("🔎"):
                await runner.sv.sessions.set_header(session.id, m.id)
    except discord.HTTPException:
        pass


async def _message_of(
    runner: SessionRunner, channel: Any, message_id: int | None, prompt: str
) -> tuple[tuple[IncomingFile, ...], str] | None:
    """The files and text of a queued follow-up's message, read again from Discord after a restart
    (only its text is stored, and the signed URLs it had expire): without them the turn ran as if no
    file came, and answered the stored text though the member had edited it while the bot was down.
    None: the message was deleted meanwhile (its question withdrawn)."""
    if message_id is None:
        return (), prompt
    where = [channel, *([p] if (p := getattr(channel, "parent", None)) is not None else [])]
    for place in where:  # a mention that opened the thread is in its parent channel
        await runner.rest_budget.acquire()
        try:
            message = await place.fetch_message(message_id)
            break
        except discord.NotFound:
            continue
        except Exception:  # no access: the text alone is answered, as before
            return (), prompt
    else:
        return None
    me = getattr(getattr(channel, "guild", None), "me", None)
    return incoming(message.attachments), strip_mentions_of(me.id if me else None, message) or prompt
