"""A session waiting for a bot-wide run slot, as its member meets it: the real discord.py bot on the fake
Discord, the scripted model on 127.0.0.1.

Decision (README, Quotas): a session waiting for a run slot keeps its member's session slot (it is
their session, and the limit bounds how many one member can queue ahead of the rest of their server);
the refusal says "running or waiting". Deleting, archiving or locking the waiting thread gives the
slot back at once: it used to stay taken until a run slot freed, so the member could start nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"))


async def answer(fake: FakeDiscord, inter) -> str:
    await fake.wait_for(
        lambda: (
            inter.followup_ids
            or (inter.original_message_id and not fake.message(inter.original_message_id).loading)
        ),
        what="the interaction's answer",
    )
    return fake.message((inter.followup_ids or [inter.original_message_id])[-1]).content


async def test_a_deleted_waiting_thread_gives_its_members_session_slot_back_at_once(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("", hang=True))  # alice's run: until she stops it
    general = guild.channel("general")
    settings = {"BOT_MAX_CONCURRENT_RUNS": 1, "QUOTA_CONCURRENT_SESSIONS": 1}
    async with running_bot(fake, llm, tmp_path, guild, **settings) as bot:
        fake.inject_interaction("research", {"task": "one"}, user="alice", channel=general)
        first = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="alice's run holding the only run slot")

        fake.inject_interaction("research", {"task": "two"}, user="bob", channel=general)
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 2, what="bob's thread")
        waiting = fake.threads(parent=general)[-1]
        await fake.wait_for_message(waiting, lambda m: "waiting for a free slot" in m.content, within=10)
        gone = await bot.services.sessions.by_thread(waiting.id)
        assert gone is not None
        fake.delete_thread(waiting)
        await fake.wait_for(lambda: not bot.runner.active(gone.id), what="the deleted session to leave")

        again = fake.inject_interaction("research", {"task": "three"}, user="bob", channel=general)
        queued = await answer(fake, again)
        more = fake.inject_interaction("research", {"task": "four"}, user="bob", channel=general)
        refused = await answer(fake, more)

        third = next(t for t in fake.threads(parent=general) if t.id not in (first.id, waiting.id))
        await fake.wait_for_message(third, lambda m: "waiting for a free slot" in m.content, within=10)
        fake.inject_interaction("stop", {}, user="bob", channel=third)
        fake.inject_interaction("stop", {}, user="alice", channel=first)
        await wait_idle(fake, bot)
        gone_turns = await bot.services.sessions.turns(gone.id)
        stored = await bot.services.sessions.queued_turns()
    assert queued.startswith("Queued in"), queued  # it used to be refused: "you have 1 running"
    assert "Too many sessions at once: you have 1 running or waiting for a free slot (limit 1)" in refused
    assert gone_turns == [] and stored == []  # the deleted one never ran, and nothing waits for a restart
    assert [r["messages"][-1]["content"] for r in llm.requests] == ["one"]
