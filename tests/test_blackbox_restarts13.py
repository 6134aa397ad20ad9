"""The bot's life across kill -9 and restarts, with real processes: `agentbot run` against the fake
Discord and the scripted model, killed and started again on the same DATA_DIR. What the member sees in
the thread, what /usage says and what the operator's log says must agree and be honest."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import flat, run
from tests.test_restart_process import _no_bot_left_running, start_bot_process  # noqa: F401 (fixture)


def _tokens(said: str) -> int:
    return int(said.replace(",", ""))


async def test_a_call_in_flight_at_kill_9_is_charged_its_prompt_by_estimate_after_the_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Step 2's model call is under way (the provider has the prompt, and bills it) when the bot is
    killed. Its hold was dropped at the next start and the call charged nothing: the footer and /usage
    said 2,600 tokens, as if it had never been sent, so crash after crash spent the server's money past
    its limits. Now the next start charges the prompt part of each hold left behind, marked estimated:
    the footer, /usage and the log say so, and nothing of the answer cap it held is charged."""
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
    proc.kill()
    await proc.wait()

    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    try:
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    finally:
        proc.kill()
        await proc.wait()
    contents = [m.content for m in fake.messages(thread)]
    footer = next(c for c in contents if "tokens" in c)
    said = re.search(r"2 steps · estimated: ([\d,]+) tokens \(([\d,]+) in, 100 out\)", footer)
    assert said, (footer, log.read_text()[-3000:])
    total, prompt = _tokens(said.group(1)), _tokens(said.group(2))
    # The lost call's prompt, as its hold counted it: about step 2's prompt (step 3 re-sent it, 1,300
    # in the server's count), never the 8,192-token answer cap the hold also held.
    lost = prompt - 2500
    assert 300 < lost < 4000, footer
    assert f"**Tokens today**: ~{said.group(1)} of" in usage, (footer, usage)
    assert total == prompt + 100
    lines = [ln for ln in log.read_text().splitlines() if "interrupted_calls_charged" in ln]
    assert len(lines) == 1 and '"calls": 1' in lines[0], log.read_text()[-3000:]
