"""Mentions of the bot outside its session threads: the real discord.py bot on the fake Discord, the
scripted model on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general",), members=("alice",))
    g.add_thread(g.channel("general"), "chat about tides", owner=g.member("alice").user)
    return g


@pytest.mark.usefixtures("fast_write_window")
async def test_a_mention_in_a_thread_that_is_no_session_says_where_to_ask(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Discord cannot open a thread inside a thread, so the bot did nothing at all: the member got no
    answer and no hint. One quiet reply says where to ask; nothing runs."""
    (thread,) = guild.threads
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        asked = fake.inject_message(thread, "alice", f"<@{bot.user.id}> how high is the tide?")
        reply = await fake.wait_for_message(thread, lambda m: m.author.id == bot.user.id, within=10)
        fake.inject_message(thread, "alice", "and without a mention?")
        await wait_idle(fake, bot)
    assert reply.reference_id == asked.id
    assert "/research" in reply.content and reply.pinged_user_ids == []
    assert [m.content for m in fake.messages(thread) if m.author.id == bot.user.id] == [reply.content]
    assert llm.requests == []
