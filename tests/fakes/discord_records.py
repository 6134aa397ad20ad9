"""What the fake Discord remembers: every REST call, every message with its edit history, every write.

Tests read these to assert what a user would see (the final text of a message, the order of messages
in a thread) and how the bot behaved on the wire (pacing, retries, duplicates, audit-log reasons).
Times are ``time.monotonic()`` seconds, the clock asyncio also uses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.fakes.discord_models import FakeUser


@dataclass(frozen=True)
class RecordedFile:
    """One uploaded file part of a multipart request (``files[n]``)."""

    field: str
    filename: str
    data: bytes
    content_type: str | None = None


@dataclass
class RestCall:
    seq: int
    t: float
    method: str
    path: str
    """Path after ``/api/v10``, e.g. ``/channels/123/messages``."""
    query: dict[str, str]
    json: Any
    """The JSON body (or a multipart request's ``payload_json``), or None."""
    files: list[RecordedFile]
    headers: dict[str, str]
    route: str | None = None
    """The matched route template (``POST /channels/{channel_id}/messages``); None for unknown routes."""
    status: int = 0
    response: Any = None

    @property
    def audit_log_reason(self) -> str | None:
        raw = self.headers.get("X-Audit-Log-Reason")
        return unquote(raw) if raw is not None else None


@dataclass(frozen=True)
class StoredAttachment:
    id: int
    filename: str
    data: bytes
    content_type: str | None
    description: str | None = None


@dataclass(frozen=True)
class MessageVersion:
    """The message as it stood after one create or edit."""

    t: float
    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: list[str]
    flags: int
    allowed_mentions: dict[str, Any] | None
    via: str


@dataclass
class MessageRecord:
    """A message as Discord stores it, plus how it got there."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str
    via: str
    """``channel`` (bot token REST), ``interaction`` (callback), ``webhook`` (followup/@original), ``injected``."""
    t: float
    timestamp: dt.datetime
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    tts: bool = False
    nonce: str | None = None
    allowed_mentions: dict[str, Any] | None = None
    """As sent on the latest create/edit that carried one (None: never sent, Discord's default applies)."""
    mention_ids: list[int] = field(default_factory=list)
    """Users the message lists as mentioned: mentions in the current text allowed by ``allowed_mentions``."""
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    pinged_user_ids: list[int] = field(default_factory=list)
    """Users notified. Only creation notifies: an edit (including a followup that fills a deferred
    "thinking…" response) pings nobody, as on Discord."""
    pinged_role_ids: list[int] = field(default_factory=list)
    pinged_everyone: bool = False
    notified_user_ids: list[int] = field(default_factory=list)
    """Users Discord notifies of this new message: those it pings and a thread's members, unless it
    was sent silently (SUPPRESS_NOTIFICATIONS); see ``discord_thread_life``."""
    reference_id: int | None = None
    interaction_id: int | None = None
    webhook_id: int | None = None
    thread_id: int | None = None
    """The thread started from this message, if any."""
    edited_timestamp: dt.datetime | None = None
    deleted: bool = False
    deleted_t: float | None = None
    reactions: dict[str, set[int]] = field(default_factory=dict)
    history: list[MessageVersion] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def loading(self) -> bool:
        """A deferred interaction response still showing "thinking…"."""
        return bool(self.flags & 128)

    @property
    def visible(self) -> bool:
        """Seen by everyone in the channel: neither deleted nor ephemeral."""
        return not (self.deleted or self.ephemeral)

    @property
    def contents(self) -> list[str]:
        return [v.content for v in self.history]

    @property
    def edit_count(self) -> int:
        return max(0, len(self.history) - 1)


@dataclass(frozen=True)
class WriteRecord:
    """One successful message create/edit/delete touching a channel."""

    t: float
    channel_id: int
    message_id: int
    kind: str
    """``create``, ``edit`` or ``delete``."""
    via: str
    call_seq: int | None


@dataclass(frozen=True)
class DuplicateNonce:
    """A create that reused a nonce Discord had already turned into a message."""

    channel_id: int
    nonce: str
    message_id: int
    call_seq: int | None
    enforced: bool
    """With ``enforce_nonce`` Discord returns the first message instead of creating a second one."""


@dataclass(frozen=True)
class RateLimitViolation:
    """A request the per-channel write limit refused (a well-paced client causes none)."""

    t: float
    channel_id: int
    method: str
    path: str
    retry_after: float


@dataclass
class InteractionRecord:
    """An injected interaction and everything the bot did with it. Returned by the ``inject_*`` methods."""

    id: int
    token: str
    type: int
    """2 application command, 3 message component."""
    channel_id: int
    guild_id: int | None
    user_id: int
    t: float
    payload: dict[str, Any]
    command: str | None = None
    custom_id: str | None = None
    message_id: int | None = None
    """For components: the message the clicked component belongs to."""
    responses: list[dict[str, Any]] = field(default_factory=list)
    """Accepted callback bodies (``{"type": 5, "data": {...}}``); refused ones are only in the call log."""
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    late_callbacks: int = 0
    """Callbacks refused because they came after the acknowledgement deadline (Discord: 3 s)."""
    token_expired: bool = False

    @property
    def response_type(self) -> int | None:
        return self.responses[0]["type"] if self.responses else None

    @property
    def acknowledged(self) -> bool:
        return bool(self.responses)


@dataclass(frozen=True)
class TypingRecord:
    t: float
    channel_id: int
