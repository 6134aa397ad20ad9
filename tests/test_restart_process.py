"""Restarts with real processes: `agentbot run` against the fake Discord and the scripted LLM.

A run killed with SIGKILL mid-step resumes from its last checkpoint at the next start, without
redoing (or re-charging) the steps it had finished; SIGTERM pauses a run and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import flat, run
from tests.warm_agentbot import WarmProcess, start_agentbot

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))

_started: list[asyncio.subprocess.Process | WarmProcess] = []


@pytest.fixture(autouse=True)
async def _no_bot_left_running() -> AsyncIterator[None]:
    """A test that fails before it kills its `agentbot run` leaves none behind (seen: one still running
    21 minutes later, eating the CPU of every test after it)."""
    yield
    while _started:
        proc = _started.pop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def start_bot_process(
    fake: FakeDiscord, llm: FakeLLM, data: Path, guild: FakeGuild, log: Path, **settings: str
) -> asyncio.subprocess.Process | WarmProcess:
    """``settings``: more of the bot's environment, or other values for these."""
    data.mkdir(exist_ok=True)
    tiers = data / "tiers.toml"
    tiers.write_text(
        '[tiers]\nsimple = ["gpt-4o-mini"]\nmedium = ["gpt-4o-mini"]\ncomplex = ["gpt-4o-mini"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_", "AGENT_"))}
    env |= {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-restart-test-0001",
        "DATA_DIR": str(data),
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_SYNC_GUILD_ID": str(guild.id),
        "MEMORY_ENABLED": "false",
        "ROUTER_TIERS_FILE": str(tiers),
        "LOG_FORMAT": "json",
        "BOT_SHUTDOWN_GRACE_SECONDS": "1",
        "PYTHON_SANDBOX": "off",
    } | settings
    before = fake.identify_count
    with log.open("ab") as stderr:
        proc = await start_agentbot(
            "run", cwd=data, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
    _started.append(proc)
    await fake.wait_for(
        lambda: fake.identify_count > before or proc.returncode is not None,
        within=30,
        what="the bot process to connect",
    )
    assert proc.returncode is None, log.read_text()[-3000:]
    await fake.wait_for(lambda: fake.commands(guild), within=30, what="slash commands")
    return proc


async def test_restart_after_kill_9_resumes_the_run_from_its_checkpoint(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "6*7"}, prompt_tokens=1200, completion_tokens=30),
        Reply(hang=True),
        text("Resumed: the answer is 42.", prompt_tokens=1300, completion_tokens=70),
    )
    log = tmp_path / "bot.log"
    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general, within=20)
    await fake.wait_for(lambda: len(llm.requests) == 2, within=20, what="step 2's model call")
    proc.kill()  # SIGKILL mid-step: no chance to clean up
    await proc.wait()

    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    try:
        await fake.wait_for_message(
            thread, lambda m: m.content.startswith("Resumed: the answer is 42."), within=30
        )
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
        contents = [m.content for m in fake.messages(thread)]
        assert any(c.startswith("♻️ Interrupted by a restart: resuming from step 2.") for c in contents)
        # Step 1 was not redone: three model calls in all, the last one seeing step 1's result.
        assert len(llm.requests) == 3
        roles = [m["role"] for m in llm.requests[2]["messages"]]
        assert roles == ["system", "user", "assistant", "tool"]
        assert llm.requests[2]["messages"][-1]["content"] == "42"
        assert fake.duplicates == []
        # The footer counts the step done before the kill too, so it agrees with /usage (the call cut
        # off by the kill is charged its prompt by estimate: tests/test_blackbox_restarts13.py); the
        # resume note was paced with the rest: never more than 5 writes in 5 s (4.9: the fake stamps
        # arrival, a few ms after sending).
        footer = next(c for c in contents if "tokens" in c)
        said = re.search(r"2 steps · estimated: ([\d,]+) tokens \(([\d,]+) in, 100 out\)", footer)
        assert said, footer
        usage = await run(fake, guild, "usage me", user="alice")
        assert f"**Tokens today**: ~{said.group(1)} of" in flat(usage)
        assert fake.max_writes_in_window(thread, 4.9) <= 5

        # SIGTERM: a clean exit (0) once running turns are paused or done.
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_follow_up_queued_when_the_bot_is_killed_is_answered_after_the_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(Reply(hang=True), text("Paris."), text("About 2.1 million people."))
    log = tmp_path / "bot.log"
    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general, within=20)
    await fake.wait_for(lambda: len(llm.requests) == 1, within=20, what="the first model call")
    # It carries a file: only its text is stored, so the restarted bot fetches the message again for it.
    csv = b"year,people\n2024,2100000\n"
    follow_up = fake.inject_message(
        thread, "alice", "How many people live there?", attachments=[("pop.csv", csv)]
    )
    # ⏳ is added once the follow-up is stored: then the kill can no longer lose it.
    await fake.wait_for(lambda: "⏳" in fake.message(follow_up.id).reactions, within=20, what="⏳")
    proc.kill()
    await proc.wait()

    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    try:
        await fake.wait_for_message(thread, lambda m: m.content == "About 2.1 million people.", within=30)
        await fake.wait_for(
            lambda: sum("tokens" in m.content for m in fake.messages(thread)) == 2, what="both footers"
        )
        contents = [m.content for m in fake.messages(thread)]
        note = "⏳ Answering a follow-up queued before the restart: “How many people live there?”"
        first = next(i for i, c in enumerate(contents) if c.startswith("Paris."))
        assert first < next(i for i, c in enumerate(contents) if c.startswith(note))
        # Answered once, after the interrupted turn, with that turn's answer in its history.
        assert len(llm.requests) == 3
        convo = [(m["role"], m["content"]) for m in llm.requests[2]["messages"] if m["role"] != "system"]
        assert convo[:2] == [("user", "Capital of France?"), ("assistant", "Paris.")]
        role, asked = convo[2]
        assert role == "user" and asked.startswith("How many people live there?"), convo
        assert "pop.csv (" in asked, asked  # the file reached the agent, not the text alone
        assert fake.duplicates == []
        assert fake.max_writes_in_window(thread, 4.9) <= 5
    finally:
        proc.kill()
        await proc.wait()

    # A third start finds nothing left to answer.
    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    try:
        usage = await run(fake, guild, "usage me", user="alice")
        assert "**Requests today**: 2 of" in flat(usage)
        assert len(llm.requests) == 3
    finally:
        proc.kill()
        await proc.wait()
