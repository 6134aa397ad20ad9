"""Restarts as members meet them: `agentbot run` killed with SIGKILL against the fake Discord and the
scripted model, then started again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_restart_process import start_bot_process


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
