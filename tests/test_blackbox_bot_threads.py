"""What a member sees in a session thread, driven as users drive it: the real discord.py bot on the fake
Discord, the scripted model on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text


async def test_a_follow_up_refused_by_a_quota_leaves_the_header_saying_done(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing was stopped: the finished answer stands, only the new request was refused."""
    monkeypatch.setenv("QUOTA_REQUESTS_PER_DAY", "1")
    llm.script(text("first answer"))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "first"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "first answer", within=15)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "alice", "more please")
        await fake.wait_for_message(thread, lambda m: "Daily request limit reached" in m.content, within=15)
        await wait_idle(fake, bot)  # the header is edited before the session goes idle
        header = fake.messages(thread)[0]
    assert "✅ done" in header.content and "stopped" not in header.content, header.content
    assert len(llm.requests) == 1
