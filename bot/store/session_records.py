"""What the session store keeps, as plain data: sessions, turns and queued follow-ups, and how a row
(SQLite's or asyncpg's) becomes one."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from agent.events import RunStatus
from bot.limits import to_utc
from bot.store.db import StoreError

SessionStatus = Literal["idle", "running", "stopped", "failed", "done"]
SESSION_STATUSES: tuple[str, ...] = get_args(SessionStatus)

TurnStatus = Literal["running", "done", "stopped", "failed", "interrupted", RunStatus]
"""``running`` while the agent works. A finished turn takes the session vocabulary (``done``, ``stopped``,
``failed``) or the run's own ``agent.events.RunStatus`` (``completed``, ``max_iterations``, ``cancelled``,
``error``, ``budget``), whichever the caller finds more useful; ``interrupted`` is for a turn found still
``running`` after a crash and not resumed."""
TURN_STATUSES: tuple[str, ...] = get_args(TurnStatus)


class SessionNotFound(StoreError):
    pass


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True, kw_only=True)
class SessionRecord:
    """Keyword-only, so the optional fields can keep the documented order."""

    id: str
    guild_id: int | None
    channel_id: int
    thread_id: int | None = None
    user_id: int
    task: str
    tier: str
    model: str
    status: SessionStatus = "idle"
    header_message_id: int | None = None
    created_at: datetime | None = None
    """Filled by :meth:`SessionStore.create` when left ``None``."""
    updated_at: datetime | None = None

    @property
    def never_started(self) -> bool:
        """Discord refused its header (``bot.control``): it ran nothing, and its thread stays where the
        bot may not delete it. A message there starts no turn (one ran with no header, Stop or state)."""
        return self.status == "failed" and self.header_message_id is None


@dataclass(slots=True)
class TurnRecord:
    id: int
    session_id: str
    requester_id: int
    prompt: str
    status: TurnStatus
    result: dict[str, Any] | None
    state: dict[str, Any] | None
    """The latest :meth:`SessionStore.checkpoint`, or ``None`` if none was written."""
    started_at: datetime
    finished_at: datetime | None
    checkpointed_at: datetime | None
    message_id: int | None = None
    """The Discord message that asked for this turn (a reply or a mention; ``None`` for /research)."""
    edited_prompt: str | None = None
    """That message's edited text, waiting behind a "Re-run with the edit" button."""
    superseded_by: int | None = None
    """The turn that re-ran this one with the edit: this one's messages are out of the history."""


@dataclass(slots=True, frozen=True)
class QueuedTurn:
    """A follow-up waiting behind a running turn of its session."""

    id: int
    session_id: str
    requester_id: int
    requester_name: str
    role_ids: tuple[int, ...]
    prompt: str
    message_id: int | None = None


def to_ts(dt: datetime) -> float:
    return to_utc(dt).timestamp()


def from_ts(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def check_status(status: str) -> None:
    if status not in SESSION_STATUSES:
        raise ValueError(f"session status must be one of {', '.join(SESSION_STATUSES)}; got {status!r}")


def columns(row: Any, exclude: str = "") -> dict[str, Any]:
    """A row (SQLite's or asyncpg's) by column name: the records' fields are named as the columns."""
    return {k: row[k] for k in row.keys() if k != exclude}  # noqa: SIM118 (a Row iterates values)


def session_of(row: Any) -> SessionRecord:
    return SessionRecord(
        **{**columns(row), "created_at": from_ts(row["created_at"]), "updated_at": from_ts(row["updated_at"])}
    )


def turn_of(row: Any) -> TurnRecord:
    return TurnRecord(
        **{
            **columns(row),
            **{k: None if row[k] is None else json.loads(row[k]) for k in ("result", "state")},
            **{k: from_ts(row[k]) for k in ("started_at", "finished_at", "checkpointed_at")},
        }
    )
