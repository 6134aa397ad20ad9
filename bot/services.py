"""Everything a running bot shares (stores, the HTTP pool, memory, tools), built once in ``setup_hook``.

Kept apart from the discord.py client so the session runner and cogs can be wired in tests with the
same real parts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from agent.config import AgentSettings, ConfigError
from agent.logs import redact
from agent.memory.types import EmbeddingMismatch
from agent.models.factory import build_reader, build_router, missing_key, reader_enabled
from agent.models.http import make_client, timeouts
from agent.models.prices import default_prices
from agent.models.router import RoutedModel, Router
from agent.models.tiers import load_tiers
from agent.reader import Reader
from agent.tools.mcp import McpTools
from agent.tools.registry import ToolRegistry
from agent.tools.research import ResearchToolSettings, research_guard
from agent.toolset import build_registry, limit_mcp_tools, operator_mcp
from bot.config import BotSettings
from bot.guild_mcp import GuildMcp
from bot.limits import Limits
from bot.shards import ShardOwnership
from bot.store import (
    Database,
    GuildSettingsStore,
    QuotaStore,
    SessionStore,
    SettingsDefaults,
    SettingsSchema,
    open_database,
)
from bot.store.interrupted import prompt_part

if TYPE_CHECKING:  # asyncpg (~60 ms) is imported only when DATABASE_URL names PostgreSQL
    from bot.store.pg import PgDatabase

log = structlog.get_logger("bot.services")

MEMORY_RETRY = 30.0
"""Seconds between tries to open a Chroma server's memory that could not be opened at start-up."""


@dataclass
class Services:
    agent_settings: AgentSettings
    bot_settings: BotSettings
    data_dir: Path
    db: Database | PgDatabase
    sessions: SessionStore
    quotas: QuotaStore
    guild_settings: GuildSettingsStore
    http: httpx.AsyncClient
    tools: ToolRegistry
    router: Router
    memory: Any = None
    memory_error: str | None = None
    mcp: McpTools | None = None
    """The operator's MCP servers (MCP_SERVERS_FILE); their tools are in ``tools``."""
    guild_mcp: GuildMcp = field(default_factory=GuildMcp)
    """MCP servers each Discord server added (``/config mcp``), connected on its first turn."""
    owner: ShardOwnership = field(default_factory=ShardOwnership)
    """The servers this process owns (its shards): only their runs are resumed here (issue 18.3)."""
    shard_claim: Any = None
    """This process's hold on its shard ids (PostgreSQL, :class:`bot.store.shard_claim.ShardClaim`) or on
    its SQLite store (:class:`bot.store.file_claim.FileClaim`)."""
    memory_retry: asyncio.Task[None] | None = None
    """Opening a Chroma server's memory again, while it could not be opened at start-up (:func:`_reopen`)."""

    def reader_for(self, model: RoutedModel, enabled: bool = True) -> Reader | None:
        """The run's page reader: the server's simple tier, while the run is above it (READER_MODEL); a
        server that turned the reader off gets none. A run that can never leave the simple tier gets none."""
        if not enabled:
            return None
        if model.max_tier == model.start_tier == "simple":
            return build_reader(self.agent_settings, model.router, "simple")
        return build_reader(self.agent_settings, model.router, lambda: model.tier)

    def retention_for(self, gs: Any) -> Any:
        from agent.memory.types import RetentionPolicy

        return RetentionPolicy(max_items=gs.memory_max_items, max_age_days=gs.memory_max_age_days)

    async def close(self) -> None:
        if self.memory_retry is not None:
            self.memory_retry.cancel()
        await self.guild_mcp.aclose()
        if self.mcp is not None:
            await self.mcp.aclose()
        await self.http.aclose()
        if self.memory is not None:
            await self.memory.close()
        await self.db.close()
        if self.shard_claim is not None:  # last: queued writes are flushed before another may take over
            await self.shard_claim.close()


