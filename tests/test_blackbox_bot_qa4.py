"""Members of a Discord server across a restart, at their limits and past the step limit: the real
discord.py bot on the fake Discord, the scripted model on 127.0.0.1 (found by the fourth black-box QA
pass of the bot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import flat, run


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general",), members=("bob",), admins=("admin",))
    g.add_member("alice", roles=[g.add_role("Pro")])
    return g


async def test_a_restart_with_a_running_a_waiting_and_a_queued_turn_tells_each_thread_what_it_does(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """One run slot: alice's research runs (a follow-up queued behind it), bob's waits for the slot,
    and the bot restarts. Bob's research, never started, was announced as "Answering a follow-up
    queued before the restart: <his own task>" (he had asked no follow-up); alice's paused run said
    it "pauses after step 0"."""
    llm.script(Reply(hang=True), text("Tides: the moon."), text("Waves: the wind."), text("Salt: rocks."))
    settings = {"BOT_SHUTDOWN_GRACE_SECONDS": 0.2, "BOT_MAX_CONCURRENT_RUNS": 1}
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, **settings):
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        tides = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="alice's model call")
        running = await run(fake, guild, "usage me", user="alice")
        fake.inject_interaction("research", {"task": "salt"}, user="bob", channel=general)
        salt = await fake.wait_for_thread(parent=general, name="🔎 salt")
        await fake.wait_for_message(salt, lambda m: "waiting for a free slot" in m.content, within=10)
        follow_up = fake.inject_message(tides, "alice", "And waves?")
        await fake.wait_for(lambda: "⏳" in fake.message(follow_up.id).reactions, what="⏳")
    async with running_bot(fake, llm, tmp_path, guild, **settings) as bot:
        await fake.wait_for(lambda: len(llm.requests) == 4, what="every turn's model call", within=20)
        await wait_idle(fake, bot)
    # Her tokens today showed the step's reservation (no footer had any such number) unexplained.
    assert "what your running research may use next" in flat(running), flat(running)
    said = {t.name: [m.content for m in fake.messages(t)] for t in (tides, salt)}
    assert not any("follow-up" in c for c in said["🔎 salt"]), said["🔎 salt"]
    assert any("was waiting to start before the restart" in c for c in said["🔎 salt"])
    assert any(
        c.startswith("⏳ Answering a follow-up queued before the restart: “And waves?”")
        for c in said["🔎 tides"]
    )
    assert "⏸️ The bot is restarting: this run pauses before its first step" in "".join(said["🔎 tides"])
    assert not any("step 0" in c for c in said["🔎 tides"]), said["🔎 tides"]
    for thread in (tides, salt):
        header = fake.messages(thread)[0]
        assert "✅ done" in header.content and header.components == [], header.content


@pytest.mark.usefixtures("fast_write_window")
async def test_two_members_follow_up_at_once_and_the_one_at_his_limit_is_named_and_not_charged(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Alice and bob follow up in alice's thread at the same moment; bob has used his one request of
    the day. The refusal said "you've made 1 of 1 requests today" under nobody's name, right beside
    alice's answer: it read as alice's own limit. Alice's research had reached the step limit: she was
    not told that a follow-up goes on from it (it does: the model gets the steps' results)."""
    calc = tool_call("calculator", {"expression": "6*7"})
    llm.script(text("Salt: rocks."), calc, text("Waves: the wind."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await run(fake, guild, "config limits", {"limit": "requests_per_day", "value": "1"})
        pro = {"limit": "requests_per_day", "value": "10", "role": guild.role("Pro")}
        await run(fake, guild, "config limits", pro)
        await run(fake, guild, "config max-steps", {"steps": 1})
        fake.inject_interaction("research", {"task": "salt"}, user="bob", channel=general)
        await fake.wait_for(lambda: llm.requests, what="bob's research")
        await wait_idle(fake, bot)
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        tides = await fake.wait_for_thread(parent=general, name="🔎 tides")
        limit = await fake.wait_for_message(tides, lambda m: "step limit" in m.content, within=10)
        await wait_idle(fake, bot)
        fake.inject_message(tides, "alice", "And waves?")
        fake.inject_message(tides, "bob", f"<@{bot.user.id}> And rocks?")
        refused = await fake.wait_for_message(tides, lambda m: m.content.startswith("⛔"), within=10)
        await fake.wait_for_message(tides, lambda m: m.content == "Waves: the wind.", within=10)
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="bob"))
    bob = guild.member("bob").user.id
    assert refused.content.startswith(f"⛔ <@{bob}>: Daily request limit reached"), refused.content
    assert refused.components == [] and refused.allowed_mentions == {"parse": []}, refused.allowed_mentions
    assert "**Requests today**: 1 of 1" in usage and len(llm.requests) == 3, usage
    assert "⏱️ step limit reached: a follow-up here goes on from it" in limit.content, limit.content
    assert [m["content"] for m in llm.requests[-1]["messages"][-2:]] == ["42", "And waves?"]
