"""Mentions, and members writing in session threads, as they meet them: the real discord.py bot on the
fake Discord, the scripted model on 127.0.0.1 (found by the black-box QA of the bot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.test_e2e_config import run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general", "bots"), members=("alice", "bob", "carol", "dave"))


async def test_a_channel_the_admins_left_out_gets_no_reply_to_a_mention(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """With /config channels set to #bots, a bare mention in #general was still answered there ("Ask me
    something after the mention"), while a mention with a question was rightly ignored."""
    llm.script(text("Hello from #bots."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await run(fake, guild, "config channels", {"action": "add", "channel": guild.channel("bots")})
        general, bots = guild.channel("general"), guild.channel("bots")
        fake.inject_message(general, "alice", f"<@{bot.user.id}>")
        fake.inject_message(general, "alice", f"<@{bot.user.id}> hello?")
        fake.inject_message(bots, "alice", f"<@{bot.user.id}>")  # the hint still comes where it may
        await fake.wait_for_message(bots, lambda m: m.content.startswith("Ask me something"))
        fake.inject_message(bots, "alice", f"<@{bot.user.id}> hello?")
        thread = await fake.wait_for_thread(parent=bots)
        await fake.wait_for_message(thread, lambda m: m.content == "Hello from #bots.")
        await wait_idle(fake, bot)
    assert [m.content for m in fake.messages(general) if m.author.bot and m.visible] == []
    assert fake.threads(parent=general) == []
    assert [r["messages"][-1]["content"] for r in llm.requests] == ["hello?"]


async def test_a_follow_up_posted_while_the_new_thread_is_routed_is_answered(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread is open (members see it) while its session is routed, here by a judge model taking a
    second: a message the requester posted there meanwhile was taken for one in no session and dropped
    without a word. It is now answered after the first turn, as any follow-up queued behind it."""
    monkeypatch.setenv("ROUTER_CLASSIFIER", "judge")
    monkeypatch.setenv("ROUTER_JUDGE_MODEL", "gpt-4o-mini")
    llm.script(
        text("simple", delay=0.5, prompt_tokens=50, completion_tokens=1),
        text("Paris."),
        text("simple", prompt_tokens=50, completion_tokens=1),  # the follow-up is routed too
        text("About 2.1 million."),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        fake.inject_message(thread, "alice", "And how many live there?")
        await fake.wait_for_message(thread, lambda m: m.content == "About 2.1 million.", within=15)
        await wait_idle(fake, bot)
    asked = [r["messages"][-1]["content"] for r in (llm.requests[1], llm.requests[3])]
    assert asked == ["Capital of France?", "And how many live there?"]


async def test_members_chatting_during_a_run_keep_the_thread_within_five_writes_in_five_seconds(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Each member who writes in someone else's public thread without asking is told once how to ask;
    those replies were written outside the thread's window: three members chatting while a run
    streamed made 8 writes in 5 s."""
    steps = [tool_call("calculator", {"expression": f"{i}*2"}, delay=0.2) for i in range(5)]
    llm.script(*steps, text("Done."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "many steps"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: len(llm.requests) >= 2, what="step 2")
        for member in ("bob", "carol", "dave", "bob"):
            fake.inject_message(thread, member, "cool!")
        await fake.wait_for_message(thread, lambda m: m.content == "Done.", within=20)
        await wait_idle(fake, bot)
    hints = [m for m in fake.messages(thread) if m.content.startswith("-# I only answer the person")]
    assert len(hints) == 3  # once per member
    assert fake.max_writes_in_window(thread, 4.9) <= 5
    assert len(llm.requests) == 6  # nobody's "cool!" started a turn
