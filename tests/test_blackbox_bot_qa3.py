"""Members and admins of Discord servers at the edges nobody walked before (stopping another member's
turn, two servers' settings, hostile /config values, long answers): the real discord.py bot on the fake
Discord, the scripted model on 127.0.0.1 (found by the third black-box QA pass of the bot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create(
        "Lab", channels=("general",), members=("alice", "bob", "carol"), admins=("admin",)
    )


async def test_the_member_who_asked_the_running_follow_up_can_stop_it_and_a_bystander_cannot(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Bob's follow-up in alice's thread runs charged to bob, but only alice or a moderator could stop
    it: bob watched his own paid turn run on with no way to end it."""
    llm.script(text("Tides follow the moon."), Reply(text="Nobody reads this.", delay=3))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Tides follow" in m.content, within=10)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "bob", f"<@{bot.user.id}> And waves?")
        await fake.wait_for(lambda: len(llm.requests) == 2, what="bob's turn's model call")
        header = fake.messages(thread)[0]
        (stop,) = [c["custom_id"] for row in header.components for c in row["components"]]
        by_carol = fake.inject_component(stop, message=header, user="carol")
        await fake.wait_for(lambda: by_carol.responses, what="carol's click answered")
        by_bob = fake.inject_component(stop, message=header, user="bob")
        stopped = await fake.wait_for_message(
            thread, lambda m: m.content.startswith("Stopped by bob"), within=10
        )
        await wait_idle(fake, bot)
    assert "can stop it" in by_carol.responses[0]["data"]["content"]
    assert by_bob.responses[0]["data"]["content"] == "Stopping…"
    assert "Nobody reads this." not in [m.content for m in fake.messages(thread)], stopped.content
    assert "⏹️ stopped" in fake.messages(thread)[0].content
