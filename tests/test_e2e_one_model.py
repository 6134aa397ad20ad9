"""An OpenAI-compatible endpoint that serves exactly one model, with only AGENT_MODEL set (issue 16.1).

The first set-up most operators try (Ollama, ``AGENT_MODEL=llama3.1``): the scripted server answers 404
for every other name, as Ollama does, so a call routed to a default tier's OpenAI model would fail the
run. The real discord.py bot runs against the fake Discord.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentSettings
from bot.app import AgentBot
from bot.config import BotSettings
from tests.e2e.harness import wait_idle
from tests.fakes.discord_server import BOT_TEST_KWARGS, FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call

MODEL = "llama3.1"


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"))


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_one_model_endpoint_answers_research_a_tool_step_and_a_follow_up(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.known_models = {MODEL}
    llm.script(
        tool_call("calculator", {"expression": "17*23"}),
        text("17 × 23 = **391**."),
        text("Doubled, that is **782**."),
    )
    # Only what README's quick start asks for: endpoint, key (none for Ollama) and model.
    agent_settings = AgentSettings(OPENAI_BASE_URL=llm.base_url, AGENT_MODEL=MODEL, DATA_DIR=str(tmp_path))
    bot_settings = BotSettings(DISCORD_TOKEN=fake.token, DISCORD_SYNC_GUILD_ID=guild.id, MEMORY_ENABLED=False)
    bot = AgentBot(agent_settings, bot_settings, **BOT_TEST_KWARGS)
    async with fake.run_bot(bot):
        general = guild.channel("general")
        fake.inject_interaction(
            "research",
            {"task": "Compare 17*23 with a rough estimate, step by step"},
            user="alice",
            channel=general,
        )
        thread = await fake.wait_for_thread(parent=general, name=None)
        await fake.wait_for_message(thread, lambda m: "391" in m.content and "**" in m.content, within=30)
        await wait_idle(fake, bot, within=30)
        fake.inject_message(thread, "alice", "and doubled?")  # the requester continues her thread
        await fake.wait_for_message(thread, lambda m: m.content.startswith("Doubled"), within=30)
        await wait_idle(fake, bot, within=30)
        contents = [m.content for m in fake.messages(thread)]
    assert [r["model"] for r in llm.requests] == [MODEL, MODEL, MODEL]  # nothing else was ever asked
    header = contents[0]
    assert MODEL in header and "gpt-" not in header, header  # the header names what really runs
    assert any("calculator" in c and "391" in c for c in contents)  # the tool step ran and was shown
    assert not any("switched" in c or "does not know" in c or "not found" in c for c in contents), contents
    footers = [c for c in contents if "tokens" in c]
    assert len(footers) == 2 and all(MODEL in f for f in footers)
