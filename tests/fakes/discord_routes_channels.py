"""REST routes a bot calls with its token: users, the application, guilds, channels, messages, threads.

Errors use Discord's codes (10003 Unknown Channel, 10008 Unknown Message, 50005 editing another user's
message, 160004 thread already exists, …) so the bot sees the same ``discord.HTTPException`` subclasses.
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.discord_gateway import APPLICATION_FLAGS
from tests.fakes.discord_models import (
    INTENT_GUILD_MESSAGE_REACTIONS,
    INTENT_GUILDS,
    MESSAGEABLE_TYPES,
    PUBLIC_THREAD,
    FakeChannel,
    channel_payload,
    member_payload,
    role_payload,
    thread_member_payload,
    user_payload,
    utcnow,
)
from tests.fakes.discord_records import TypingRecord
from tests.fakes.discord_rest import Reply, RestApi, RestRequest
from tests.fakes.discord_state import FakeState
from tests.fakes.discord_thread_life import refuse_if_archived, require_thread_permission
from tests.fakes.discord_validation import ApiError, validate_thread_name

MANAGE_MESSAGES = 1 << 13
MANAGE_CHANNELS = 1 << 4
MANAGE_THREADS = 1 << 34
REACT = 1 << 6 | 1 << 16
"""Add Reactions and Read Message History."""
SEND_MESSAGES = 1 << 11
ATTACH_FILES = 1 << 15
SEND_MESSAGES_IN_THREADS = 1 << 38


class ChannelRoutes:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    def register(self, api: RestApi) -> None:
        add = api.add
        add("GET", "/gateway", self.gateway, auth=False)
        add("GET", "/gateway/bot", self.gateway_bot)
        add("GET", "/users/@me", self.me)
        add("POST", "/users/@me/channels", self.open_dm)
        add("GET", "/users/{user_id}", self.user)
        add("GET", "/oauth2/applications/@me", self.application)
        add("GET", "/applications/@me", self.application)
        add("GET", "/guilds/{guild_id}", self.guild)
        add("GET", "/guilds/{guild_id}/channels", self.guild_channels)
        add("GET", "/guilds/{guild_id}/roles", self.guild_roles)
        add("GET", "/guilds/{guild_id}/threads/active", self.active_threads)
        add("GET", "/guilds/{guild_id}/members/{user_id}", self.guild_member)
        add("GET", "/channels/{channel_id}", self.get_channel)
        add("PATCH", "/channels/{channel_id}", self.edit_channel)
        add("DELETE", "/channels/{channel_id}", self.delete_channel)
        add("GET", "/channels/{channel_id}/messages", self.list_messages)
        add("POST", "/channels/{channel_id}/messages", self.send_message, channel_write=True)
        add("POST", "/channels/{channel_id}/messages/bulk-delete", self.bulk_delete)
        add("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message)
        add("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message, channel_write=True)
        add("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message, channel_write=True)
        add("POST", "/channels/{channel_id}/typing", self.typing)
        reactions = "/channels/{channel_id}/messages/{message_id}/reactions"
        add("PUT", reactions + "/{emoji}/@me", self.add_reaction)
        add("DELETE", reactions + "/{emoji}/@me", self.remove_own_reaction)
        add("DELETE", reactions + "/{emoji}/{user_id}", self.remove_reaction)
        add("DELETE", reactions, self.clear_reactions)
        add("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.thread_from_message)
        add("POST", "/channels/{channel_id}/threads", self.thread_without_message)
        add("GET", "/channels/{channel_id}/thread-members", self.thread_members)
        add("PUT", "/channels/{channel_id}/thread-members/@me", self.join_thread)
        add("DELETE", "/channels/{channel_id}/thread-members/@me", self.leave_thread)
        add("PUT", "/channels/{channel_id}/thread-members/{user_id}", self.add_thread_member)
        add("DELETE", "/channels/{channel_id}/thread-members/{user_id}", self.remove_thread_member)

    # ---- users, application, gateway ---------------------------------------------------------------

    async def gateway(self, req: RestRequest) -> Reply:
        return Reply(body={"url": self.state.gateway_url})

    async def gateway_bot(self, req: RestRequest) -> Reply:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return Reply(
            body={
                "url": self.state.gateway_url,
                "shards": self.state.shard_count,
                "session_start_limit": limit,
            }
        )

    async def me(self, req: RestRequest) -> Reply:
        user = self.state.bot_user
        return Reply(
            body={
                **user_payload(user),
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "locale": "en-US",
            }
        )

    async def user(self, req: RestRequest) -> Reply:
        return Reply(body=user_payload(self.state.user(int(req.params["user_id"]))))

    async def open_dm(self, req: RestRequest) -> Reply:
        user = self.state.user(int(req.body.get("recipient_id") or 0))
        return Reply(body=channel_payload(self.state.open_dm(user)))

    async def application(self, req: RestRequest) -> Reply:
        state = self.state
        return Reply(
            body={
                "id": str(state.application_id),
                "name": state.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user_payload(state.app_owner),
                "team": None,
                "verify_key": "0" * 64,
                "flags": APPLICATION_FLAGS,
                "bot": user_payload(state.bot_user),
                "rpc_origins": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(state.guilds),
            }
        )

    # ---- guilds ------------------------------------------------------------------------------------

    async def guild(self, req: RestRequest) -> Reply:
        guild = self.state.guild(int(req.params["guild_id"]))
        return Reply(
            body={
                "id": str(guild.id),
                "name": guild.name,
                "icon": None,
                "owner_id": str(guild.owner_id or 0),
                "roles": [role_payload(r) for r in guild.roles],
                "emojis": [],
                "stickers": [],
                "features": [],
                "preferred_locale": guild.locale,
                "approximate_member_count": len(guild.members),
            }
        )

    async def guild_channels(self, req: RestRequest) -> Reply:
        guild = self.state.guild(int(req.params["guild_id"]))
        return Reply(body=[channel_payload(c) for c in guild.channels])

    async def guild_roles(self, req: RestRequest) -> Reply:
        guild = self.state.guild(int(req.params["guild_id"]))
        return Reply(body=[role_payload(r) for r in guild.roles])

    async def active_threads(self, req: RestRequest) -> Reply:
        guild = self.state.guild(int(req.params["guild_id"]))
        threads = [t for t in guild.threads if not t.archived]
        members = [
            thread_member_payload(t, self.state.bot_user.id)
            for t in threads
            if self.state.bot_user.id in t.member_ids
        ]
        return Reply(body={"threads": [channel_payload(t) for t in threads], "members": members})

    async def guild_member(self, req: RestRequest) -> Reply:
        guild = self.state.guild(int(req.params["guild_id"]))
        member = guild.find_member(int(req.params["user_id"]))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return Reply(body=member_payload(member))

    # ---- channels ----------------------------------------------------------------------------------

    async def get_channel(self, req: RestRequest) -> Reply:
        return Reply(body=channel_payload(self.state.channel(int(req.params["channel_id"]))))

    async def edit_channel(self, req: RestRequest) -> Reply:
        channel = self.state.channel(int(req.params["channel_id"]))
        body = req.body
        if "name" in body:
            validate_thread_name(body["name"])
            channel.name = body["name"]
        for key in ("topic", "nsfw", "rate_limit_per_user", "position"):
            if key in body and body[key] is not None:
                setattr(channel, key, body[key])
        if channel.is_thread:
            for key in ("archived", "locked", "invitable", "auto_archive_duration"):
                if key in body and body[key] is not None:
                    setattr(channel, key, body[key])
            if "archived" in body:
                channel.archive_timestamp = utcnow()
        self.state.dispatch_channel("THREAD_UPDATE" if channel.is_thread else "CHANNEL_UPDATE", channel)
        self.state.changed()
        return Reply(body=channel_payload(channel))

    async def delete_channel(self, req: RestRequest) -> Reply:
        channel = self.state.channel(int(req.params["channel_id"]))
        guild = self.state.guild_of(channel)
        # Discord: Manage Threads deletes a thread (its creator included), Manage Channels a channel.
        need = MANAGE_THREADS if channel.is_thread else MANAGE_CHANNELS
        if guild is not None and not guild.permissions_of(self.state.bot_member(guild)) & need:
            raise ApiError(403, 50013, "Missing Permissions")
        self.state.channels.pop(channel.id, None)
        if guild is not None:
            if channel in guild.threads:
                guild.threads.remove(channel)
            if channel in guild.channels:
                guild.channels.remove(channel)
        if channel.is_thread:
            data = {
                "id": str(channel.id),
                "guild_id": str(channel.guild_id),
                "parent_id": str(channel.parent_id),
                "type": channel.type,
            }
            self.state.dispatch("THREAD_DELETE", data, intent=INTENT_GUILDS)
        else:
            self.state.dispatch("CHANNEL_DELETE", channel_payload(channel), intent=INTENT_GUILDS)
        self.state.changed()
        return Reply(body=channel_payload(channel))

    # ---- messages ----------------------------------------------------------------------------------

    def _text_channel(self, req: RestRequest) -> FakeChannel:
        channel = self.state.channel(int(req.params["channel_id"]))
        if channel.type not in MESSAGEABLE_TYPES:
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        return channel

    async def list_messages(self, req: RestRequest) -> Reply:
        channel = self._text_channel(req)
        limit = int(req.query.get("limit", 50))
        if not 1 <= limit <= 100:
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "limit": {
                        "_errors": [
                            {"code": "NUMBER_TYPE_MAX", "message": "int value should be between 1 and 100."}
                        ]
                    }
                },
            )
        found = [m for m in self.state.channel_messages(channel.id) if m.visible]
        if "before" in req.query:
            found = [m for m in found if m.id < int(req.query["before"])]
        if "after" in req.query:
            found = [m for m in found if m.id > int(req.query["after"])]
            found = found[:limit]
        if "around" in req.query:
            around = int(req.query["around"])
            older = [m for m in found if m.id <= around][-(limit // 2 + limit % 2) :]
            newer = [m for m in found if m.id > around][: limit // 2]
            found = older + newer
        found = sorted(found, key=lambda m: m.id, reverse=True)[:limit]
        return Reply(body=[self.state.message_payload(m) for m in found])

    async def send_message(self, req: RestRequest) -> Reply:
        channel = self._text_channel(req)
        self._require_send_permission(channel, files=bool(req.files))
        record = self.state.create_message(
            channel, self.state.bot_user, req.body, req.files, via="channel", call_seq=req.seq
        )
        return Reply(body=self.state.message_payload(record))

    async def get_message(self, req: RestRequest) -> Reply:
        record = self.state.message(int(req.params["channel_id"]), int(req.params["message_id"]))
        if record.ephemeral:
            raise ApiError(404, 10008, "Unknown Message")
        return Reply(body=self.state.message_payload(record))

    async def edit_message(self, req: RestRequest) -> Reply:
        record = self.state.message(int(req.params["channel_id"]), int(req.params["message_id"]))
        if record.author.id != self.state.bot_user.id or record.webhook_id is not None:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        refuse_if_archived(self.state.channel(record.channel_id))
        self.state.edit_message(record, req.body, req.files, via="channel", call_seq=req.seq)
        return Reply(body=self.state.message_payload(record))

    async def delete_message(self, req: RestRequest) -> Reply:
        record = self.state.message(int(req.params["channel_id"]), int(req.params["message_id"]))
        self._require_delete_permission(record.author.id, record.channel_id)
        self.state.delete_message(record, via="channel", call_seq=req.seq)
        return Reply(204)

    async def bulk_delete(self, req: RestRequest) -> Reply:
        channel = self._text_channel(req)
        ids = req.body.get("messages") or []
        if not 2 <= len(ids) <= 100:
            raise ApiError(400, 50016, "You must provide at least 2 and fewer than 100 messages to delete")
        records = [self.state.message(channel.id, int(i)) for i in ids]
        for record in records:
            self._require_delete_permission(record.author.id, channel.id)
        for record in records:
            self.state.delete_message(record, via="channel", call_seq=req.seq)
        return Reply(204)

    def _require_send_permission(self, channel: FakeChannel, *, files: bool) -> None:
        """The bot's role (guild-level, as the fake models it) must allow the post: Send Messages (Send
        Messages in Threads in a thread), and Attach Files when it carries files."""
        guild = self.state.guild_of(channel)
        if guild is None:
            return
        have = guild.permissions_of(self.state.bot_member(guild))
        need = (SEND_MESSAGES_IN_THREADS if channel.is_thread else SEND_MESSAGES) | (
            ATTACH_FILES if files else 0
        )
        if have & need != need:
            raise ApiError(403, 50013, "Missing Permissions")

    def _require_delete_permission(self, author_id: int, channel_id: int) -> None:
        if author_id == self.state.bot_user.id:
            return
        guild = self.state.guild_of(self.state.channel(channel_id))
        if guild is None or not guild.permissions_of(self.state.bot_member(guild)) & MANAGE_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")

    async def typing(self, req: RestRequest) -> Reply:
        channel = self._text_channel(req)
        self.state.typing.append(TypingRecord(time.monotonic(), channel.id))
        self.state.changed()
        return Reply(204)

    # ---- reactions ---------------------------------------------------------------------------------

    def _react(self, req: RestRequest, user_id: int, add: bool) -> Reply:
        record = self.state.message(int(req.params["channel_id"]), int(req.params["message_id"]))
        emoji = req.params["emoji"]
        users = record.reactions.setdefault(emoji, set())
        (users.add if add else users.discard)(user_id)
        name, _, emoji_id = emoji.partition(":")
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(record.channel_id),
            "message_id": str(record.id),
            "emoji": {"id": emoji_id or None, "name": name},
            "burst": False,
            "type": 0,
        }
        if record.guild_id is not None:
            data["guild_id"] = str(record.guild_id)
        event = "MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE"
        self.state.dispatch(event, data, intent=INTENT_GUILD_MESSAGE_REACTIONS)
        self.state.changed()
        return Reply(204)

    async def add_reaction(self, req: RestRequest) -> Reply:
        channel = self.state.channel(int(req.params["channel_id"]))
        refuse_if_archived(channel)
        guild = self.state.guild_of(channel)  # Discord: Read Message History, and Add Reactions for a new one
        if guild is not None and ~guild.permissions_of(self.state.bot_member(guild)) & REACT:
            raise ApiError(403, 50013, "Missing Permissions")
        return self._react(req, self.state.bot_user.id, True)

    async def remove_own_reaction(self, req: RestRequest) -> Reply:
        return self._react(req, self.state.bot_user.id, False)

    async def remove_reaction(self, req: RestRequest) -> Reply:
        return self._react(req, int(req.params["user_id"]), False)

    async def clear_reactions(self, req: RestRequest) -> Reply:
        record = self.state.message(int(req.params["channel_id"]), int(req.params["message_id"]))
        record.reactions.clear()
        self.state.changed()
        return Reply(204)

    # ---- threads -----------------------------------------------------------------------------------

    async def thread_from_message(self, req: RestRequest) -> Reply:
        parent = self.state.channel(int(req.params["channel_id"]))
        message = self.state.message(parent.id, int(req.params["message_id"]))
        body = req.body
        require_thread_permission(self.state, parent, PUBLIC_THREAD)
        thread = self.state.start_thread(
            parent,
            name=body.get("name"),
            owner=self.state.bot_user,
            thread_type=None,
            from_message=message,
            auto_archive_duration=body.get("auto_archive_duration"),
            rate_limit_per_user=body.get("rate_limit_per_user"),
            call_seq=req.seq,
        )
        return Reply(201, channel_payload(thread))

    async def thread_without_message(self, req: RestRequest) -> Reply:
        parent = self.state.channel(int(req.params["channel_id"]))
        body = req.body
        if req.query.get("use_nested_fields") or "message" in body:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        require_thread_permission(self.state, parent, body.get("type"))
        thread = self.state.start_thread(
            parent,
            name=body.get("name"),
            owner=self.state.bot_user,
            thread_type=body.get("type"),
            auto_archive_duration=body.get("auto_archive_duration"),
            invitable=body.get("invitable", True),
            rate_limit_per_user=body.get("rate_limit_per_user"),
            call_seq=req.seq,
        )
        return Reply(201, channel_payload(thread))

    def _thread(self, req: RestRequest) -> FakeChannel:
        channel = self.state.channel(int(req.params["channel_id"]))
        if not channel.is_thread:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        return channel

    async def thread_members(self, req: RestRequest) -> Reply:
        thread = self._thread(req)
        return Reply(body=[thread_member_payload(thread, uid) for uid in sorted(thread.member_ids)])

    def _membership(self, thread: FakeChannel, user_id: int, join: bool) -> Reply:
        if join:
            self.state.user(user_id)
            thread.member_ids.add(user_id)
        else:
            thread.member_ids.discard(user_id)
        self.state.changed()
        return Reply(204)

    async def join_thread(self, req: RestRequest) -> Reply:
        return self._membership(self._thread(req), self.state.bot_user.id, True)

    async def leave_thread(self, req: RestRequest) -> Reply:
        return self._membership(self._thread(req), self.state.bot_user.id, False)

    async def add_thread_member(self, req: RestRequest) -> Reply:
        refuse_if_archived(self._thread(req))
        return self._membership(self._thread(req), int(req.params["user_id"]), True)

    async def remove_thread_member(self, req: RestRequest) -> Reply:
        return self._membership(self._thread(req), int(req.params["user_id"]), False)
