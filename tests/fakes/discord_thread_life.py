"""What Discord does around a thread's life that the bot's manners depend on (issue 20).

* **Who is notified.** Discord notifies a thread's members of each new message (their default for a
  thread they joined) and the users a message pings, except when the message carries
  SUPPRESS_NOTIFICATIONS (``1 << 12``, discord.py's ``silent=True``); an edit notifies nobody. Posting
  in a thread joins its author to it. :func:`notify_on_create` records that as
  ``MessageRecord.notified_user_ids``.
* **Thread permissions.** Creating a thread needs Create Public Threads or Create Private Threads in
  the parent (403 50013 otherwise), checked against the bot's role permissions.
* **Archived and locked threads.** A send to an archived thread reopens it (unless locked: 400 50083);
  an edit, a reaction or adding a member to an archived thread is refused with 50083.
* **Members' actions.** Archiving, locking or deleting a thread dispatches THREAD_UPDATE or
  THREAD_DELETE to the bot (:func:`close_thread`, :func:`delete_thread`).
* **The global rate limit.** About 50 requests per second per bot token across all routes except
  interaction callbacks and webhooks; past it Discord answers 429 with ``global: true``
  (:class:`GlobalLimit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.discord_limits import ChannelWriteLimiter, rate_limited_body, rate_limited_headers
from tests.fakes.discord_models import INTENT_GUILDS, PRIVATE_THREAD, FakeChannel, channel_payload, utcnow
from tests.fakes.discord_validation import ApiError

if TYPE_CHECKING:
    from tests.fakes.discord_records import MessageRecord
    from tests.fakes.discord_state import FakeState

SUPPRESS_NOTIFICATIONS = 1 << 12
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
ADMINISTRATOR = 1 << 3


def notify_on_create(state: FakeState, record: MessageRecord, channel: FakeChannel) -> None:
    """Who a new message notifies, and the author joining the thread they post in."""
    if channel.is_thread:
        channel.member_ids.add(record.author.id)
    if record.flags & SUPPRESS_NOTIFICATIONS or record.ephemeral:
        record.notified_user_ids = []
        return
    who = list(record.pinged_user_ids)
    if channel.is_thread:
        who += [u for u in sorted(channel.member_ids) if u not in who]
    record.notified_user_ids = [u for u in who if u != record.author.id]


def require_thread_permission(state: FakeState, parent: FakeChannel, thread_type: int | None) -> None:
    guild = state.guild_of(parent)
    if guild is None:
        return
    perms = guild.permissions_of(state.bot_member(guild))
    need = CREATE_PRIVATE_THREADS if thread_type == PRIVATE_THREAD else CREATE_PUBLIC_THREADS
    if not perms & (need | ADMINISTRATOR):
        raise ApiError(403, 50013, "Missing Permissions")


def refuse_if_archived(channel: FakeChannel) -> None:
    """Edits, reactions and new members in an archived thread: refused, as on Discord."""
    if channel.is_thread and channel.archived:
        raise ApiError(400, 50083, "Thread is archived")


def close_thread(
    state: FakeState, thread: FakeChannel, *, archived: bool = True, locked: bool = False
) -> None:
    """A member archives (and maybe locks) a thread."""
    thread.archived = archived
    thread.locked = locked
    thread.archive_timestamp = utcnow()
    state.dispatch_channel("THREAD_UPDATE", thread)
    state.changed()


def delete_thread(state: FakeState, thread: FakeChannel) -> None:
    """A member deletes a thread (or a channel): gone from the guild, THREAD_DELETE (CHANNEL_DELETE)
    dispatched."""
    guild = state.guild_of(thread)
    state.channels.pop(thread.id, None)
    if not thread.is_thread:
        if guild is not None and thread in guild.channels:
            guild.channels.remove(thread)
        state.dispatch("CHANNEL_DELETE", channel_payload(thread), intent=INTENT_GUILDS)
        state.changed()
        return
    if guild is not None and thread in guild.threads:
        guild.threads.remove(thread)
    data = {
        "id": str(thread.id),
        "guild_id": str(thread.guild_id),
        "parent_id": str(thread.parent_id),
        "type": thread.type,
    }
    state.dispatch("THREAD_DELETE", data, intent=INTENT_GUILDS)
    state.changed()


@dataclass
class GlobalLimit:
    """Discord's per-bot global limit: ``limit`` requests per ``per`` seconds over every bot-token route."""

    limit: int = 50
    per: float = 1.0
    violations: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, method, path) of each request refused."""

    def __post_init__(self) -> None:
        self._window = ChannelWriteLimiter(self.limit, self.per)

    def check(self, t: float, method: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """None if the request may go; else the 429 to answer."""
        decision = self._window.acquire(0)
        if decision.allowed:
            return None
        self.violations.append((t, method, path))
        headers = {
            **rate_limited_headers(decision.retry_after, scope="global", via=True),
            "X-RateLimit-Global": "true",
        }
        return 429, rate_limited_body(decision.retry_after, is_global=True), headers
