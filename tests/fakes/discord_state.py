"""The fake Discord's world: guilds, channels, messages and the records, plus the operations that change them.

REST handlers and test injections go through the same operations (create/edit/delete a message, start a
thread), so a message the bot sends and one a test injects are stored, validated and dispatched alike.
Every change wakes :meth:`FakeState.wait_for`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tests.fakes.discord_models import (
    BOT_PERMISSIONS,
    DM,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    MESSAGEABLE_TYPES,
    NEWS,
    NEWS_THREAD,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    TEXT,
    THREAD_TYPES,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    channel_payload,
    new_snowflake,
    thread_member_payload,
    utcnow,
)
from tests.fakes.discord_payloads import (
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    MESSAGE_THREAD_CREATED,
    message_payload,
)
from tests.fakes.discord_records import (
    DuplicateNonce,
    InteractionRecord,
    MessageRecord,
    MessageVersion,
    RateLimitViolation,
    RecordedFile,
    RestCall,
    StoredAttachment,
    TypingRecord,
    WriteRecord,
)
from tests.fakes.discord_thread_life import notify_on_create
from tests.fakes.discord_validation import (
    ApiError,
    require_not_empty,
    validate_message_body,
    validate_thread_name,
)

MAX_REQUEST_BYTES = 25 * 2**20
"""Discord's Create Message: "The maximum request size when sending a message is 25 MiB" (files counted)."""
USER_MENTION = re.compile(r"<@!?(\d+)>")
ROLE_MENTION = re.compile(r"<@&(\d+)>")
EVERYONE_MENTION = re.compile(r"@(everyone|here)\b")
WAIT_TICK = 0.05
"""Seconds between checks of a waited-for condition when the fake sees no change."""


class Dispatcher(Protocol):
    """The gateway's entry point; the state calls it for every event a connected client should get."""

    def __call__(
        self, event: str, data: dict[str, Any], *, intent: int, needs_content_intent: bool = False
    ) -> None: ...


def _no_dispatch(
    event: str, data: dict[str, Any], *, intent: int, needs_content_intent: bool = False
) -> None:
    return None


def unknown_channel() -> ApiError:
    return ApiError(404, 10003, "Unknown Channel")


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


