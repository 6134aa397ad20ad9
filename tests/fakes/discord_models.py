"""Guild configuration for the fake Discord: users, roles, members, channels, threads, and their JSON.

These are the objects a test builds before starting :class:`~tests.fakes.discord_server.FakeDiscord`
(and may keep reading afterwards: the fake mutates them as threads are created, messages counted,
members join threads). Payload functions return the JSON shapes Discord sends, complete enough for
discord.py 2.7 to build its models without ``KeyError``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import discord

DISCORD_EPOCH_MS = 1420070400000

# Channel types (https://discord.com/developers/docs/resources/channel#channel-object-channel-types).
TEXT, DM, VOICE, CATEGORY, NEWS, NEWS_THREAD, PUBLIC_THREAD, PRIVATE_THREAD, FORUM = (
    0,
    1,
    2,
    4,
    5,
    10,
    11,
    12,
    15,
)
THREAD_TYPES = frozenset({NEWS_THREAD, PUBLIC_THREAD, PRIVATE_THREAD})
MESSAGEABLE_TYPES = frozenset({TEXT, DM, VOICE, NEWS, *THREAD_TYPES})

# Gateway intents the fake honours when it decides who receives what.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_GUILD_MESSAGE_TYPING = 1 << 11
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
    add_reactions=True,
    embed_links=True,
    attach_files=True,
    use_application_commands=True,
).value
"""What @everyone may do in a freshly made server (roughly Discord's defaults)."""

BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    create_private_threads=True,
    manage_threads=True,
    manage_messages=True,
    read_message_history=True,
    add_reactions=True,
    embed_links=True,
    attach_files=True,
    use_application_commands=True,
).value
"""What the bot's managed role grants: what an invite link for a thread-creating bot asks for."""

ALL_PERMISSIONS = discord.Permissions.all().value
ADMINISTRATOR = discord.Permissions(administrator=True).value

_snowflake_lock = threading.Lock()
_last_snowflake = 0
_counter = itertools.count(1)


def new_snowflake() -> int:
    """A Discord id for *now*: strictly increasing, with a real timestamp in the top bits.

    Real timestamps matter: discord.py derives ``created_at`` and picks the delete sub-bucket
    (``sub-10-seconds``) from the id.
    """
    global _last_snowflake
    with _snowflake_lock:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        _last_snowflake = max(_last_snowflake + 1, candidate)
        return _last_snowflake


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class FakeUser:
    username: str
    id: int = field(default_factory=new_snowflake)
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class FakeRole:
    name: str
    permissions: int = 0
    id: int = field(default_factory=new_snowflake)
    position: int = 1
    mentionable: bool = False
    managed: bool = False
    bot_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"


@dataclass
class FakeMember:
    user: FakeUser
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: dt.datetime = field(default_factory=utcnow)

    @property
    def id(self) -> int:
        return self.user.id


@dataclass
class FakeChannel:
    """A guild channel, a thread (``type`` 10/11/12 with ``parent_id``), or a DM (``type`` 1)."""

    name: str
    type: int = TEXT
    id: int = field(default_factory=new_snowflake)
    parent_id: int | None = None
    topic: str | None = None
    position: int = 0
    nsfw: bool = False
    rate_limit_per_user: int = 0
    permission_overwrites: list[dict[str, Any]] = field(default_factory=list)
    guild_id: int | None = None
    last_message_id: int | None = None
    # Threads only.
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    auto_archive_duration: int = 1440
    created_at: dt.datetime = field(default_factory=utcnow)
    archive_timestamp: dt.datetime = field(default_factory=utcnow)
    message_count: int = 0
    total_message_sent: int = 0
    member_ids: set[int] = field(default_factory=set)
    # DMs only.
    recipients: list[FakeUser] = field(default_factory=list)

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"


