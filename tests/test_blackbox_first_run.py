"""The quick start's first hour, as an operator lives it: the real discord.py bot on the fake Discord with
only what README asks for (endpoint and ``AGENT_MODEL``) against an OpenAI-compatible endpoint on
127.0.0.1 that behaves like Ollama."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentSettings
from bot.app import AgentBot
from bot.config import BotSettings
from tests.e2e.harness import wait_idle
from tests.fakes.discord_server import BOT_TEST_KWARGS, FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text

MODEL = "llama3.1"


@pytest.mark.usefixtures("fast_write_window")
async def test_a_model_pulled_after_the_first_failure_answers_the_next_message(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # The operator forgot `ollama pull llama3.1`: the endpoint answers 404 for the model, as Ollama does.
    llm.known_models = set()
    agent_settings = AgentSettings(OPENAI_BASE_URL=llm.base_url, AGENT_MODEL=MODEL, DATA_DIR=str(tmp_path))
    bot_settings = BotSettings(DISCORD_TOKEN=fake.token, DISCORD_SYNC_GUILD_ID=guild.id, MEMORY_ENABLED=False)
    bot = AgentBot(agent_settings, bot_settings, **BOT_TEST_KWARGS)
    async with fake.run_bot(bot):
        general = guild.channel("general")
        fake.inject_interaction(
            "research", {"task": "What is the capital of France?"}, user="alice", channel=general
        )
        thread = await fake.wait_for_thread(parent=general, name=None)
        await fake.wait_for_message(thread, lambda m: "does not know the model" in m.content, within=30)
        await wait_idle(fake, bot, within=30)
        # The thread told them what to fix; they pull the model and ask again in the thread.
        llm.known_models = {MODEL}
        llm.script(text("Paris."))
        fake.inject_message(thread, "alice", "try again please")
        await fake.wait_for(
            lambda: any(m.content == "Paris." or "cooling down" in m.content for m in fake.messages(thread)),
            within=30,
            what="an answer or a refusal",
        )
        await wait_idle(fake, bot, within=30)
        contents = [m.content for m in fake.messages(thread)]
    assert "Paris." in contents, contents  # not "cooling down after errors (next try in 895 s)"
    assert not any("cooling down" in c for c in contents), contents
