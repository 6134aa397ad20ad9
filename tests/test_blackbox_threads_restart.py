"""Restarts as members meet them: `agentbot run` killed with SIGKILL (or the in-process bot stopped)
against the fake Discord and the scripted model, then started again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text
from tests.test_restart_process import _no_bot_left_running, start_bot_process  # noqa: F401 (fixture)


async def test_a_turn_killed_before_its_first_step_still_reads_its_file_after_the_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The kill lands while the /research file is downloaded (after the turn is on record, before
    its first checkpoint): the re-run after the restart gets the file, and the model is told of it."""
    llm.script(text("Your notes say Paris."))
    log = tmp_path / "bot.log"
    fake.state.attachment_gate = gate = asyncio.Event()  # a slow CDN: the download waits
    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    general = guild.channel("general")
    notes = ("notes.txt", b"The capital of France is Paris.\n")
    fake.inject_interaction(
        "research", {"task": "What do my notes say?", "file": notes}, user="alice", channel=general
    )
    thread = await fake.wait_for_thread(parent=general, within=20)
    await fake.wait_for(lambda: fake.state.attachment_downloads, within=20, what="the file's download")
    proc.kill()
    await proc.wait()
    gate.set()

    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    try:
        await fake.wait_for_message(thread, lambda m: m.content == "Your notes say Paris.", within=30)
        contents = [m.content for m in fake.messages(thread)]
        assert any(c.startswith("♻️ Interrupted by a restart before its first step") for c in contents)
        (request,) = llm.requests
        asked = request["messages"][-1]["content"]
        assert asked.startswith("What do my notes say?") and "notes.txt (" in asked, asked
    finally:
        proc.kill()
        await proc.wait()


async def test_a_run_waiting_for_a_free_slot_when_the_bot_restarts_is_answered_after_it(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """At the bot-wide cap a mention waits for a slot; the bot restarts meanwhile. It was kept only in
    memory: after the restart its header said "waiting for a free slot" forever and nothing answered
    it. (Its message is in the channel, not the thread: the restart must find it there.)"""
    llm.script(Reply(hang=True), text("First, resumed."), text("Second answer."))
    general = guild.channel("general")
    settings = {"BOT_MAX_CONCURRENT_RUNS": 1, "BOT_SHUTDOWN_GRACE_SECONDS": 0.2}
    async with running_bot(fake, llm, tmp_path, guild, **settings) as bot:
        fake.inject_interaction("research", {"task": "one"}, user="alice", channel=general)
        await fake.wait_for(lambda: llm.requests, what="the first run's model call")
        fake.inject_message(general, "alice", f"<@{bot.user.id}> two")
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 2, what="the second thread")
        second = fake.threads(parent=general)[-1]
        await fake.wait_for_message(second, lambda m: "waiting for a free slot" in m.content, within=10)
    async with running_bot(fake, llm, tmp_path, guild, **settings) as bot:
        await fake.wait_for_message(second, lambda m: m.content == "Second answer.", within=20)
        await wait_idle(fake, bot)
        header = fake.messages(second)[0].content
    assert [r["messages"][-1]["content"] for r in llm.requests] == ["one", "one", "two"]
    assert "✅ done" in header, header
