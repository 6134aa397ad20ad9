"""End to end: the real discord.py bot, the fake Discord and the scripted LLM, all over 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild, FakeUser
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))
    g.add_member(FakeUser("otherbot", bot=True))
    return g


@pytest.fixture
async def fake(guild: FakeGuild) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord([guild]) as server:
        yield server


async def research(fake: FakeDiscord, guild: FakeGuild, task: str, user: str = "alice"):
    general = guild.channel("general")
    inter = fake.inject_interaction("research", {"task": task}, user=user, channel=general)
    thread = await fake.wait_for_thread(parent=general, name=None)
    return inter, thread


async def test_e2e_research_streams_steps_and_final_answer_in_order(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "6*7"}),
        text("The answer is **42**. @everyone look!", prompt_tokens=300, completion_tokens=40),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        inter, thread = await research(fake, guild, "What is 6*7?")
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        msgs = fake.messages(thread)
        contents = [m.content for m in msgs]
        assert contents[0].startswith("🔎 **Research** for") and "> What is 6*7?" in contents[0]
        assert msgs[0].components[0]["components"][0]["custom_id"].startswith("agentbot:stop:")
        step = next(i for i, c in enumerate(contents) if "calculator" in c)
        final = next(i for i, c in enumerate(contents) if c.startswith("The answer is **42**."))
        footer = next(i for i, c in enumerate(contents) if "tokens" in c)
        assert 0 < step < final < footer == len(contents) - 1
        assert '6*7' in contents[step] and "↳" in contents[step] and "42" in contents[step]
        assert "2 steps" in contents[footer] and "$0.0" in contents[footer] and "gpt-4o-mini" in contents[footer]
        # Nothing the model writes can ping anyone.
        assert all(m.allowed_mentions is not None and m.allowed_mentions.get("parse") == [] for m in msgs)
        assert all(not m.pinged_user_ids for m in msgs)
        # The interaction was deferred and answered ephemerally; the session wrote only in its thread.
        assert inter.response_type == 5
        assert f"<#{thread.id}>" in fake.message(inter.original_message_id).content
        general = guild.channel("general")
        assert not [m for m in fake.messages(general, include_ephemeral=False) if m.via == "channel"]
        assert fake.duplicates == []
