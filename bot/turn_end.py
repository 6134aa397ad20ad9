"""A turn that ended before a restart could close it, closed at the next start without a model call.

A turn's answer is kept in its checkpoint under :data:`FINAL` before it is posted (its last model call
is paid already), and the turn stays open until the thread shows the answer and its footer; so a
``kill -9`` right after the answer shows cannot run (and charge) the turn again: the next start
delivers what the thread lacks of the saved answer, with the files the run wrote, and stores it in
the server's memory as the finished turn would have. Likewise a member's Stop is saved on the running
turn before "Stopping…" is said, and the next start ends that turn as stopped instead of running it on;
a stopped turn's partial answer is saved as shown too (its footer's duration with it, so a footer
posted before the kill is not posted again). A crash before either was saved resumes the turn from its
last whole step, as any other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

import discord

from agent.events import RunResult
from agent.run_state import RunState
from bot.assembly import workspace_of
from bot.attach import file_contents
from bot.notes import FilesWritten
from bot.run_policy import remember_answer

if TYPE_CHECKING:
    from bot.turn import Turn

# A run's status → the session's: a limit or the step cap ends a turn normally (a Retry would meet the
# same limit until it resets), only errors leave the session failed with a Retry button.
SESSION_STATUS = {"completed": "done", "max_iterations": "done", "budget": "done"}
FINAL = "final"
"""Checkpoint key: the run's answer, saved before it is shown; the rest of the checkpoint is its state."""
STOPPED_BY = "stopped_by"
"""Who stopped the turn: saved in the running turn's result before the member is told "Stopping…"
(``SessionStore.request_stop``), and passed to the resumed turn under this key."""
SHOWN_LOOKBACK = 100
"""Thread messages read back to find what of an answer a killed process had already posted (Discord's
page size): an answer is at most a few messages and its footer, posted as the turn ended."""


def ended(cp: dict[str, Any] | None) -> bool:
    """The resumed checkpoint says the turn ended (answered, or stopped): close it, run nothing."""
    return bool(cp and (cp.get(FINAL) or cp.get(STOPPED_BY)))


def final_of(result: RunResult, **more: Any) -> dict[str, Any]:
    """What a checkpoint adds to its state to rebuild ``result`` as it was shown (its footer's duration
    too, so a footer posted before the kill is recognised). ``more``: ``by`` (who stopped it), ``files``
    (what the run wrote, ``bot.attach.new_paths``), ``from_web`` (``bot.run_policy.read_outside``),
    ``mid_call`` (stopped during a model call), ``error_note`` (the error as the thread showed it)."""
    return {
        "text": result.text,
        "status": result.status,
        "duration": result.duration,
        "error": result.error,
        "stopped_at": result.stopped_at,
    } | more


def result_of(state: RunState, final: dict[str, Any]) -> RunResult:
    """The answer a checkpoint kept, with the usage, cost and steps it was shown (and charged) with."""
    return RunResult(
        text=final["text"],
        status=final["status"],
        steps=state.steps,
        usage=state.usage,
        cost=state.cost,
        models=list(state.models),
        sources=list(state.sources),
        messages=list(state.messages),
        duration=float(final.get("duration", 0.0)),
        error=final.get("error"),
        stopped_at=final.get("stopped_at"),
    )


async def shown_in(channel: Any, since: float | None) -> list[str]:
    """The bot's messages in the thread since the turn began: the store cannot tell whether the killed
    process posted the answer (the kill can land between the post and any write), the thread can.
    Nothing read (no access, an outage): nothing is taken as shown, and the answer is posted again
    rather than lost."""
    me = getattr(getattr(channel, "guild", None), "me", None)
    after = dt.datetime.fromtimestamp(since, dt.UTC) if since else None
    try:
        return [
            m.content
            async for m in channel.history(limit=SHOWN_LOOKBACK, after=after)
            if me is None or m.author.id == me.id
        ]
    except (discord.HTTPException, AttributeError):
        return []


def is_shown(text: str, contents: list[str]) -> bool:
    """``text`` is one whole block of a message the bot posted (the streamer joins blocks with a line
    break into one message when writes are scarce)."""
    t = text.strip()
    return any(
        c == t or c.startswith(t + "\n") or c.endswith("\n" + t) or f"\n{t}\n" in c
        for c in (c.strip() for c in contents)
    )


async def close_ended(turn: Turn) -> RunResult:
    """A turn that ended before a restart: its saved answer delivered (what the thread shows of it
    already is not posted again), with its files and its place in the server's memory, or its saved
    stop honoured. Nothing runs and nothing more is charged; it closes as the interrupted turn itself,
    so a second kill finds it so."""
    cp, st, req = turn.req.resume or {}, turn.state, turn.req
    st.start(req.prompt, turn.resume_msgs, int(cp.get("step", 0)))
    turn.turn_id = cp.get("turn_id")
    if turn.rest is not None:
        await turn.rest.acquire()
    contents = await shown_in(turn.channel, cp.get("since"))
    final: dict[str, Any] = cp.get(FINAL) or {}
    if final:
        turn._final = {FINAL: final}
        result, by = result_of(st, final), final.get("by")
    else:  # stopped by its member just before the kill: ends as the Stop would have ended it
        by = str(cp[STOPPED_BY])
        result = turn._stopped_by(by)
    turn.status = SESSION_STATUS.get(result.status, "stopped")
    turn.renderer.finish(
        result,
        stopped_by=by,
        shown=lambda text: is_shown(text, contents),
        mid_call=bool(final.get("mid_call")),
        error_note=final.get("error_note"),
    )
    workspace = workspace_of(turn.sv, req.session.id)
    files = await asyncio.to_thread(file_contents, workspace, list(final.get("files") or ()))
    if files and not any(FilesWritten.template in c for c in contents):  # named only, if not attached
        turn.renderer.feed(FilesWritten(tuple(files)))
    await turn._settle(result, turn.status)
    if result.status == "completed":
        await remember_answer(turn.sv, req, result, from_web=final.get("from_web"))  # None: from its messages
    return result
