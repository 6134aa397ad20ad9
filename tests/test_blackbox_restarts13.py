"""The bot's life across kill -9 and restarts, with real processes: `agentbot run` against the fake
Discord and the scripted model, killed and started again on the same DATA_DIR. What the member sees in
the thread, what /usage says and what the operator's log says must agree and be honest.

One test, four starts of the bot (and a second one refused): each kill's restart is the next scenario's running bot."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from bot import run_policy
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.chroma_server import ChromaServer
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import flat, run
from tests.test_restart_process import _no_bot_left_running, start_bot_process  # noqa: F401 (fixture)
from tests.warm_agentbot import start_agentbot

SLOW = "import time\nprint('computing', flush=True)\ntime.sleep(60)\nprint(6 * 7)"


def _tokens(said: str) -> int:
    return int(said.replace(",", ""))


async def test_kill_9_as_a_research_starts_and_while_a_call_is_in_flight(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """1. The bot is killed the instant a new /research's header reaches its thread ("⏳ running…"),
    before its first turn is stored. The restart resumed nothing: the header said "running" for
    good, the research never ran and the member was never told. Now the session's request is stored
    with the session, so the restart runs it, once, with a note saying why it starts late.

    2. Step 2's model call is under way (the provider has the prompt, and bills it) when the bot is
    killed. Its hold was dropped at the next start and the call charged nothing: the footer and /usage
    said 2,600 tokens, as if it had never been sent, so crash after crash spent the server's money past
    its limits. Now the next start charges the prompt part of each hold left behind, marked estimated:
    the footer, /usage and the log say so, and nothing of the answer cap it held is charged."""
    llm.script(
        text("Paris.", prompt_tokens=300, completion_tokens=20),
        tool_call("calculator", {"expression": "6*7"}, prompt_tokens=1200, completion_tokens=30),
        Reply(hang=True),
        text("Resumed: the answer is 42.", prompt_tokens=1300, completion_tokens=70),
        tool_call("run_python", {"code": SLOW}, prompt_tokens=250, completion_tokens=50),
        text("Forty-two, computed again.", prompt_tokens=300, completion_tokens=120),
    )
    log = tmp_path / "bot.log"
    data = tmp_path / "data"
    general = guild.channel("general")

    def tail() -> str:
        return log.read_text()[-3000:]

    # 0. A second `agentbot run` on the same DATA_DIR is refused with one line, and says nothing else.
    proc = await start_bot_process(fake, llm, data, guild, log, PYTHON_SANDBOX="rlimits")
    second_log = tmp_path / "second.log"
    with second_log.open("wb") as err:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_", "AGENT_"))}
        env |= {"DATA_DIR": str(data), "DISCORD_TOKEN": fake.token, "DISCORD_API_BASE_URL": fake.api_url}
        env |= {"DISCORD_GATEWAY_URL": fake.gateway_url, "OPENAI_BASE_URL": llm.base_url}
        env |= {"OPENAI_API_KEY": "sk-restart-test-0001", "ROUTER_TIERS_FILE": str(data / "tiers.toml")}
        env |= {"MEMORY_ENABLED": "false", "LOG_FORMAT": "json", "PYTHON_SANDBOX": "off"}
        second = await start_agentbot("run", cwd=data, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err)
        assert await asyncio.wait_for(second.wait(), 60) == 2
    said = second_log.read_text().splitlines()
    assert len(said) == 1 and said[0].startswith("agentbot: DATA_DIR: another agentbot run already serves"), (
        said
    )

    # 1. Killed as the header shows: inside the header's request, so the bot never reads its reply.

    def kill_at_the_header() -> None:
        if proc.returncode is None and any(fake.messages(t) for t in fake.threads(parent=general)):
            proc.kill()

    fake.state.on_change.append(kill_at_the_header)
    fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
    await proc.wait()
    fake.state.on_change.clear()
    (paris,) = fake.threads(parent=general)
    assert "running" in fake.messages(paris)[0].content and not llm.requests

    proc = await start_bot_process(fake, llm, data, guild, log, PYTHON_SANDBOX="rlimits")
    # The header, whose id the kill kept from the store, is found again and ends as done.
    await fake.wait_for(lambda: "✅ done" in fake.messages(paris)[0].content, within=30, what="done")
    contents = [m.content for m in fake.messages(paris)]
    assert [c for c in contents if c.startswith("Paris.")] == ["Paris."], (contents, tail())
    assert any(c.startswith("⏳ Starting this research, which was waiting to start") for c in contents)
    assert not any("🧭" in c for c in contents), contents  # the header says the tier already
    assert any("1 step · 320 tokens" in c for c in contents), contents
    assert len(llm.requests) == 1 and fake.duplicates == []

    # 2. Killed while step 2's model call is under way.
    fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
    thread = await fake.wait_for(
        lambda: next((t for t in fake.threads(parent=general) if t.id != paris.id), None), what="a thread"
    )
    await fake.wait_for(lambda: len(llm.requests) == 3, within=20, what="step 2's model call")
    proc.kill()
    await proc.wait()

    proc = await start_bot_process(fake, llm, data, guild, log, PYTHON_SANDBOX="rlimits")
    await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
    usage = flat(await run(fake, guild, "usage me", user="alice"))
    contents = [m.content for m in fake.messages(thread)]
    footer = next(c for c in contents if "tokens" in c)
    said = re.search(r"2 steps · estimated: ([\d,]+) tokens \(([\d,]+) in, 100 out\)", footer)
    assert said, (footer, tail())
    total, prompt = _tokens(said.group(1)), _tokens(said.group(2))
    # The lost call's prompt, as its hold counted it: about step 2's prompt (step 3 re-sent it, 1,300
    # in the server's count), never the 8,192-token answer cap the hold also held.
    assert 300 < prompt - 2500 < 4000, footer
    assert total == prompt + 100
    assert f"**Tokens today**: ~{total + 320:,} of" in usage, (footer, usage)
    assert "**Requests today**: 2 of" in usage, usage
    lines = [ln for ln in log.read_text().splitlines() if "interrupted_calls_charged" in ln]
    assert len(lines) == 1 and '"calls": 1' in lines[0], tail()

    # 3. SIGTERM while step 1's tool runs: its model call was made, its result never came, so the step
    # is not in the conversation the run is saved with. The thread said "pauses after step 1", then
    # "resuming from step 2", and ran step 1 again labelled step 2. Now it says the step starts again.
    known = {t.id for t in fake.threads(parent=general)}
    fake.inject_interaction("research", {"task": "Compute 6*7 slowly"}, user="alice", channel=general)
    slow = await fake.wait_for(
        lambda: next((t for t in fake.threads(parent=general) if t.id not in known), None), what="a thread"
    )
    await fake.wait_for(lambda: any("run_python" in m.content for m in fake.messages(slow)), what="step 1")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 60) == 0, tail()
    proc = await start_bot_process(fake, llm, data, guild, log, PYTHON_SANDBOX="rlimits")
    try:
        await fake.wait_for_message(slow, lambda m: "tokens" in m.content, within=30)
    finally:
        proc.kill()
        await proc.wait()
    contents = [m.content for m in fake.messages(slow)]
    paused = "⏸️ The bot is restarting: this run pauses during step 1, which starts again when it is back."
    assert any(paused in c for c in contents), contents
    assert any(
        c.startswith("♻️ Interrupted by a restart before its first step: starting again.") for c in contents
    )
    assert not any("Step 2" in c or "step 2" in c for c in contents), contents
    assert [m["role"] for m in llm.requests[-1]["messages"]] == ["system", "user"]
    assert any("1 step · 720 tokens (550 in, 170 out)" in c for c in contents), contents


async def test_an_answer_stored_while_the_chroma_server_is_down_is_one_log_line(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Chroma server (CHROMA_HOST) goes away while the bot runs: a run's recall said so in one line
    (`memory.recall.failed`), but storing its answer logged `memory_store_failed` with a whole traceback
    (40 lines through httpx and chromadb, a bug's form) for every run of the outage. Now one line that
    names the error, like the recall's."""
    server = ChromaServer(tmp_path / "chroma").start()
    env = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": server.port}
    llm.script(text("Buses leave at 9 from stop 12."))
    try:
        with capture_logs() as logs:
            monkeypatch.setattr(run_policy, "log", structlog.get_logger("bot.run_policy"))
            async with running_bot(
                fake, llm, tmp_path / "bot", guild, MEMORY_ENABLED=True, agent_env=env
            ) as bot:
                assert bot.services.memory is not None, bot.services.memory_error
                server.stop()
                general = guild.channel("general")
                fake.inject_interaction(
                    "research", {"task": "When do buses leave?"}, user="alice", channel=general
                )
                thread = await fake.wait_for_thread(parent=general)
                await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
                await wait_idle(fake, bot)
    finally:
        server.stop()
    failed = [r for r in logs if r["event"] == "memory_store_failed"]
    assert len(failed) == 1 and "exc_info" not in failed[0], failed
    assert "Connect" in failed[0]["error"], failed