@dataclass
class FakeGuild:
    """A server. Build it with the ``add_*`` helpers (or :meth:`create`) before the fake starts."""

    name: str = "Test Guild"
    id: int = field(default_factory=new_snowflake)
    owner_id: int | None = None
    roles: list[FakeRole] = field(default_factory=list)
    members: list[FakeMember] = field(default_factory=list)
    channels: list[FakeChannel] = field(default_factory=list)
    threads: list[FakeChannel] = field(default_factory=list)
    everyone_permissions: int = EVERYONE_PERMISSIONS
    locale: str = "en-US"

    def __post_init__(self) -> None:
        if not any(r.id == self.id for r in self.roles):
            # @everyone's id is the guild's id; discord.py relies on it (guild.default_role).
            self.roles.insert(0, FakeRole("@everyone", self.everyone_permissions, id=self.id, position=0))

    @classmethod
    def create(
        cls,
        name: str = "Test Guild",
        *,
        channels: tuple[str, ...] = ("general",),
        members: tuple[str, ...] = ("alice", "bob"),
        admins: tuple[str, ...] = ("admin",),
    ) -> FakeGuild:
        """A ready-made server: text channels, plain members, and admins (an Admin role)."""
        guild = cls(name=name)
        for channel in channels:
            guild.add_text_channel(channel)
        admin_role = guild.add_role("Admin", ADMINISTRATOR) if admins else None
        for admin in admins:
            guild.add_member(admin, roles=[admin_role] if admin_role else [])
        for member in members:
            guild.add_member(member)
        if guild.owner_id is None and guild.members:
            guild.owner_id = guild.members[0].id
        return guild

    @property
    def everyone(self) -> FakeRole:
        return self.roles[0]

    def add_role(self, name: str, permissions: int = 0, *, mentionable: bool = False) -> FakeRole:
        role = FakeRole(name, permissions, position=len(self.roles), mentionable=mentionable)
        self.roles.append(role)
        return role

    def add_category(self, name: str) -> FakeChannel:
        return self._add_channel(FakeChannel(name, CATEGORY))

    def add_text_channel(
        self, name: str, *, category: FakeChannel | None = None, topic: str | None = None
    ) -> FakeChannel:
        return self._add_channel(
            FakeChannel(name, TEXT, parent_id=category.id if category else None, topic=topic)
        )

    def add_voice_channel(self, name: str) -> FakeChannel:
        return self._add_channel(FakeChannel(name, VOICE))

    def add_thread(
        self, parent: FakeChannel, name: str, *, owner: FakeUser, private: bool = False
    ) -> FakeChannel:
        """A thread that already exists when the bot connects (sent in GUILD_CREATE's ``threads``)."""
        thread = FakeChannel(
            name,
            PRIVATE_THREAD if private else PUBLIC_THREAD,
            parent_id=parent.id,
            owner_id=owner.id,
            guild_id=self.id,
        )
        thread.member_ids.add(owner.id)
        self.threads.append(thread)
        return thread

    def _add_channel(self, channel: FakeChannel) -> FakeChannel:
        channel.guild_id = self.id
        channel.position = len(self.channels)
        self.channels.append(channel)
        return channel

    def add_member(
        self,
        user: FakeUser | str,
        *,
        roles: list[FakeRole] | tuple[FakeRole, ...] = (),
        nick: str | None = None,
    ) -> FakeMember:
        if isinstance(user, str):
            user = FakeUser(user)
        member = FakeMember(user, [r.id for r in roles], nick=nick)
        self.members.append(member)
        return member

    def channel(self, key: str | int) -> FakeChannel:
        for channel in (*self.channels, *self.threads):
            if key in (channel.id, channel.name):
                return channel
        raise KeyError(f"guild {self.name!r} has no channel or thread {key!r}")

    def member(self, key: str | int) -> FakeMember:
        for member in self.members:
            if key in (member.id, member.user.username):
                return member
        raise KeyError(f"guild {self.name!r} has no member {key!r}")

    def role(self, key: str | int) -> FakeRole:
        for role in self.roles:
            if key in (role.id, role.name):
                return role
        raise KeyError(f"guild {self.name!r} has no role {key!r}")

    def find_member(self, user_id: int) -> FakeMember | None:
        return next((m for m in self.members if m.id == user_id), None)

    def permissions_of(self, member: FakeMember) -> int:
        """Guild-level permissions (channel overwrites are not modelled): @everyone | roles, admin = all."""
        value = self.everyone.permissions
        for role in self.roles:
            if role.id in member.role_ids:
                value |= role.permissions
        if value & ADMINISTRATOR or member.id == self.owner_id:
            return ALL_PERMISSIONS
        return value


