"""What a turn saves for a resume, end to end (real discord.py, fake Discord, scripted LLM, real SQLite):
a step's model call is on record while its slower tool calls still run, and a finished step is saved
whole (bench/bot_load.py: one checkpoint per step where the last tool result and the next step's start
used to write one each)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_calls
from tests.fakes.web_server import FakeWeb


@pytest.fixture(autouse=True)
def page_server_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETCH_ALLOW_LOOPBACK", "1")


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_steps_model_call_is_saved_while_a_slow_tool_of_the_step_still_runs(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, web: FakeWeb, tmp_path: Path
) -> None:
    llm.script(
        tool_calls(("calculator", {"expression": "6 * 7"}), ("fetch_url", {"url": web.url("/slow?s=3")})),
        text("Forty-two, and the page was late."),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Six times seven?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        # Read the store, not the thread: the step's messages are paced (5 writes in 5 s), so under load
        # the "42" step could land after the whole run had ended.
        record = None
        for _ in range(300):
            record = record or await bot.services.sessions.by_thread(thread.id)
            turns = await bot.services.sessions.turns(record.id) if record else []
            turn = turns[-1] if turns else None  # the session is stored a moment before its turn
            if turn is not None and turn.state and turn.state.get("usage", [0] * 4)[3] == 1:
                break
            await asyncio.sleep(0.05)
        assert record is not None and turn is not None
        session = record.id
        assert turn.status == "running" and turn.state is not None
        # Saved mid-step: the slow page is still being read, so no tool result is in the saved history yet.
        assert not any(m.get("role") == "tool" for m in turn.state.get("messages", [])), turn.state
        # A crash now would resume with the step's call counted in the footer and /usage, and say the
        # step starts again: it is not in the saved history (it said "resuming from step 2", then ran
        # step 1 again as step 2; tests/test_blackbox_restarts13.py).
        assert turn.state["usage"][3] == 1 and turn.state["step"] == 0
        await fake.wait_for_message(thread, lambda m: "Forty-two" in m.content, within=20)
        await wait_idle(fake, bot)
        history = await bot.services.sessions.history(session)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
