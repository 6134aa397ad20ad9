"""Follow-ups in a session thread as members write, edit and delete them: the real discord.py bot on
the fake Discord, the scripted model on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text


@pytest.mark.usefixtures("fast_write_window")
async def test_a_queued_follow_up_deleted_before_its_turn_is_not_answered_or_charged(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Deleting the ⏳ message withdraws the question, while the bot runs or while it is down (a
    restart answers what was queued): it was answered (and charged) as if it still stood."""
    llm.script(Reply(hang=True), text("Tides."), text("Sun."), text("Not asked."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0.2) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        moon = fake.inject_message(thread, "alice", "and the moon?")
        fake.inject_message(thread, "alice", "and the sun?")
        stars = fake.inject_message(thread, "alice", "and the stars?")
        await fake.wait_for(lambda: "⏳" in fake.message(stars.id).reactions, what="all three queued")
        fake.state.delete_message(fake.message(moon.id), via="user")  # while the bot runs
        async with asyncio.timeout(10):  # the store is the only sign: nothing is shown for it
            while len(await bot.services.sessions.queued_turns()) != 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    fake.state.delete_message(fake.message(stars.id), via="user")  # while the bot is down
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await fake.wait_for_message(thread, lambda m: m.content == "Sun.", within=15)
        await wait_idle(fake, bot)
        queued = await bot.services.sessions.queued_turns()
    asked = [r["messages"][-1]["content"] for r in llm.requests]
    assert asked == ["tides", "tides", "and the sun?"]
    assert queued == []


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"))


async def test_editing_a_request_that_waits_for_a_free_slot_runs_the_edit(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """At the bot-wide cap a mention waits for a slot and its author fixes a typo meanwhile: the old
    text ran, and the edit was neither taken nor offered for a re-run. Another waiting mention is
    deleted: it ran all the same, into its thread."""
    llm.script(text("First answer.", delay=1.5), text("Madrid."), text("Never mind."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, BOT_MAX_CONCURRENT_RUNS=1) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        await fake.wait_for(lambda: llm.requests, what="the first run's model call")
        asked = fake.inject_message(general, "bob", f"<@{bot.user.id}> Capital of Spian?")
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 2, what="the second thread")
        second = fake.threads(parent=general)[-1]
        await fake.wait_for_message(second, lambda m: "waiting for a free slot" in m.content, within=10)
        edit_message(fake, asked, f"<@{bot.user.id}> Capital of Spain?")
        gone = fake.inject_message(general, "alice", f"<@{bot.user.id}> never mind this")
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 3, what="the third thread")
        third = fake.threads(parent=general)[-1]
        await fake.wait_for_message(third, lambda m: "waiting for a free slot" in m.content, within=10)
        fake.state.delete_message(fake.message(gone.id), via="user")
        await fake.wait_for_message(second, lambda m: m.content == "Madrid.", within=15)
        await wait_idle(fake, bot)
    assert len(llm.requests) == 2
    assert any("before it started" in m.content for m in fake.messages(third))
    assert llm.requests[1]["messages"][-1]["content"] == "Capital of Spain?"
    assert "Spian" not in str(llm.requests[1]["messages"])


@pytest.mark.usefixtures("fast_write_window")
async def test_a_follow_up_stored_while_the_running_turn_ends_is_answered_and_loses_its_mark(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A follow-up is stored before it is queued. When the running turn ended during that write (a
    slow disk or database), the follow-up was queued behind a worker that had left: ⏳ stayed and it was
    never answered (seen in CI under load)."""
    llm.script(text("Tides.", delay=1.0), text("Moon."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        store, runner = bot.services.sessions, bot.runner
        queue_turn = store.queue_turn

        async def slow_store(session_id: str, *args: object) -> int:
            while runner.active(session_id):  # noqa: ASYNC110 (the write outlasts the running turn)
                await asyncio.sleep(0.02)
            return await queue_turn(session_id, *args)

        store.queue_turn = slow_store  # type: ignore[method-assign]
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        moon = fake.inject_message(thread, "alice", "and the moon?")
        await fake.wait_for_message(thread, lambda m: m.content == "Moon.", within=15)
        await wait_idle(fake, bot)
        queued = await store.queued_turns()
    assert [r["messages"][-1]["content"] for r in llm.requests] == ["tides", "and the moon?"]
    assert queued == [] and not fake.message(moon.id).reactions.get("⏳")


async def test_a_queued_mark_that_lands_after_its_turn_started_is_taken_off(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The ⏳ goes on after a wait for the bot-wide REST budget. When the queued turn started during that
    wait, its start found no mark to take off, and ⏳ stayed on an answered message."""
    llm.script(text("Tides.", delay=1.0), text("Moon."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        runner, moon_id = bot.runner, 0
        acquire = runner.rest_budget.acquire

        async def late_mark(*args: object) -> None:
            task = asyncio.current_task()
            if moon_id and task is not None and task.get_name() == "discord.py: on_message":
                while runner.queued(moon_id):  # noqa: ASYNC110 (the mark waits until its turn has started)
                    await asyncio.sleep(0.02)
            await acquire(*args)  # type: ignore[arg-type]

        runner.rest_budget.acquire = late_mark  # type: ignore[method-assign]
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        moon_id = fake.inject_message(thread, "alice", "and the moon?").id
        await fake.wait_for_message(thread, lambda m: m.content == "Moon.", within=15)
        await wait_idle(fake, bot)
        await fake.wait_for(lambda: "⏳" in fake.message(moon_id).reactions, what="the late mark")
    assert not fake.message(moon_id).reactions.get("⏳")
