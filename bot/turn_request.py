"""What a turn is asked to do: plain data the runner builds (a /research, a follow-up, a resume after a
restart, a re-run) and :class:`bot.turn.Turn` carries out; and the hooks the runner calls around turns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import discord

from agent.attachments import IncomingFile
from agent.events import Cost
from agent.models.router import RoutedModel
from bot.notes import Note
from bot.store import SessionRecord

__all__ = ["TurnHooks", "TurnRequest", "error_id"]


def error_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class TurnRequest:
    session: SessionRecord
    prompt: str
    requester_id: int
    requester_name: str
    role_ids: tuple[int, ...] = ()
    channel: discord.abc.Messageable | None = None
    """Where the turn writes: always the session's own thread (or the DM/channel it lives in)."""
    resume: dict[str, Any] | None = None
    """A checkpoint (after a restart): the turn continues after its whole steps and counts on from its
    usage, cost and duration."""
    count_request: bool = True
    model: RoutedModel | None = None
    """Routed when the session started (its header names it); follow-ups are routed per turn."""
    queued_id: int | None = None
    """The stored queued follow-up this turn answers (removed when the turn opens)."""
    notes: list[Note] = field(default_factory=list)
    """Shown before the turn's own output (resumed, answering a queued follow-up)."""
    header_written: bool = False
    """The session header already shows "running" with Stop (just posted, or left so by the turn this
    one resumes): no need to edit it again, one write fewer in the thread's 5 per 5 s."""
    message_id: int | None = None
    """The message that asked for this turn (a reply or a mention): editing it re-runs the turn, and a
    queued one's ⏳ goes when the turn starts."""
    supersedes: int | None = None
    """The turn this one re-runs with an edited message: left out of the history, marked replaced."""
    attachments: tuple[IncomingFile, ...] = ()
    """Files attached to the message that asked for this turn, saved when it starts (bot.attach)."""
    judged: tuple[str, Cost] | None = None
    """The judge call that routed ``model``, charged where it was made (``bot.assembly.charge_judge``):
    the turn adds it to its own usage, so its footer matches /usage, and never charges it again."""
    pressed: discord.Message | None = None
    """The message whose button (Retry, Re-run with the edit) asked for this turn, shown disabled from
    the press (``bot.control``); a turn refused by a limit gives it back, to press once that resets."""
    post_refused: bool = False
    """Set by the turn once it has ended: Discord refused a message of it for a missing permission, so
    its requester is told in a DM (bot.cogs.threads), as when the gateway says the permission went."""


class TurnHooks(Protocol):
    """What the thread shows around turns (``bot.cogs.threads``): the header's state, ⏳ reactions."""

    async def waiting(self, req: TurnRequest) -> None: ...

    async def started(self, req: TurnRequest) -> None: ...

    async def ended(self, req: TurnRequest, status: str) -> None: ...
