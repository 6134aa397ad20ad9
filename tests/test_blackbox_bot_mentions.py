"""Mentions, and members writing in session threads, as they meet them: the real discord.py bot on the
fake Discord, the scripted model on 127.0.0.1 (found by the black-box QA of the bot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_models import INTENT_GUILD_MESSAGES
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
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


async def test_a_new_thread_keeps_an_early_follow_up_and_chatting_members_within_its_write_window(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread is open (members see it) while its session is routed, here by a judge model taking
    half a second: a message the requester posted there meanwhile was taken for one in no session and
    dropped without a word; it is now answered after the first turn, as any queued follow-up. Each
    member who writes in someone else's public thread without asking is told once how to ask; those
    replies were written outside the thread's window: three members chatting while a run streamed made
    8 writes in 5 s."""
    monkeypatch.setenv("ROUTER_CLASSIFIER", "judge")
    monkeypatch.setenv("ROUTER_JUDGE_MODEL", "gpt-4o-mini")
    steps = [tool_call("calculator", {"expression": f"{i}*2"}, delay=0.2) for i in range(4)]
    answers = [*steps, text("Done."), text("About 2.1 million.")]

    def respond(body: dict[str, Any]) -> Reply:  # the judge is offered no tools
        return answers.pop(0) if body.get("tools") else text("simple", delay=0.5, completion_tokens=1)

    llm.responder = respond
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        fake.inject_message(thread, "alice", "And how many live there?")
        await fake.wait_for(lambda: len(llm.requests) >= 3, what="step 2")
        for member in ("bob", "carol", "dave", "bob"):
            fake.inject_message(thread, member, "cool!")
        await fake.wait_for_message(thread, lambda m: m.content == "About 2.1 million.", within=20)
        await wait_idle(fake, bot)
    asked = [
        r["messages"][-1]["content"]
        for r in llm.requests
        if r.get("tools") and r["messages"][-1]["role"] == "user"
    ]
    assert asked == ["Capital of France?", "And how many live there?"]  # nobody's "cool!" started a turn
    hints = [m for m in fake.messages(thread) if m.content.startswith("-# I only answer the person")]
    assert len(hints) == 3  # once per member
    writes = [(round(w.t, 2), w.kind, w.message_id) for w in fake.writes(thread) if w.via == "channel"]
    assert fake.max_writes_in_window(thread, 4.9) <= 5, writes


async def test_queued_follow_ups_purged_by_a_moderator_are_withdrawn(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Deleting a queued (⏳) follow-up withdraws it; a moderator's purge of several messages comes as
    one MESSAGE_DELETE_BULK, which the bot ignored: the deleted questions were answered and charged."""
    llm.script(Reply(text="Paris.", delay=1), text("never asked"), text("never asked either"))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        queued = [fake.inject_message(thread, "alice", text) for text in ("spam", "more spam")]
        await fake.wait_for(lambda: all("⏳" in fake.message(m.id).reactions for m in queued), what="⏳")
        for m in queued:
            m.deleted = True
        ids = [str(m.id) for m in queued]
        payload = {"ids": ids, "channel_id": str(thread.id), "guild_id": str(guild.id)}
        fake.state.dispatch("MESSAGE_DELETE_BULK", payload, intent=INTENT_GUILD_MESSAGES)
        await fake.wait_for_message(thread, lambda m: m.content == "Paris.")
        await wait_idle(fake, bot)
    assert len(llm.requests) == 1
