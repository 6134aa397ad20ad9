"""The real bot (discord.py, unmodified) against the fake Discord and the scripted LLM, both on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent.config import AgentSettings
from bot.app import AgentBot
from bot.config import BotSettings
from tests.fakes.discord_server import BOT_TEST_KWARGS, FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM


def make_bot(
    fake: FakeDiscord,
    llm: FakeLLM,
    data_dir: Path,
    guild: FakeGuild,
    *,
    models: tuple[str, ...] = ("gpt-4o-mini",),
    tiers_table: dict[str, tuple[str, ...]] | None = None,
    agent_env: dict[str, Any] | None = None,
    **bot_env: Any,
) -> AgentBot:
    data_dir.mkdir(parents=True, exist_ok=True)
    tiers = data_dir / "tiers.toml"  # every tier on the scripted server's models, so tests read known names
    table = tiers_table or {t: models for t in ("simple", "medium", "complex")}
    lines = [f"{t} = [{', '.join(json.dumps(m) for m in ms)}]" for t, ms in table.items()]
    tiers.write_text("[tiers]\n" + "\n".join(lines) + "\n")
    agent_settings = AgentSettings(
        ROUTER_TIERS_FILE=str(tiers),
        OPENAI_BASE_URL=llm.base_url,
        OPENAI_API_KEY="sk-e2e-test-key-000",
        AGENT_MODEL="gpt-4o-mini",
        DATA_DIR=str(data_dir),
        MODEL_MAX_ATTEMPTS=2,
        LOG_LEVEL="INFO",
        **(agent_env or {}),
    )
    env = {"DISCORD_TOKEN": fake.token, "DISCORD_SYNC_GUILD_ID": guild.id, "MEMORY_ENABLED": False} | bot_env
    bot_settings = BotSettings(**env)
    return AgentBot(agent_settings, bot_settings, **BOT_TEST_KWARGS)


@asynccontextmanager
async def running_bot(
    fake: FakeDiscord, llm: FakeLLM, data_dir: Path, guild: FakeGuild, **settings: Any
) -> AsyncIterator[AgentBot]:
    """:func:`make_bot` (same arguments), connected to the fake Discord until the block ends."""
    bot = make_bot(fake, llm, data_dir, guild, **settings)
    async with fake.run_bot(bot):
        yield bot


async def wait_idle(fake: FakeDiscord, bot: AgentBot, *, within: float = 15.0) -> None:
    """Until no session is running and every write has landed."""
    await fake.wait_for(lambda: not bot.runner.busy(), within=within, what="sessions to finish")