async def build_services(
    agent_settings: AgentSettings, bot_settings: BotSettings, *, serving: bool = True
) -> Services:
    """``serving``: for ``agentbot run``, which serves its shards; ``agentbot sync`` builds the same
    services next to a running bot and must not claim its shards."""
    data_dir = Path(agent_settings.data_dir)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    url = bot_settings.database_url
    db = await open_database(url.get_secret_value() if url else data_dir / "agentbot.sqlite3")
    claim = mcp = http = None
    try:
        if url is not None and serving:  # before anything takes over the shards' runs (bot.resume)
            from bot.store.shard_claim import ShardClaim

            shards = bot_settings.shard_count, bot_settings.shard_ids
            claim = await ShardClaim.take(url.get_secret_value(), *shards)
            from bot.store.copy import unmoved_store

            if (unmoved := await unmoved_store(data_dir / "agentbot.sqlite3", db)) is not None:
                raise ConfigError(unmoved)
        elif serving:
            from bot.store.file_claim import FileClaim

            claim = FileClaim.take(data_dir / "agentbot.sqlite3")
        research = ResearchToolSettings.from_settings(agent_settings, agent_settings.data_dir)
        mcp = await operator_mcp(agent_settings.mcp_servers_file)
        mcp_tools = mcp.tools() if mcp else []
        tools = build_registry(
            guards=[research_guard(research)],
            research=research,
            memory=bot_settings.memory_enabled,
            extra=mcp_tools,
        )
        limit_mcp_tools(tools, mcp_tools)
        http = make_client(timeouts(agent_settings.model_timeout))
        router = build_router(agent_settings, http)
        tiers = load_tiers(agent_settings.router_tiers_file, agent_settings.agent_model)
        defaults = SettingsDefaults(
            tiers=tiers,
            max_steps=agent_settings.agent_max_steps,
            research=dict(router.research),
            reader=reader_enabled(agent_settings),
        )
        known = {
            *default_prices().known_models(),
            agent_settings.agent_model,
            *(m for ms in tiers.values() for m in ms),
        }
        # /config max-steps reaches the operator's own default when it is higher (AGENT_MAX_STEPS allows 100):
        # "Max steps: 80" was shown, and 80 refused as past 50.
        steps = (1, max(SettingsSchema.max_steps_range[1], agent_settings.agent_max_steps))
        usable = [m for m in sorted(known) if missing_key(agent_settings, m) is None]
        schema = SettingsSchema(
            known_models=sorted(known), known_tools=tools.names(), max_steps_range=steps, usable_models=usable
        )
        guild_settings = GuildSettingsStore(db, schema, defaults)
        if url is not None and guild_settings.shared:  # other shard processes may change settings
            from bot.store.settings_sync import SettingsListener

            listener = SettingsListener(url.get_secret_value(), guild_settings)
            db.on_close(listener.close)  # type: ignore[union-attr]
            await listener.start()
        quotas = QuotaStore(
            db,
            guild_settings,
            Limits.from_settings(bot_settings),
            all_servers_per_day=bot_settings.requests_per_day_all_servers,
        )
        owner = ShardOwnership.of(bot_settings.shard_count, bot_settings.shard_ids)
        if serving:  # else they are a running bot's (``agentbot sync`` next to it), not left behind
            await quotas.recover(
                owner, prompt_part(router, default_prices(), agent_settings.agent_max_tokens)
            )
        sv = Services(
            agent_settings=agent_settings,
            bot_settings=bot_settings,
            data_dir=data_dir,
            db=db,
            sessions=SessionStore(db),
            quotas=quotas,
            guild_settings=guild_settings,
            http=http,
            tools=tools,
            router=router,
            mcp=mcp,
            guild_mcp=GuildMcp(
                allow_loopback=agent_settings.fetch_allow_loopback,
                dns_servers=agent_settings.fetch_dns_servers,
                keep_retired=bot_settings.turn_timeout + 60,
            ),
            owner=owner,
            shard_claim=claim,
        )
        build_reader(agent_settings, sv.router, "complex")  # a bad READER_MODEL stops start-up, named
        warm = getattr(sv.router.classifier, "load", None)
        if callable(warm):  # the embedding router: loaded now, not on the first /research
            await asyncio.to_thread(warm)
    except BaseException:  # SIGTERM mid-start-up included: nothing built is left open
        if mcp is not None:
            await mcp.aclose()
        if http is not None:
            await http.aclose()
        await db.close()
        if claim is not None:
            await claim.close()
        raise
    if bot_settings.memory_enabled:
        memory = None  # not built at all (a setting missing): nothing to open again later
        try:
            from agent.memory.chroma_store import ChromaMemory

            memory = ChromaMemory.from_settings(data_dir / "memory", agent_settings)
            await memory.open()
            sv.memory = memory
        except Exception as e:  # memory is optional: the bot runs without it and says so
            why = redact(f"{type(e).__name__}: {e}")  # also served by /healthz, which redacts nothing
            sv.memory_error = f"{agent_settings.memory_where()} could not be opened ({why})"
            remote = (
                bool((agent_settings.chroma_host or "").strip())
                or agent_settings.memory_embedding == "openai"
            )
            # a server, or an embedding endpoint, that may yet answer
            again = memory is not None and remote and not isinstance(e, EmbeddingMismatch)
            log.error(
                "memory_unavailable", error=sv.memory_error, retry_every=MEMORY_RETRY if again else None
            )
            if again:  # one still starting (a host's reboot starts containers in any order)
                sv.memory_retry = asyncio.create_task(_reopen(sv, memory), name="memory-reopen")
        except BaseException:  # SIGTERM meanwhile: the open store's thread kept the process alive for good
            await sv.close()
            raise
    return sv


async def _reopen(sv: Services, memory: Any) -> None:
    """Open the Chroma server's memory every :data:`MEMORY_RETRY` seconds until it opens, then use it.
    A process that started before its Chroma server answered ran without memory until it was restarted,
    though the server came up seconds later: a shard's servers got no recall and stored nothing."""
    while True:
        await asyncio.sleep(MEMORY_RETRY)
        try:
            async with asyncio.timeout(MEMORY_RETRY + sv.agent_settings.chroma_timeout):
                await memory.open()
        except Exception as e:  # still away, or still starting: said once at start-up, not every try
            log.debug("memory_still_unavailable", error=redact(f"{type(e).__name__}: {e}"))
            continue
        sv.memory, sv.memory_error = memory, None
        log.info("memory_available", where=sv.agent_settings.memory_where())
        return


def check_model_configured(agent_settings: AgentSettings) -> None:
    """Refuse to start when ``AGENT_MODEL`` cannot be called for want of its provider's key, naming it
    (an Anthropic- or Gemini-only set-up needs no OpenAI key)."""
    from agent.models.factory import missing_key

    if (problem := missing_key(agent_settings, agent_settings.agent_model)) is not None:
        raise ConfigError(problem)