def user_payload(user: FakeUser) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.username,
        "discriminator": "0",
        "global_name": user.global_name,
        "avatar": None,
        "bot": user.bot,
        "system": False,
        "public_flags": 0,
        "flags": 0,
    }


def member_payload(
    member: FakeMember, *, with_user: bool = True, permissions: int | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "roles": [str(r) for r in member.role_ids],
        "nick": member.nick,
        "avatar": None,
        "joined_at": iso(member.joined_at),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user_payload(member.user)
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def role_payload(role: FakeRole) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(role.id),
        "name": role.name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": role.position,
        "permissions": str(role.permissions),
        "managed": role.managed,
        "mentionable": role.mentionable,
        "flags": 0,
    }
    if role.bot_id is not None:
        data["tags"] = {"bot_id": str(role.bot_id)}
    return data


def thread_member_payload(thread: FakeChannel, user_id: int) -> dict[str, Any]:
    return {
        "id": str(thread.id),
        "user_id": str(user_id),
        "join_timestamp": iso(thread.created_at),
        "flags": 0,
    }


def channel_payload(channel: FakeChannel, *, permissions: int | None = None) -> dict[str, Any]:
    """The channel object; ``permissions`` is added where Discord adds it (interaction payloads)."""
    data: dict[str, Any] = {
        "id": str(channel.id),
        "type": channel.type,
        "name": channel.name,
        "flags": 0,
        "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
    }
    if channel.guild_id is not None:
        data["guild_id"] = str(channel.guild_id)
    if channel.type == DM:
        data.pop("name")
        data["recipients"] = [user_payload(u) for u in channel.recipients]
    elif channel.is_thread:
        data.update(
            parent_id=str(channel.parent_id),
            owner_id=str(channel.owner_id),
            rate_limit_per_user=channel.rate_limit_per_user,
            message_count=channel.message_count,
            member_count=len(channel.member_ids),
            total_message_sent=channel.total_message_sent,
            applied_tags=[],
            thread_metadata={
                "archived": channel.archived,
                "locked": channel.locked,
                "auto_archive_duration": channel.auto_archive_duration,
                "archive_timestamp": iso(channel.archive_timestamp),
                "create_timestamp": iso(channel.created_at),
                "invitable": channel.invitable,
            },
        )
    else:
        data.update(
            position=channel.position,
            permission_overwrites=list(channel.permission_overwrites),
            parent_id=str(channel.parent_id) if channel.parent_id else None,
            nsfw=channel.nsfw,
        )
        if channel.type != CATEGORY:
            data.update(
                topic=channel.topic,
                rate_limit_per_user=channel.rate_limit_per_user,
                default_auto_archive_duration=1440,
            )
        if channel.type == VOICE:
            data.update(bitrate=64000, user_limit=0, rtc_region=None, video_quality_mode=1)
        if channel.type == FORUM:
            data.update(
                available_tags=[],
                default_reaction_emoji=None,
                default_sort_order=None,
                default_forum_layout=0,
            )
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def guild_payload(guild: FakeGuild, *, members: list[FakeMember], joined_at: dt.datetime) -> dict[str, Any]:
    """A GUILD_CREATE body; ``members`` is what the connection's intents allow it to see."""
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id or 0),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": guild.locale,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "application_id": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "features": [],
        "roles": [role_payload(r) for r in guild.roles],
        "emojis": [],
        "stickers": [],
        "joined_at": iso(joined_at),
        "large": False,
        "unavailable": False,
        "lazy": True,
        "member_count": len(guild.members),
        "members": [member_payload(m) for m in members],
        "channels": [channel_payload(c) for c in guild.channels],
        "threads": [channel_payload(t) for t in guild.threads if not t.archived],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }
