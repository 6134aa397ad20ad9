"""A session thread's header: what was asked, who may continue, and whether a run is going or done.

The header is the thread's first message. While a turn runs it carries the Stop button; when the
session goes idle it says how the last run ended, with a Discord timestamp (each reader sees their
own time zone), and the button goes. It is always silent and mentions nobody (edits notify nobody
anyway), and the whole message, not only the task, is cut to Discord's 2,000 characters: a long
bulleted task grows by two characters a line once quoted.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import discord

from agent.tools.safe_names import visible_text
from bot.discord_sink import NO_MENTIONS
from bot.notes import untrusted
from bot.pacing import RestBudget
from bot.run_policy import is_private
from bot.store import SessionRecord
from bot.streamer import WriteBudget
from bot.views import stop_view

HeaderState = Literal["running", "queued", "done", "limited", "step_limit", "stopped", "failed", "closed"]
LIMIT = 2000
_STATE = {
    "running": "⏳ running",
    "queued": "🕒 waiting for a free slot",
    "done": "✅ done",
    "limited": "💸 stopped by a limit",
    "step_limit": "⏱️ step limit reached",
    "stopped": "⏹️ stopped",
    "failed": "⚠️ failed",
    "closed": "🔒 closed with the thread",
}


LIMIT_STATES: dict[str, HeaderState] = {"budget": "limited", "max_iterations": "step_limit"}
"""A turn a limit ended, by its result's status: "done" to the session (its answer is kept and charged),
but its footer says the limit stopped it, and so does the header (it said "✅ done")."""


def state_line(state: HeaderState, at: float | None = None) -> str:
    if state in ("running", "queued"):
        return f"-# {_STATE[state]}…"
    t = int(at if at is not None else time.time())
    return f"-# {_STATE[state]} <t:{t}:f> (<t:{t}:R>)"


def render_header(
    session: SessionRecord,
    *,
    steps: int,
    memory_ok: bool,
    private: bool,
    state: HeaderState = "running",
    at: float | None = None,
) -> str:
    """The header text, at most 2,000 characters whatever the task's length or shape."""
    head = f"🔎 **Research** for <@{session.user_id}>{' (private)' if private else ''}"
    memory = "" if memory_ok else " · memory unavailable"
    who = (
        "anyone in this private thread can reply to follow up"
        if private
        else "the requester can reply here to follow up; others mention me or reply to me"
    )
    limit = f"up to {steps} step{'s' if steps != 1 else ''}"
    tail = (
        f"-# tier {session.tier} · model {session.model} · {limit}{memory} · {who}\n{state_line(state, at)}"
    )
    room = LIMIT - len(head) - len(tail) - 2
    # No direction overrides or invisible characters; the member's words as written, never a masked
    # link or a heading in the bot's header.
    quoted = _quote(untrusted(visible_text(session.task)), room)
    return f"{head}\n{quoted}\n{tail}"[:LIMIT]


def _quote(task: str, room: int) -> str:
    """The task as a block quote within ``room`` characters, cut with an ellipsis when it must be."""
    quoted = "\n".join("> " + line for line in task.splitlines() or [""])
    if len(quoted) <= room:
        return quoted
    return (quoted[: room - 1].rstrip("\n> ") or "> ") + "…"


async def header_text(
    sv: Any, session: SessionRecord, channel: Any, state: HeaderState, at: float | None = None
) -> str:
    """``sv``: the bot's :class:`bot.services.Services`; ``at``: when the state began (default: now)."""
    gs = await sv.guild_settings.get(session.guild_id) if session.guild_id else None
    steps = gs.max_steps if gs else sv.agent_settings.agent_max_steps
    # Memory turned off by the operator is no fault to announce: "memory unavailable" read as an outage.
    memory_ok = sv.memory is not None or not sv.bot_settings.memory_enabled
    return render_header(
        session, steps=steps, memory_ok=memory_ok, private=is_private(channel), state=state, at=at
    )


async def post_header(
    sv: Any, thread: discord.Thread, session: SessionRecord, *, budget: RestBudget, window: WriteBudget
) -> discord.Message:
    """Post the header with its Stop button (raises ``discord.HTTPException`` if Discord refuses).
    ``window``: the thread's own 5 writes per 5 s, shared with its turns; ``budget``: the bot's."""
    text = await header_text(sv, session, thread, "running")
    await window.acquire(budget)
    msg = await thread.send(text, view=stop_view(session.id), allowed_mentions=NO_MENTIONS, silent=True)
    await sv.sessions.set_header(session.id, msg.id)
    return msg


async def show_state(
    sv: Any,
    session: SessionRecord,
    channel: Any,
    state: HeaderState,
    *,
    budget: RestBudget,
    window: WriteBudget,
    at: float | None = None,
) -> bool:
    """Edit the header to show the run's state: the Stop button while running, gone once it ends.
    False when the header could not be edited (deleted, or the thread is gone)."""
    if session.header_message_id is None or channel is None:
        return False
    text = await header_text(sv, session, channel, state, at)
    await window.acquire(budget)
    try:
        await channel.get_partial_message(session.header_message_id).edit(
            content=text,
            view=stop_view(session.id) if state in ("running", "queued") else None,
            allowed_mentions=NO_MENTIONS,
        )
    except discord.HTTPException:
        return False
    return True
