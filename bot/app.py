"""The discord.py application: start-up, shared services, command sync and error handling.

Sessions are started, stopped and retried by :class:`bot.control.SessionControl` (``bot.control``), which
cogs and buttons reach as ``bot.control`` (cogs name this module for typing only).

Decisions: ``allowed_mentions`` is none for the whole client (nothing the model writes can ping);
the message-content intent is requested because follow-ups in threads are read as text (enable it in
the developer portal); slash commands are synced only when their definition hash changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import discord
import structlog
import yarl
from discord import app_commands
from discord.ext import commands

from agent.config import AgentSettings
from bot.config import BotSettings
from bot.control import SessionControl
from bot.discord_sink import NO_MENTIONS
from bot.formatting import DmLimit, Refusal, reply
from bot.gateway import BoundedGateway, skip_bot_messages
from bot.mentions import mentions_bot, replies_to_bot
from bot.missed import answer_missed
from bot.resume import resume_interrupted
from bot.runner import SessionRunner
from bot.services import Services, build_services
from bot.store import StoreUnavailable
from bot.views import Button, Handler

log = structlog.get_logger("bot.app")

COGS = ("bot.cogs.research", "bot.cogs.threads", "bot.cogs.admin", "bot.cogs.usage", "bot.cogs.memory")


_BY_A_BOT: dict[str, Callable[[tuple[Any, ...]], discord.Message]] = {
    "message": lambda args: args[0],
    "message_edit": lambda args: args[1],
    "raw_message_edit": lambda args: args[0].message,
}
"""The message of each event :meth:`AgentBot.dispatch` skips when a bot wrote it."""


BUCKET_SWEEP_SECONDS = 60.0
"""How often discord.py may look for idle rate-limit buckets to drop (see :func:`sweep_buckets_at_most`)."""


def sweep_buckets_at_most(http: discord.http.HTTPClient, every: float, clock: Callable[[], float]) -> None:
    """Let ``http`` sweep its rate-limit buckets at most once every ``every`` seconds.

    discord.py scans all of them for the idle ones (5 minutes without a request) each time it makes a
    new one, once it holds 256: each session's thread makes about five (its messages, edits, typing,
    members), so at a few hundred sessions that was a scan of ~2,000 buckets (0.3 ms) per new bucket,
    ~0.25 ms per agent step in ``bench/bot_load.py``. Once a minute drops the same buckets, a minute
    later at most."""
    sweep = getattr(http, "_try_clear_expired_ratelimits", None)  # private: a later discord.py may lack it
    if sweep is None:
        return
    last: float | None = None

    def at_most_every() -> None:
        nonlocal last
        now = clock()
        if last is None or now - last >= every:
            last = now
            sweep()

    http._try_clear_expired_ratelimits = at_most_every  # type: ignore[method-assign]


class AgentBot(BoundedGateway, commands.AutoShardedBot):
    """Sharded only when ``DISCORD_SHARD_COUNT`` is set; otherwise one connection, as a plain Bot."""

    services: Services
    runner: SessionRunner
    control: SessionControl
    buttons: dict[str, Handler]
    """What a click on each kind of :class:`bot.views.Button` calls; cogs add theirs in ``cog_load``."""
    stop_reason: str | None = None
    """What asked the bot to stop (a signal, lost shards), logged as shutdown starts."""

    def __init__(
        self,
        agent_settings: AgentSettings,
        bot_settings: BotSettings,
        *,
        sync: bool = True,
        serve: bool = True,
        **kwargs: Any,
    ) -> None:
        self.agent_settings = agent_settings
        self.bot_settings = bot_settings
        self.sync_on_start = sync
        self.serve = serve
        """False for ``agentbot sync``: it logs in next to a running bot and serves no shard."""
        self.max_connect_attempts = bot_settings.connect_attempts
        self.dm_limit = DmLimit()  # bot.formatting.tell's "I can't post there" DMs, bounded
        kwargs.setdefault("shard_count", bot_settings.shard_count or 1)
        if bot_settings.shard_count is not None and bot_settings.shard_ids:
            kwargs.setdefault("shard_ids", bot_settings.shard_ids)
        # DISCORD_API_BASE_URL / DISCORD_GATEWAY_URL: another Discord-compatible endpoint (a proxy, a fake).
        if bot_settings.api_base_url:
            discord.http.Route.BASE = bot_settings.api_base_url.rstrip("/")
        if bot_settings.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(bot_settings.gateway_url)
        # The bot has no voice: discord.py's "PyNaCl/davey is not installed" warnings would greet every start.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(
            # No text commands: everything is a slash command, and a mention starts a session instead.
            command_prefix=lambda bot, message: [],
            # Only what the bot uses (issue 20.6): servers, channels and threads (guilds), messages in
            # them for mentions and follow-ups, and their text (message_content, privileged).
            intents=discord.Intents(guilds=True, guild_messages=True, message_content=True),
            # No message cache: every listener takes raw events (edits, deletes) or the message itself,
            # and with discord.py's default cache of 1,000 each gateway echo of the bot's own edits and
            # deletes (one or two per agent step) scanned it for the id, then copied and updated the hit.
            max_messages=None,
            help_command=None,
            allowed_mentions=NO_MENTIONS,
            # Every command works in servers only: not installable on a user, not offered in DMs.
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
            allowed_contexts=app_commands.AppCommandContext(
                guild=True, dm_channel=False, private_channel=False
            ),
            **kwargs,
        )
        skip_bot_messages(self._connection)  # no Message built for a bot's post or edit
        sweep_buckets_at_most(self.http, BUCKET_SWEEP_SECONDS, time.monotonic)

    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        """Messages written by bots (the bot's own posts and edits, echoed by the gateway: one or two
        per agent step) are not dispatched: every listener returns at once for them, and dispatching
        started a task per listener, 2.5 per agent step (``bench/bot_load.py``)."""
        if event_name in _BY_A_BOT and _BY_A_BOT[event_name](args).author.bot:
            return
        super().dispatch(event_name, *args, **kwargs)

    # --- start-up and shutdown --------------------------------------------------------------------
    async def setup_hook(self) -> None:
        # A task close() can cancel: SIGTERM while PostgreSQL or a Chroma server did not answer waited for
        # the connect timeout (60 s, past Docker's stop grace period) before the bot stopped.
        self._building = asyncio.ensure_future(
            build_services(self.agent_settings, self.bot_settings, serving=self.serve)
        )
        try:
            services = await self._building
        except asyncio.CancelledError:
            if not getattr(self, "_closing", False):
                raise
            return
        if self.is_closed():
            # SIGTERM while the services were built (seconds: the store, the classifier, memory): close()
            # found none to close, and what was built went on to sync with a closed HTTP session, a
            # traceback, and a process kept alive by the store's thread until SIGKILL.
            await services.close()
            return
        self.services = services
        self.runner = SessionRunner(self.services)
        self.control = SessionControl(self.services, self.runner)
        self.lost_shards: str | None = None
        """Why this process stopped: another took its shards while PostgreSQL was unreachable."""
        if self.services.shard_claim is not None:
            self.services.shard_claim.watch(self._shards_lost)
        self.tree.on_error = self.on_app_command_error
        self.buttons = {
            "stop": lambda interaction, sid: self.control.stop(interaction, sid),
            "retry": lambda interaction, sid: self.control.retry(interaction, sid),
            "rerun": lambda interaction, sid, turn: self.control.rerun(interaction, sid, int(turn)),
        }
        for name in COGS:
            await self.load_extension(name)
        self.add_dynamic_items(Button)
        if self.is_closed():  # SIGTERM meanwhile: close() closed the services; Discord is not called
            return
        # Shard processes (issue 18.3): commands are the bot's, not a shard's, so only the process that
        # owns shard 0 syncs them (the others would send the same list at the same moment).
        if self.sync_on_start and self.services.owner.owns(None):
            await self.sync_commands()
        self._health = None
        if self.bot_settings.health_port:
            from bot.health import start_health_server

            self._health = await start_health_server(
                lambda: self.is_ready() and not self.is_closed(),
                self.services,
                self.runner,
                self.bot_settings.health_host,
                self.bot_settings.health_port,
            )

    def _shards_lost(self, why: str) -> None:
        """Another process serves these shards now: two would answer everything twice, so this one stops
        (``agentbot run`` then exits with ``why`` as its one line)."""
        self.lost_shards = self.stop_reason = why
        self._stopping = asyncio.create_task(self.close(), name="shards-lost")

    async def close(self) -> None:
        first = not getattr(self, "_closing", False)  # discord.py closes again on the way out
        self._closing = True
        building = getattr(self, "_building", None)
        # A start-up refused (a second `agentbot run` on one DATA_DIR) is its own one line (bot.cli): a
        # "shutdown_started" and "shutdown_done" before it told of a shutdown of a bot that never started.
        refused = (
            building is not None and building.done() and not building.cancelled() and building.exception()
        )
        first = first and not refused
        if first:  # nothing was logged at shutdown: an operator could not tell a stop from a hang
            log.info("shutdown_started", reason=self.stop_reason or "closed")
        paused = 0
        if building is not None and not building.done():
            building.cancel()
        runner = getattr(self, "runner", None)
        if runner is not None:
            paused = await runner.shutdown(self.bot_settings.shutdown_grace)
        await _handlers_done(HANDLERS_GRACE)
        health = getattr(self, "_health", None)
        if health is not None:
            await health.cleanup()
        services = getattr(self, "services", None)
        if services is not None:
            await services.close()
        await super().close()
        if first:
            log.info("shutdown_done", paused_runs=paused)

    async def on_ready(self) -> None:
        if getattr(self, "_resumed_once", False):
            return
        self._resumed_once = True
        n = await resume_interrupted(self.runner, self._fetch_here)
        log.info("ready", user=str(self.user), guilds=len(self.guilds), resumed_turns=n)
        await answer_missed(self, self.control)

    async def _fetch_here(self, channel_id: int) -> Any:
        """A thread to resume, only in a server the bot is in now. One that removed the bot while it was
        down is in no READY (Discord answers 403 there; a thread fetched all the same is left alone): its
        turn was resumed and called the model again for a server the bot had left. A server in an outage
        is listed, unavailable, and resumes as before."""
        channel = await self.fetch_channel(channel_id)
        guild_id = getattr(getattr(channel, "guild", None), "id", None)
        if guild_id is not None and self.get_guild(guild_id) is None:
            raise LookupError(f"the bot is no longer in server {guild_id}")
        return channel

    # --- commands sync ----------------------------------------------------------------------------
    def _commands_hash(self, guild: discord.abc.Snowflake | None) -> str:
        payload = [c.to_dict(self.tree) for c in self.tree.get_commands(guild=guild)]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    async def sync_commands(self, *, force: bool = False, guild_id: int | None = None) -> bool:
        """Sync when the command set changed since the last sync (hash in the data dir), or when forced."""
        gid = guild_id or self.bot_settings.sync_guild_id
        guild = discord.Object(gid) if gid else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        digest = self._commands_hash(guild)
        marker = Path(self.services.data_dir) / f"commands-{gid or 'global'}.sha256"
        if not force and marker.exists() and marker.read_text().strip() == digest:
            log.info("commands_unchanged", scope=gid or "global")
            return False
        await self.tree.sync(guild=guild)
        marker.write_text(digest)
        log.info("commands_synced", scope=gid or "global", count=len(self.tree.get_commands(guild=guild)))
        return True

    # --- errors -----------------------------------------------------------------------------------
    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        eid = uuid.uuid4().hex[:8]
        original = getattr(error, "original", None)
        if isinstance(error, app_commands.CheckFailure | app_commands.TransformerError | Refusal):
            text = str(error) or "You can't use this command here."
        elif isinstance(original, StoreUnavailable):  # PostgreSQL restarting or down: say so, no traceback
            log.warning("command_store_unavailable", error_id=eid, error=str(original))
            text = (
                "⚠️ The bot's database cannot be reached right now, so nothing was done and nothing was "
                f"charged. Please try again in a minute (error id `{eid}`)."
            )
        elif isinstance(original, sqlite3.OperationalError):  # SQLite's disk full or locked: no traceback
            log.error("command_store_refused", error_id=eid, error=str(original))
            text = (
                "⚠️ The bot's database refused a write (out of space or locked?), so nothing was done. "
                f"Please tell an admin (error id `{eid}`)."
            )
        else:
            log.error(
                "command_failed",
                error_id=eid,
                command=getattr(interaction.command, "qualified_name", "?"),
                exc_info=error,
            )
            text = f"Something went wrong (error id `{eid}`)."
        with contextlib.suppress(discord.HTTPException):
            await reply(interaction, text)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        eid = uuid.uuid4().hex[:8]
        if getattr(self, "_closing", False):
            # Stopping: the store closes while the gateway still delivers events, so a message handled now
            # fails on it. Said nothing, as for a message sent while the bot is down (a member read
            # "Something went wrong" under a message in a thread that was not even a session).
            log.info(
                "event_during_shutdown", error_id=eid, handler=event_method, error=repr(sys.exc_info()[1])
            )
            return
        text = f"Something went wrong (error id `{eid}`)."
        if isinstance(error := sys.exc_info()[1], StoreUnavailable):  # PostgreSQL restarting or down
            log.warning("event_store_unavailable", error_id=eid, handler=event_method, error=str(error))
            text = (
                "⚠️ I can't reach my database right now, so I couldn't take this message: please send it "
                f"again in a minute (error id `{eid}`)."
            )
        elif isinstance(error, sqlite3.OperationalError):  # SQLite's disk full or locked
            log.error("event_store_refused", error_id=eid, handler=event_method, error=str(error))
            text = (
                "⚠️ My database refused a write (out of space or locked?), so I couldn't take this message: "
                f"please tell an admin (error id `{eid}`)."
            )
        else:
            log.exception("event_failed", error_id=eid, handler=event_method)  # "event" is structlog's own
        message = next((a for a in args if isinstance(a, discord.Message)), None)
        if message is not None and not message.author.bot and self._spoke_to_me(message):
            with contextlib.suppress(discord.HTTPException):
                await message.channel.send(text, allowed_mentions=NO_MENTIONS)

    def _spoke_to_me(self, message: discord.Message) -> bool:
        """A message the bot would answer: a mention, a reply to it, or any in a thread it opened. Any
        other message in a thread is looked up too (is it a session?), so during a database outage every
        member's chat in every thread got "I can't reach my database" under it."""
        me = self.user.id if self.user is not None else None
        mine = isinstance(message.channel, discord.Thread) and message.channel.owner_id == me
        return mine or mentions_bot(self, message) or replies_to_bot(self, message)


HANDLERS_GRACE = 5.0
"""Seconds a stop waits for commands and messages already being handled (a /research opening its thread,
a follow-up being stored): the store closed under them, so the member's /research got no answer at all
and a follow-up posted as the bot stopped was lost, with a traceback in the log."""


async def _handlers_done(within: float) -> None:
    me = asyncio.current_task()
    busy = [
        t
        for t in asyncio.all_tasks()
        if t is not me
        and not t.done()
        and (t.get_name() == "CommandTree-invoker" or t.get_name().startswith("discord.py: on_"))
    ]
    if busy:
        await asyncio.wait(busy, timeout=within)
