"""An offline Discord (REST + gateway on 127.0.0.1) that the real, unmodified discord.py 2.7 talks to.

Why: the bot's behaviour that users notice (defer within 3 s, a thread per task, messages in order,
nothing lost under 429s, buttons that still work after a restart) lives in the conversation between
discord.py and Discord. This fake plays Discord's side faithfully enough for discord.py's own models,
retry and pacing logic to run as in production, and records everything for assertions.

Quick start::

    guild = FakeGuild.create("Lab", channels=("general",), members=("alice",))
    async with FakeDiscord([guild]) as fake:          # starts the server and installs it
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), **BOT_TEST_KWARGS)
        async with fake.run_bot(bot):                 # bot.start(); waits for on_ready; closes on exit
            alice, general = guild.member("alice"), guild.channel("general")
            inter = fake.inject_interaction("research", {"topic": "tides"}, user=alice, channel=general)
            thread = await fake.wait_for_thread(parent=general)
            reply = await fake.wait_for_message(thread, lambda m: "tides" in m.content)

Pointing discord.py here: :meth:`FakeDiscord.install` sets ``discord.http.Route.BASE`` (every REST call,
webhooks and interaction callbacks included) and ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``
(a plain ``Client``/``Bot`` connects there; later reconnects use READY's ``resume_gateway_url``, also
ours). ``__aexit__``/:meth:`uninstall` restores both. Pass ``BOT_TEST_KWARGS`` (``guild_ready_timeout``
0.05 s instead of 2 s) to the bot so ``on_ready`` comes quickly.

Public API (all on :class:`FakeDiscord` unless noted)
-----------------------------------------------------
World (``tests.fakes.discord_models``): ``FakeGuild.create(name, channels=, members=, admins=)``,
``guild.add_text_channel/add_category/add_voice_channel/add_role/add_member/add_thread``, lookups
``guild.channel(name|id)``, ``guild.member(name|id)``, ``guild.role(name|id)``; ``FakeUser(username,
bot=False)``. The bot's member and managed role are added to every guild (``bot_permissions``).

Lifecycle: ``FakeDiscord(guilds, *, token, bot_user, bot_permissions, interaction_ack_deadline=3.0,
attachment_size_limit, heartbeat_interval_ms, allowed_privileged_intents=None, channel_write_limit=None,
shard_count=1)``;
``async with`` / ``start()`` / ``stop()``; ``install()`` / ``uninstall()``; ``base_url``, ``api_url``,
``gateway_url``; ``start_bot(bot, within=10, token=None)``, ``stop_bot(bot)``, ``run_bot(bot)`` (context
manager); ``wait_ready()`` (gateway READY + GUILD_CREATEs sent); ``interaction_ack_deadline`` (settable).
Exceptions inside the fake's own handlers are answered 400 and re-raised by ``__aexit__``.

Injecting what users do (each returns a live record with ids for correlation):
``inject_interaction(command, options, *, user, channel, permissions=None, locale="en-US",
require_registered=False)`` → an :class:`InteractionRecord` (``command`` may be ``"name"``, ``"name sub"``
or ``"name group sub"``; options are typed and checked against the registered schema, a request Discord's
client could not send raises :class:`InteractionBuildError`); ``inject_component(custom_id, *, message, user, component_type=2,
values=None)`` (a button click on a stored message); ``inject_message(channel, author, content, *,
mentions=None, attachments=(), reply_to=None, embeds=())`` → :class:`MessageRecord` (author may be a bot).

Failures: ``inject_429(method, path_glob, count=1, retry_after=0.1, is_global=False, via=True)``,
``inject_error(method, path_glob, status=500, count=1, code=0, message=None)``; paths are relative to
``/api/v10`` and may use ``*``; both return a :class:`Fault` whose ``hits`` counts uses.
``enable_channel_write_limit(limit=5, per=5.0)`` emulates Discord's per-channel message write limit
(create/edit/delete share one bucket; ``X-RateLimit-*`` headers on success, 429 when exceeded, each
refusal appended to ``rate_limit_violations``). Gateway: ``drop_connection(code=4000, hold=False)``,
``release_gateway()``, ``request_reconnect()``, ``invalidate_session(resumable=False)``,
``gateway.ack_heartbeats = False`` (a zombie connection: with ``heartbeat_interval_ms=100`` and the
bot's ``heartbeat_timeout=0.5`` discord.py closes with 4000 and resumes); counters ``identify_count``,
``resume_count``.

Reading what happened: ``calls(method=None, path=None)`` (every REST call, in order: method, path, json,
files, headers incl. ``X-Audit-Log-Reason``, status, time), ``unknown_calls``, ``messages(channel,
include_deleted=False, include_ephemeral=True)`` (creation order; ``.content`` is the final text,
``.history``/``.contents`` every version, ``.allowed_mentions`` as sent, ``.pinged_user_ids`` who was
notified), ``message(id)``, ``threads(parent=None)``, ``writes(channel)``,
``max_writes_in_window(channel, seconds)``, ``duplicates`` (nonce reuse), ``rate_limit_violations``,
``typing_calls``, ``commands(guild=None)``, ``interaction(id)``; waiting: ``wait_for(predicate,
within=5, what=…)``, ``wait_for_message(channel, predicate=None)``, ``wait_for_thread(parent=None,
name=None)``.

Fidelity notes (what Discord does that the fake copies): text JSON frames (no zlib); THREAD_CREATE
after a thread is made; the bot's own messages come back as MESSAGE_CREATE/UPDATE/DELETE; message
content is blanked without the MESSAGE_CONTENT intent (unless the bot is mentioned or the author);
GUILD_CREATE lists all members only with the GUILD_MEMBERS intent; a public thread started without a
message posts a type-18 notice in its parent; a followup while "thinking…" replaces the deferred
response; message, embed, component, command and thread-name limits answer 400/50035 like Discord.
As on Discord, THREAD_CREATE may reach the client just after ``create_thread`` returns: use the returned
``Thread`` rather than ``bot.get_channel(thread.id)`` right away.
Sharding (``shard_count`` is what GET /gateway/bot recommends): a client that IDENTIFYs with ``shard:
[i, n]`` receives only the servers (and their events) with ``(guild_id >> 22) % n == i``, DMs on shard 0;
several bots (or processes) with the same token each take their shards. ``shard_guild(index, count,
name)`` builds a server that lands on a given shard.
Not modelled: channel permission overwrites, forum posts, voice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import mimetypes
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any

import discord
import yarl
from aiohttp import web

from tests.fakes.discord_gateway import FakeGateway
from tests.fakes.discord_interactions import (
    InteractionBuildError,
    build_command_interaction,
    build_component_interaction,
)
from tests.fakes.discord_limits import (
    ChannelWriteLimiter,
    Fault,
    FaultInjector,
    rate_limited_body,
    rate_limited_headers,
)
from tests.fakes.discord_models import (
    BOT_PERMISSIONS,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeUser,
)
from tests.fakes.discord_records import (
    DuplicateNonce,
    InteractionRecord,
    MessageRecord,
    RateLimitViolation,
    RecordedFile,
    RestCall,
    TypingRecord,
    WriteRecord,
)
from tests.fakes.discord_rest import RestApi
from tests.fakes.discord_routes_apps import AppRoutes
from tests.fakes.discord_routes_channels import ChannelRoutes
from tests.fakes.discord_state import FakeState
from tests.fakes.discord_thread_life import GlobalLimit, close_thread, delete_thread

BOT_TEST_KWARGS: dict[str, Any] = {"guild_ready_timeout": 0.05}
"""Keyword arguments for ``commands.Bot``/``discord.Client`` in tests: ``on_ready`` fires 0.05 s after
the last GUILD_CREATE instead of 2 s (discord.py waits that long for more guilds)."""


def shard_guild(index: int, count: int, name: str, **create: Any) -> FakeGuild:
    """``FakeGuild.create(name, **create)`` with an id that Discord puts on shard ``index`` of ``count``
    (ids are time-based, so a few milliseconds of tries at most)."""
    while True:
        guild = FakeGuild.create(name, **create)
        if (guild.id >> 22) % count == index:
            return guild


__all__ = [
    "BOT_TEST_KWARGS",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeUser",
    "Fault",
    "InteractionBuildError",
    "InteractionRecord",
    "MessageRecord",
    "RestCall",
    "shard_guild",
]

ChannelRef = FakeChannel | int
UserRef = FakeMember | FakeUser | int | str


class FakeDiscord:
    def __init__(
        self,
        guilds: Sequence[FakeGuild] | None = None,
        *,
        token: str = "fake-bot-token",
        bot_user: FakeUser | None = None,
        bot_permissions: int = BOT_PERMISSIONS,
        interaction_ack_deadline: float = 3.0,
        attachment_size_limit: int = 10 * 1024 * 1024,
        heartbeat_interval_ms: int = 41_250,
        allowed_privileged_intents: int | None = None,
        channel_write_limit: tuple[int, float] | None = None,
        shard_count: int = 1,
    ) -> None:
        if not token or token != token.strip():
            raise ValueError(
                "token must be a non-empty string without surrounding spaces (discord.py strips it)"
            )
        self.token = token
        self.guilds = list(guilds) if guilds is not None else [FakeGuild.create()]
        self.bot_user = bot_user or FakeUser("agentbot", bot=True)
        if not self.bot_user.bot:
            raise ValueError("bot_user must have bot=True")
        self.state = FakeState(
            guilds=self.guilds,
            bot_user=self.bot_user,
            bot_permissions=bot_permissions,
            attachment_size_limit=attachment_size_limit,
        )
        self.state.shard_count = shard_count
        self.faults = FaultInjector()
        self.gateway = FakeGateway(
            self.state,
            token=token,
            heartbeat_interval_ms=heartbeat_interval_ms,
            allowed_privileged_intents=allowed_privileged_intents,
        )
        self.rest = RestApi(self.state, token=token, faults=self.faults)
        self.app_routes = AppRoutes(self.state, ack_deadline=interaction_ack_deadline)
        ChannelRoutes(self.state).register(self.rest)
        self.app_routes.register(self.rest)
        if channel_write_limit is not None:
            self.enable_channel_write_limit(*channel_write_limit)
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._saved: tuple[str, yarl.URL] | None = None
        self._bots: dict[discord.Client, asyncio.Task[None]] = {}

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        self.install()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.stop()
        finally:
            self.uninstall()
        if exc_type is None and self.state.internal_errors:
            raise AssertionError(
                "fake Discord had internal errors:\n" + "\n".join(self.state.internal_errors)
            )

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("fake Discord is already started")
        app = web.Application(client_max_size=self.state.attachment_size_limit * 11)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets, "aiohttp started without a listening socket"
        self._port = server.sockets[0].getsockname()[1]
        self.state.base_url = self.base_url
        self.state.gateway_url = self.gateway.url = self.gateway_url

    async def stop(self) -> None:
        for bot in list(self._bots):
            with contextlib.suppress(Exception):
                await self.stop_bot(bot)
        if self._runner is not None:
            await self.gateway.close_all()
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    @property
    def installed(self) -> bool:
        return self._saved is not None

    def install(self) -> FakeDiscord:
        """Point discord.py (process-wide) at this fake; :meth:`uninstall` puts the old targets back."""
        if self._runner is None:
            raise RuntimeError("start the fake before installing it (use `async with FakeDiscord(...)`)")
        if self._saved is None:
            self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = self.api_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        return self

    def uninstall(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None

    async def start_bot(self, bot: discord.Client, *, within: float = 10.0, token: str | None = None) -> None:
        """Run ``bot.start(token)`` in a task and return once ``on_ready`` has fired.

        ``token`` defaults to the fake's; pass another to see how the bot fails to log in.
        """
        if not self.installed:
            self.install()
        task = asyncio.create_task(bot.start(token or self.token), name=f"fake-discord-bot-{id(bot)}")
        self._bots[bot] = task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not bot.is_ready():
            if task.done():
                self._bots.pop(bot, None)
                await bot.close()
                error = task.exception()
                raise RuntimeError(f"bot stopped before becoming ready: {error!r}") from error
            if loop.time() > deadline:
                await self.stop_bot(bot)
                raise TimeoutError(
                    f"bot not ready after {within}s (calls so far: {[c.route for c in self.calls()]})"
                )
            await asyncio.sleep(0.01)

    async def stop_bot(self, bot: discord.Client, *, within: float = 10.0) -> None:
        task = self._bots.pop(bot, None)
        await bot.close()
        if task is not None:
            await asyncio.wait_for(task, within)

    @contextlib.asynccontextmanager
    async def run_bot(self, bot: discord.Client, *, within: float = 10.0) -> AsyncIterator[discord.Client]:
        await self.start_bot(bot, within=within)
        try:
            yield bot
        finally:
            if bot in self._bots:
                await self.stop_bot(bot)

    async def wait_ready(self, within: float = 5.0) -> None:
        """Wait until a client has identified and been sent READY plus every GUILD_CREATE."""
        await self.wait_for(
            lambda: self.gateway.ready_count > 0 and self.gateway.connected,
            within=within,
            what="gateway READY",
        )

    # ---- lookups -----------------------------------------------------------------------------------

    @property
    def guild(self) -> FakeGuild:
        """The first (often only) guild."""
        return self.guilds[0]

    def channel(self, channel: ChannelRef) -> FakeChannel:
        channel_id = channel.id if isinstance(channel, FakeChannel) else int(channel)
        found = self.state.channels.get(channel_id)
        if found is None:
            raise KeyError(f"fake Discord has no channel {channel_id}")
        return found

    def _guild_of(self, channel: FakeChannel) -> FakeGuild:
        guild = self.state.guild_of(channel)
        if guild is None:
            raise ValueError(f"channel {channel.id} is not in a guild; interactions here are guild-only")
        return guild

    def _member(self, guild: FakeGuild, user: UserRef) -> FakeMember:
        if isinstance(user, FakeMember):
            return user
        key: int | str = user.id if isinstance(user, FakeUser) else user
        return guild.member(key)

    def _user(self, guild: FakeGuild | None, user: UserRef) -> FakeUser:
        if isinstance(user, FakeMember):
            return user.user
        if isinstance(user, FakeUser):
            self.state.users.setdefault(user.id, user)
            return user
        if guild is not None:
            return guild.member(user).user
        if isinstance(user, int) and user in self.state.users:
            return self.state.users[user]
        raise KeyError(f"unknown user {user!r}")

    # ---- injection ---------------------------------------------------------------------------------

    def _require_session(self, what: str) -> None:
        if not self.gateway.has_session:
            raise RuntimeError(
                f"cannot inject {what}: no bot has identified on the fake gateway (start the bot first)"
            )

    def inject_interaction(
        self,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        user: UserRef,
        channel: ChannelRef,
        permissions: int | None = None,
        locale: str = "en-US",
        require_registered: bool = False,
    ) -> InteractionRecord:
        """Dispatch a slash-command INTERACTION_CREATE, as if ``user`` ran ``/command`` in ``channel``.

        ``permissions`` overrides the member's computed permissions (``interaction.permissions``).
        With ``require_registered`` an unsynced command is an error instead of being inferred.
        """
        self._require_session("an interaction")
        target = self.channel(channel)
        guild = self._guild_of(target)
        record = build_command_interaction(
            self.state,
            command=command,
            options=options or {},
            member=self._member(guild, user),
            guild=guild,
            channel=target,
            permissions=permissions,
            locale=locale,
            require_registered=require_registered,
        )
        self.state.dispatch("INTERACTION_CREATE", record.payload, intent=0)
        self.state.changed()
        return record

    def inject_component(
        self,
        custom_id: str,
        *,
        message: MessageRecord | int,
        user: UserRef,
        component_type: int = 2,
        values: list[str] | None = None,
        permissions: int | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Dispatch a MESSAGE_COMPONENT interaction: ``user`` clicks ``custom_id`` on a stored message."""
        self._require_session("a component interaction")
        record_message = message if isinstance(message, MessageRecord) else self.message(message)
        if record_message.deleted:
            raise InteractionBuildError(f"message {record_message.id} was deleted; nobody can click on it")
        target = self.channel(record_message.channel_id)
        guild = self._guild_of(target)
        record = build_component_interaction(
            self.state,
            custom_id=custom_id,
            message=record_message,
            member=self._member(guild, user),
            guild=guild,
            channel=target,
            component_type=component_type,
            values=values,
            permissions=permissions,
            locale=locale,
        )
        self.state.dispatch("INTERACTION_CREATE", record.payload, intent=0)
        self.state.changed()
        return record

    def inject_message(
        self,
        channel: ChannelRef,
        author: UserRef,
        content: str = "",
        *,
        mentions: Sequence[UserRef] | None = None,
        attachments: Sequence[tuple[str, bytes]] = (),
        reply_to: MessageRecord | int | None = None,
        embeds: Sequence[dict[str, Any]] = (),
    ) -> MessageRecord:
        """A user (or another bot) posts in ``channel``; dispatched as MESSAGE_CREATE to connected bots.

        Mentions are parsed from ``<@id>`` in the content unless ``mentions`` is given. Works before a
        bot connects too (to seed history the bot will fetch).
        """
        target = self.channel(channel)
        guild = self.state.guild_of(target)
        user = self._user(guild, author)
        body: dict[str, Any] = {"content": content, "embeds": list(embeds)}
        if attachments:
            body["attachments"] = [{"id": i, "filename": name} for i, (name, _) in enumerate(attachments)]
        if reply_to is not None:
            reply_id = reply_to.id if isinstance(reply_to, MessageRecord) else int(reply_to)
            body["message_reference"] = {"message_id": reply_id, "channel_id": target.id}
        uploads = [
            RecordedFile(
                f"files[{i}]", name, data, mimetypes.guess_type(name)[0] or "application/octet-stream"
            )
            for i, (name, data) in enumerate(attachments)
        ]
        mention_ids = [self._user(guild, m).id for m in mentions] if mentions is not None else None
        return self.state.create_message(target, user, body, uploads, via="injected", mention_ids=mention_ids)

    # ---- failures ----------------------------------------------------------------------------------

    def inject_429(
        self,
        method: str,
        path: str,
        *,
        count: int = 1,
        retry_after: float = 0.1,
        is_global: bool = False,
        scope: str = "user",
        via: bool = True,
    ) -> Fault:
        """The next ``count`` matching requests answer 429. ``via=False`` imitates a Cloudflare ban
        (discord.py then raises at once instead of retrying)."""
        headers = rate_limited_headers(retry_after, scope="global" if is_global else scope, via=via)
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = rate_limited_body(retry_after, is_global=is_global)
        return self.faults.add(Fault(method.upper(), path, 429, count, body, headers))

    def inject_error(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        count: int = 1,
        code: int = 0,
        message: str | None = None,
    ) -> Fault:
        """The next ``count`` matching requests answer ``status`` with Discord's error body.

        discord.py retries 500/502/504 after 1 s, 3 s, … (so one 500 costs a test ~1 s); 403 with
        ``code=50013`` is "Missing Permissions".
        """
        body = {"message": message or f"{status}: fake failure", "code": code}
        return self.faults.add(Fault(method.upper(), path, status, count, body))

    # ---- a thread's life and the global limit (``discord_thread_life``) ------------------------------

    def archive_thread(self, thread: ChannelRef, *, locked: bool = False) -> None:
        """A member archives (``locked``: and locks) a thread; THREAD_UPDATE reaches the bot."""
        close_thread(self.state, self.channel(thread), archived=True, locked=locked)

    def delete_thread(self, thread: ChannelRef) -> None:
        """A member deletes a thread (or a channel); THREAD_DELETE (CHANNEL_DELETE) reaches the bot."""
        delete_thread(self.state, self.channel(thread))

    def enable_global_limit(self, limit: int = 50, per: float = 1.0) -> GlobalLimit:
        """Discord's per-bot global rate limit over bot-token routes (429 ``global`` past it)."""
        self.rest.global_limit = GlobalLimit(limit, per)
        return self.rest.global_limit

    def notified(self, message: MessageRecord) -> list[int]:
        """Users Discord notified of ``message`` (pings and thread members, unless sent silently)."""
        return list(message.notified_user_ids)

    def enable_channel_write_limit(self, limit: int = 5, per: float = 5.0) -> ChannelWriteLimiter:
        self.rest.write_limiter = ChannelWriteLimiter(limit, per)
        return self.rest.write_limiter

    def disable_channel_write_limit(self) -> None:
        self.rest.write_limiter = None

    async def drop_connection(self, *, code: int = 4000, hold: bool = False) -> None:
        """Cut the gateway connection (resumable). With ``hold``, reconnects wait for :meth:`release_gateway`."""
        await self.gateway.drop(code=code, hold=hold)

    def release_gateway(self) -> None:
        self.gateway.release()

    def request_reconnect(self) -> None:
        self.gateway.request_reconnect()

    def invalidate_session(self, *, resumable: bool = False) -> None:
        self.gateway.invalidate_sessions(resumable=resumable)

    @property
    def interaction_ack_deadline(self) -> float:
        """Seconds the bot has to answer an interaction (Discord: 3); later callbacks get 404/10062."""
        return self.app_routes.ack_deadline

    @interaction_ack_deadline.setter
    def interaction_ack_deadline(self, seconds: float) -> None:
        self.app_routes.ack_deadline = seconds

    @property
    def identify_count(self) -> int:
        return self.gateway.identify_count

    @property
    def resume_count(self) -> int:
        return self.gateway.resume_count

    # ---- records -----------------------------------------------------------------------------------

    def calls(self, method: str | None = None, path: str | None = None) -> list[RestCall]:
        """REST calls in arrival order; ``path`` is a glob relative to ``/api/v10``."""
        return [
            c
            for c in self.state.calls
            if (method is None or c.method == method.upper())
            and (path is None or fnmatch.fnmatchcase(c.path, path))
        ]

    @property
    def unknown_calls(self) -> list[RestCall]:
        return [c for c in self.state.calls if c.route is None]

    def messages(
        self, channel: ChannelRef, *, include_deleted: bool = False, include_ephemeral: bool = True
    ) -> list[MessageRecord]:
        channel_id = channel.id if isinstance(channel, FakeChannel) else int(channel)
        return [
            m
            for m in self.state.channel_messages(channel_id)
            if (include_deleted or not m.deleted) and (include_ephemeral or not m.ephemeral)
        ]

    def message(self, message_id: int) -> MessageRecord:
        try:
            return self.state.messages[int(message_id)]
        except KeyError:
            raise KeyError(f"fake Discord has no message {message_id}") from None

    def threads(self, parent: ChannelRef | None = None) -> list[FakeChannel]:
        parent_id = None if parent is None else parent.id if isinstance(parent, FakeChannel) else int(parent)
        return [
            c
            for c in self.state.channels.values()
            if c.is_thread and (parent_id is None or c.parent_id == parent_id)
        ]

    def writes(self, channel: ChannelRef | None = None) -> list[WriteRecord]:
        channel_id = (
            None if channel is None else channel.id if isinstance(channel, FakeChannel) else int(channel)
        )
        return [w for w in self.state.writes if channel_id is None or w.channel_id == channel_id]

    def max_writes_in_window(
        self, channel: ChannelRef, seconds: float, *, via: str | None = "channel"
    ) -> int:
        """The most writes (bot-token ones by default) that fell inside any ``seconds``-long window."""
        times = [w.t for w in self.writes(channel) if via is None or w.via == via]
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    @property
    def duplicates(self) -> list[DuplicateNonce]:
        return list(self.state.duplicates)

    @property
    def rate_limit_violations(self) -> list[RateLimitViolation]:
        return list(self.state.violations)

    def typing_calls(self, channel: ChannelRef | None = None) -> list[TypingRecord]:
        channel_id = (
            None if channel is None else channel.id if isinstance(channel, FakeChannel) else int(channel)
        )
        return [t for t in self.state.typing if channel_id is None or t.channel_id == channel_id]

    def commands(self, guild: FakeGuild | int | None = None) -> list[dict[str, Any]]:
        """Registered commands: global with ``guild=None``, else that guild's."""
        scope = guild.id if isinstance(guild, FakeGuild) else guild
        return list(self.state.commands.get(scope, []))

    def interaction(self, interaction_id: int) -> InteractionRecord:
        return self.state.interactions[interaction_id]

    # ---- waiting -----------------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[], Any], *, within: float = 5.0, what: str = "a condition"
    ) -> Any:
        """Wait until ``predicate()`` is truthy (checked after every change the fake sees); return it."""
        return await self.state.wait_for(predicate, within=within, what=what)

    async def wait_for_message(
        self,
        channel: ChannelRef,
        predicate: Callable[[MessageRecord], bool] | None = None,
        *,
        within: float = 5.0,
    ) -> MessageRecord:
        """The first non-deleted message in ``channel`` matching ``predicate`` (checked on its final text)."""

        def find() -> MessageRecord | None:
            return next((m for m in self.messages(channel) if predicate is None or predicate(m)), None)

        channel_id = channel.id if isinstance(channel, FakeChannel) else channel
        return await self.wait_for(find, within=within, what=f"a matching message in channel {channel_id}")

    async def wait_for_thread(
        self, *, parent: ChannelRef | None = None, name: str | None = None, within: float = 5.0
    ) -> FakeChannel:
        def find() -> FakeChannel | None:
            return next((t for t in self.threads(parent) if name is None or t.name == name), None)

        parent_id = parent.id if isinstance(parent, FakeChannel) else parent
        return await self.wait_for(find, within=within, what=f"a thread (parent={parent_id}, name={name!r})")