class FakeState:
    def __init__(
        self,
        *,
        guilds: Iterable[FakeGuild],
        bot_user: FakeUser,
        bot_permissions: int = BOT_PERMISSIONS,
        attachment_size_limit: int = 10 * 1024 * 1024,
    ) -> None:
        self.bot_user = bot_user
        self.application_id = bot_user.id
        self.app_owner = FakeUser("app-owner")
        self.gateway_url = ""
        self.shard_count = 1
        """What GET /gateway/bot recommends (``FakeDiscord(shard_count=)``)."""
        self.attachment_size_limit = attachment_size_limit
        self.base_url = ""
        self.dispatch: Dispatcher = _no_dispatch
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.users: dict[int, FakeUser] = {bot_user.id: bot_user, self.app_owner.id: self.app_owner}
        self.messages: dict[int, MessageRecord] = {}
        self.calls: list[RestCall] = []
        self.writes: list[WriteRecord] = []
        self.duplicates: list[DuplicateNonce] = []
        self.violations: list[RateLimitViolation] = []
        self.typing: list[TypingRecord] = []
        self.interactions: dict[int, InteractionRecord] = {}
        self.interactions_by_token: dict[str, InteractionRecord] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.loose_attachments: dict[int, StoredAttachment] = {}
        """Attachments not (yet) in a message: attachment options of injected slash commands."""
        self.attachment_downloads = 0
        """Requests for attachment bytes, counted when they arrive (before :attr:`attachment_gate`)."""
        self.attachment_gate: asyncio.Event | None = None
        """When set to an unset event, attachment downloads wait for it (a slow CDN: a test kills the bot
        mid-download)."""
        self.internal_errors: list[str] = []
        """Exceptions inside the fake's own handlers: a bug in the fake, re-raised when it stops."""
        self._nonces: dict[tuple[int, str], int] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self.on_change: list[Callable[[], None]] = []
        """Called at once on every change, inside the request that made it (before its answer is sent):
        a test that must act at an exact moment (kill the bot as a message lands) does it here."""
        for guild in guilds:
            self.add_guild(guild, bot_permissions)

    # ---- world -------------------------------------------------------------------------------------

    def add_guild(self, guild: FakeGuild, bot_permissions: int = BOT_PERMISSIONS) -> None:
        if guild.id in self.guilds:
            raise ValueError(f"guild {guild.name!r} ({guild.id}) was given twice")
        if guild.find_member(self.bot_user.id) is None:
            role = FakeRole(self.bot_user.username, bot_permissions, position=len(guild.roles), managed=True)
            role.bot_id = self.bot_user.id
            guild.roles.append(role)
            guild.members.append(FakeMember(self.bot_user, [role.id]))
        self.guilds[guild.id] = guild
        for member in guild.members:
            self.users.setdefault(member.id, member.user)
        for channel in (*guild.channels, *guild.threads):
            channel.guild_id = guild.id
            self.channels[channel.id] = channel

    def channel(self, channel_id: int) -> FakeChannel:
        try:
            return self.channels[int(channel_id)]
        except (KeyError, ValueError):
            raise unknown_channel() from None

    def guild_of(self, channel: FakeChannel) -> FakeGuild | None:
        return self.guilds.get(channel.guild_id) if channel.guild_id is not None else None

    def guild(self, guild_id: int) -> FakeGuild:
        try:
            return self.guilds[int(guild_id)]
        except (KeyError, ValueError):
            raise ApiError(404, 10004, "Unknown Guild") from None

    def message(self, channel_id: int, message_id: int) -> MessageRecord:
        try:
            record = self.messages[int(message_id)]
        except (KeyError, ValueError):
            raise unknown_message() from None
        if record.channel_id != int(channel_id) or record.deleted:
            raise unknown_message()
        return record

    def bot_member(self, guild: FakeGuild) -> FakeMember:
        member = guild.find_member(self.bot_user.id)
        assert member is not None, "every guild gets the bot member in add_guild"
        return member

    def user(self, user_id: int) -> FakeUser:
        try:
            return self.users[int(user_id)]
        except (KeyError, ValueError):
            raise ApiError(404, 10013, "Unknown User") from None

    # ---- change notification -------------------------------------------------------------------------

    def changed(self) -> None:
        for hook in [*self.on_change]:
            hook()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[], Any], *, within: float, what: str) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked after every change); returns its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n".join(f"  {c.status} {c.method} {c.path}" for c in self.calls[-8:]) or "  (none)"
                raise TimeoutError(
                    f"fake Discord: timed out after {within}s waiting for {what}; last REST calls:\n{recent}"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            # A change can come from any task; also re-check on a tick so predicates on other things (the
            # scripted model's requests, the bot's own state: wait_idle) work. 27 of 157 waits in three e2e
            # files (test_e2e_threads, test_blackbox_bot_qa2, test_e2e_config) were met only at a tick:
            # each lost half a tick on average, 0.125 s at the 0.25 s tick this was; now 0.025 s.
            await asyncio.wait([waiter], timeout=min(remaining, WAIT_TICK))
            if not waiter.done():
                self._waiters.remove(waiter)

    # ---- payloads ----------------------------------------------------------------------------------

    def message_payload(self, message: MessageRecord, *, gateway: bool = False) -> dict[str, Any]:
        return message_payload(self, message, gateway=gateway)

    # ---- messages ----------------------------------------------------------------------------------

    def create_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        body: dict[str, Any],
        uploads: list[RecordedFile] | None = None,
        *,
        via: str,
        call_seq: int | None = None,
        message_type: int | None = None,
        interaction: InteractionRecord | None = None,
        webhook_id: int | None = None,
        allow_ephemeral: bool = False,
        allow_empty: bool = False,
        mention_ids: list[int] | None = None,
        extra_flags: int = 0,
    ) -> MessageRecord:
        """Validate, store and announce a new message. Raises :class:`ApiError` as Discord would refuse it."""
        if channel.type not in MESSAGEABLE_TYPES:
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        uploads = uploads or []
        validate_message_body(body, allow_ephemeral=allow_ephemeral)
        nonce = body.get("nonce")
        nonce = str(nonce) if nonce is not None else None
        if nonce is not None and (author.id, nonce) in self._nonces:
            first = self.messages[self._nonces[(author.id, nonce)]]
            enforced = bool(body.get("enforce_nonce"))
            self.duplicates.append(DuplicateNonce(channel.id, nonce, first.id, call_seq, enforced))
            if enforced:
                self.changed()
                return first
        attachments = self._attachments(body, uploads, existing=[])
        if not allow_empty:
            require_not_empty({**body, "attachments": attachments})
        self._unarchive_for_write(channel)
        reference_id = self._reply_target(channel, body)
        guild = self.guild_of(channel)
        now = utcnow()
        record = MessageRecord(
            id=new_snowflake(),
            channel_id=channel.id,
            guild_id=guild.id if guild else None,
            author=author,
            content=body.get("content") or "",
            via=via,
            t=time.monotonic(),
            timestamp=now,
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            attachments=attachments,
            flags=int(body.get("flags") or 0) | extra_flags,
            tts=bool(body.get("tts")),
            nonce=nonce,
            allowed_mentions=body.get("allowed_mentions"),
            reference_id=reference_id,
            interaction_id=interaction.id if interaction else None,
            webhook_id=webhook_id,
        )
        if message_type is None:
            message_type = MESSAGE_REPLY if reference_id is not None else MESSAGE_DEFAULT
        record.type = message_type
        self._resolve_mentions(record, guild, explicit_users=mention_ids)
        record.pinged_user_ids = list(record.mention_ids)
        record.pinged_role_ids = list(record.mention_role_ids)
        record.pinged_everyone = record.mention_everyone
        notify_on_create(self, record, channel)
        self.messages[record.id] = record
        if nonce is not None:
            self._nonces[(author.id, nonce)] = record.id
        self._snapshot(record, via)
        if not record.ephemeral:
            channel.last_message_id = record.id
            if channel.is_thread:
                channel.message_count += 1
                channel.total_message_sent += 1
        self.writes.append(WriteRecord(record.t, channel.id, record.id, "create", via, call_seq))
        if not record.ephemeral:
            self._dispatch_message("MESSAGE_CREATE", record, channel)
        self.changed()
        return record

    def edit_message(
        self,
        record: MessageRecord,
        body: dict[str, Any],
        uploads: list[RecordedFile] | None = None,
        *,
        via: str,
        call_seq: int | None = None,
        allow_ephemeral: bool = False,
        clear_loading: bool = False,
    ) -> MessageRecord:
        uploads = uploads or []
        validate_message_body(body, allow_ephemeral=allow_ephemeral or record.ephemeral)
        channel = self.channel(record.channel_id)
        if "content" in body:
            record.content = body["content"] or ""
        if "embeds" in body:
            record.embeds = list(body["embeds"] or [])
        if "components" in body:
            record.components = list(body["components"] or [])
        if "attachments" in body or uploads:
            record.attachments = self._attachments(body, uploads, existing=record.attachments)
        if "flags" in body and body["flags"] is not None:
            # Only SUPPRESS_EMBEDS may change on edit; EPHEMERAL and LOADING are Discord's to set.
            record.flags = (record.flags & ~4) | (int(body["flags"]) & 4)
        if clear_loading:
            record.flags &= ~128
        if "allowed_mentions" in body:
            record.allowed_mentions = body["allowed_mentions"]
        if not record.loading:
            require_not_empty(
                {
                    "content": record.content,
                    "embeds": record.embeds,
                    "attachments": record.attachments,
                    "components": record.components,
                }
            )
        record.edited_timestamp = utcnow()
        self._resolve_mentions(record, self.guild_of(channel))
        self._snapshot(record, via)
        self.writes.append(WriteRecord(time.monotonic(), record.channel_id, record.id, "edit", via, call_seq))
        if not record.ephemeral:
            self._dispatch_message("MESSAGE_UPDATE", record, channel)
        self.changed()
        return record

    def delete_message(self, record: MessageRecord, *, via: str, call_seq: int | None = None) -> None:
        record.deleted = True
        record.deleted_t = time.monotonic()
        self.writes.append(
            WriteRecord(record.deleted_t, record.channel_id, record.id, "delete", via, call_seq)
        )
        if not record.ephemeral:
            data: dict[str, Any] = {"id": str(record.id), "channel_id": str(record.channel_id)}
            if record.guild_id is not None:
                data["guild_id"] = str(record.guild_id)
            self.dispatch(
                "MESSAGE_DELETE", data, intent=self._message_intent(self.channel(record.channel_id))
            )
        self.changed()

    def _snapshot(self, record: MessageRecord, via: str) -> None:
        record.history.append(
            MessageVersion(
                t=time.monotonic(),
                content=record.content,
                embeds=list(record.embeds),
                components=list(record.components),
                attachments=[a.filename for a in record.attachments],
                flags=record.flags,
                allowed_mentions=record.allowed_mentions,
                via=via,
            )
        )

    def _attachments(
        self, body: dict[str, Any], uploads: list[RecordedFile], *, existing: list[StoredAttachment]
    ) -> list[StoredAttachment]:
        for upload in uploads:
            if len(upload.data) > self.attachment_size_limit:
                raise ApiError(413, 40005, "Request entity too large")
        if sum(len(u.data) for u in uploads) > MAX_REQUEST_BYTES:  # Discord: "at most 25 MiB" a message
            raise ApiError(413, 40005, "Request entity too large")
        by_index = {}
        for upload in uploads:
            match = re.fullmatch(r"files\[(\d+)\]", upload.field)
            by_index[match.group(1) if match else upload.field] = upload
        if "attachments" not in body:
            return [*existing, *(self._store(u, None) for u in uploads)]
        kept = {str(a.id): a for a in existing}
        result: list[StoredAttachment] = []
        for entry in body.get("attachments") or []:
            key = str(entry.get("id"))
            if key in kept:
                result.append(kept[key])
            elif key in by_index:
                result.append(self._store(by_index.pop(key), entry))
            else:
                raise ApiError(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "attachments": {
                            "_errors": [
                                {"code": "ATTACHMENT_NOT_FOUND", "message": f"Unknown attachment {key}"}
                            ]
                        }
                    },
                )
        return result

    @staticmethod
    def _store(upload: RecordedFile, entry: dict[str, Any] | None) -> StoredAttachment:
        entry = entry or {}
        return StoredAttachment(
            id=new_snowflake(),
            filename=entry.get("filename") or upload.filename,
            data=upload.data,
            content_type=upload.content_type,
            description=entry.get("description"),
        )

    def _reply_target(self, channel: FakeChannel, body: dict[str, Any]) -> int | None:
        reference = body.get("message_reference")
        if not reference or reference.get("message_id") is None:
            return None
        target = self.messages.get(int(reference["message_id"]))
        if (
            target is None
            or target.deleted
            or target.channel_id != int(reference.get("channel_id") or channel.id)
        ):
            if reference.get("fail_if_not_exists", True):
                raise ApiError(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "message_reference": {
                            "_errors": [
                                {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}
                            ]
                        }
                    },
                )
            return None
        return target.id

    def _resolve_mentions(
        self, record: MessageRecord, guild: FakeGuild | None, *, explicit_users: list[int] | None = None
    ) -> None:
        """Work out who actually gets pinged: mentions in the text, filtered by ``allowed_mentions``."""
        content = record.content
        users = (
            [int(u) for u in USER_MENTION.findall(content)]
            if explicit_users is None
            else list(explicit_users)
        )
        roles = [int(r) for r in ROLE_MENTION.findall(content)]
        everyone = bool(EVERYONE_MENTION.search(content))
        allowed = record.allowed_mentions
        if allowed is not None:
            parse = set(allowed.get("parse") or [])
            allowed_users = {int(u) for u in allowed.get("users") or []}
            allowed_roles = {int(r) for r in allowed.get("roles") or []}
            users = [u for u in users if "users" in parse or u in allowed_users]
            roles = [r for r in roles if "roles" in parse or r in allowed_roles]
            everyone = everyone and "everyone" in parse
            replied = allowed.get("replied_user", False)
        else:
            replied = True
        if record.reference_id is not None and replied:
            target = self.messages.get(record.reference_id)
            if target is not None and target.author.id not in users:
                users.append(target.author.id)
        known_roles = {r.id for r in guild.roles} if guild else set()
        record.mention_ids = list(dict.fromkeys(u for u in users if u in self.users))
        record.mention_role_ids = [r for r in dict.fromkeys(roles) if r in known_roles]
        record.mention_everyone = everyone

    def _message_intent(self, channel: FakeChannel) -> int:
        return INTENT_DIRECT_MESSAGES if channel.type == DM else INTENT_GUILD_MESSAGES

    def _dispatch_message(self, event: str, record: MessageRecord, channel: FakeChannel) -> None:
        needs_content_intent = not (
            channel.type == DM
            or record.author.id == self.bot_user.id
            or self.bot_user.id in record.mention_ids
        )
        self.dispatch(
            event,
            self.message_payload(record, gateway=True),
            intent=self._message_intent(channel),
            needs_content_intent=needs_content_intent,
        )

    def _unarchive_for_write(self, channel: FakeChannel) -> None:
        if not channel.is_thread or not channel.archived:
            return
        if channel.locked:
            raise ApiError(400, 50083, "Thread is archived")
        channel.archived = False
        channel.archive_timestamp = utcnow()
        self.dispatch_channel("THREAD_UPDATE", channel)

    # ---- threads and channels ----------------------------------------------------------------------

    def dispatch_channel(self, event: str, channel: FakeChannel, **extra: Any) -> None:
        self.dispatch(event, {**channel_payload(channel), **extra}, intent=INTENT_GUILDS)

    def start_thread(
        self,
        parent: FakeChannel,
        *,
        name: Any,
        owner: FakeUser,
        thread_type: int | None,
        from_message: MessageRecord | None = None,
        auto_archive_duration: int | None = None,
        invitable: bool = True,
        rate_limit_per_user: int | None = None,
        via: str = "channel",
        call_seq: int | None = None,
    ) -> FakeChannel:
        """Create a thread the way Discord does, and dispatch THREAD_CREATE (without it discord.py never
        caches the thread and later messages in it arrive with a ``PartialMessageable`` channel)."""
        guild = self.guild_of(parent)
        if guild is None or parent.type not in (TEXT, NEWS):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        validate_thread_name(name)
        if auto_archive_duration is not None and auto_archive_duration not in (60, 1440, 4320, 10080):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "auto_archive_duration": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_CHOICES",
                                "message": "Value must be one of {60, 1440, 4320, 10080}.",
                            }
                        ]
                    }
                },
            )
        if from_message is not None:
            if from_message.thread_id is not None:
                raise ApiError(400, 160004, "A thread has already been created for this message")
            thread_type = NEWS_THREAD if parent.type == NEWS else PUBLIC_THREAD
        elif thread_type not in THREAD_TYPES:
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "type": {
                        "_errors": [{"code": "BASE_TYPE_REQUIRED", "message": "type must be 10, 11 or 12"}]
                    }
                },
            )
        elif (thread_type == NEWS_THREAD) != (parent.type == NEWS):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        thread = FakeChannel(
            name,
            thread_type,
            id=from_message.id if from_message is not None else new_snowflake(),
            parent_id=parent.id,
            owner_id=owner.id,
            guild_id=guild.id,
            auto_archive_duration=auto_archive_duration or 1440,
            invitable=invitable if thread_type == PRIVATE_THREAD else True,
            rate_limit_per_user=rate_limit_per_user or 0,
        )
        thread.member_ids.add(owner.id)
        guild.threads.append(thread)
        self.channels[thread.id] = thread
        if from_message is not None:
            from_message.thread_id = thread.id
        self.dispatch_channel(
            "THREAD_CREATE", thread, newly_created=True, member=thread_member_payload(thread, owner.id)
        )
        if from_message is None and thread_type == PUBLIC_THREAD:
            # Discord announces a public thread started without a message in its parent channel.
            notice = self.create_message(
                parent,
                owner,
                {"content": name},
                via="system",
                call_seq=call_seq,
                message_type=MESSAGE_THREAD_CREATED,
            )
            notice.thread_id = thread.id
        self.changed()
        return thread

    def open_dm(self, user: FakeUser) -> FakeChannel:
        for channel in self.channels.values():
            if channel.type == DM and channel.recipients and channel.recipients[0].id == user.id:
                return channel
        channel = FakeChannel(user.username, DM, recipients=[user])
        self.channels[channel.id] = channel
        return channel

    # ---- queries -----------------------------------------------------------------------------------

    def channel_messages(self, channel_id: int) -> list[MessageRecord]:
        return [m for m in self.messages.values() if m.channel_id == channel_id]
