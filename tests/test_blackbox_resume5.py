"""kill -9 at the two instants a turn has ended for the member but not yet in the store: `agentbot run`
against the fake Discord and the scripted model, killed the moment the fake sees the answer (or says
"Stopping…"), then started again. README promises a restart pays nothing twice and that the footer and
/usage agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import flat, run
from tests.test_restart_process import _no_bot_left_running, start_bot_process  # noqa: F401 (fixture)


async def test_a_kill_between_the_answer_and_its_footer_delivers_the_footer_without_paying_again(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The kill lands as the answer reaches the thread, before its footer (which can wait seconds for
    the thread's write window). The restart used to run the last step again ("resuming from step 2"):
    a second answer, paid twice, its footer 120 tokens short of /usage. Now the answer is saved before
    it shows: the restart posts only the missing footer, asks the model nothing, and the two agree.
    (The answer fills its message, so the footer cannot ride in it and needs a write of its own.)"""
    answer = "The answer is 42." + " Six sevens make forty-two." * 68
    llm.script(
        tool_call("calculator", {"expression": "6*7"}, prompt_tokens=250, completion_tokens=50),
        text(answer, prompt_tokens=300, completion_tokens=120),
        text("A second answer, paid twice.", prompt_tokens=300, completion_tokens=120),
    )
    log = tmp_path / "bot.log"
    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general, within=20)

    def shown(start: str) -> list[str]:
        return [m.content for m in fake.messages(thread) if m.content.startswith(start)]

    def kill_as_the_answer_lands() -> None:  # inside the answer's request: the bot never reads its reply
        if proc.returncode is None and shown("The answer is 42."):
            proc.kill()

    fake.state.on_change.append(kill_as_the_answer_lands)
    await fake.wait_for(lambda: shown("The answer is 42."), within=20, what="the answer")
    await proc.wait()
    fake.state.on_change.clear()
    assert not [m for m in fake.messages(thread) if "tokens" in m.content]  # the footer had not shown

    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    try:
        await fake.wait_for(lambda: "✅ done" in fake.messages(thread)[0].content, within=30, what="done")
        contents = [m.content for m in fake.messages(thread)]
        footers = [c for c in contents if "tokens" in c]
        usage = await run(fake, guild, "usage me", user="alice")
    finally:
        proc.kill()
        await proc.wait()
    assert len(llm.requests) == 2, contents  # the answer was not asked for again
    assert len(shown("The answer is 42.")) == 1 and not shown("A second answer"), contents
    assert not [c for c in contents if c.startswith("♻️")], contents  # nothing resumed
    assert len(footers) == 1 and contents.index(footers[0]) > contents.index(shown("The answer")[0])
    assert "2 steps · 720 tokens (550 in, 170 out)" in footers[0], footers
    assert "**Tokens today**: 720 of" in flat(usage)


@pytest.mark.parametrize("moment", ["as Stopping is said", "after the stop's note"])
async def test_a_kill_just_after_stopping_is_said_keeps_the_run_stopped_after_the_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, moment: str
) -> None:
    """Stop is pressed during step 2 and the bot is killed the instant it answers "Stopping…". The
    stop was saved only after that reply: the restart resumed the run, asked the model again and
    charged it. Now the stop is saved first: the restart closes the turn as stopped by its member,
    with step 1's partial work, and asks the model nothing."""
    llm.script(
        tool_call("calculator", {"expression": "6*7"}, prompt_tokens=250, completion_tokens=50),
        Reply(hang=True),
        text("Resumed although stopped.", prompt_tokens=300, completion_tokens=120),
    )
    log = tmp_path / "bot.log"
    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general, within=20)
    await fake.wait_for(lambda: len(llm.requests) == 2, within=20, what="step 2's model call")
    header = fake.messages(thread)[0]
    (row,) = header.components
    click = fake.inject_component(row["components"][0]["custom_id"], message=header, user="alice")
    await fake.wait_for(lambda: click.responses, within=20, what="the reply to Stop")
    if moment == "after the stop's note":  # before its footer: the turn used to be closed by then, and
        n = len(fake.messages(thread))  # the header stayed "running", with Stop, for good
        await fake.wait_for(lambda: len(fake.messages(thread)) > n, within=20, what="the stop's note")
    proc.kill()
    await proc.wait()
    assert [r["data"].get("content") for r in click.responses] == ["Stopping…"]

    proc = await start_bot_process(fake, llm, tmp_path / "data", guild, log)
    try:
        await fake.wait_for(lambda: "⏹️ stopped" in fake.messages(thread)[0].content, within=30, what="stop")
        await fake.wait_for(lambda: [m for m in fake.messages(thread) if "tokens" in m.content], within=20)
        contents = [m.content for m in fake.messages(thread)]
        usage = await run(fake, guild, "usage me", user="alice")
    finally:
        proc.kill()
        await proc.wait()
    assert len(llm.requests) == 2, contents  # nothing ran after the stop
    assert any(c.startswith("Stopped by alice after 1 step.") for c in contents), contents
    (footer,) = [c for c in contents if "tokens" in c]
    # Step 1's 300 tokens; and step 2's call, cut by the Stop, counted by estimate when the stop got
    # that far before the kill. The footer and /usage say the same either way.
    said = re.search(r"1 step · (estimated: )?([\d,]+) tokens", footer)
    assert said and "stopped by alice" in footer, footer
    assert int(said.group(2).replace(",", "")) >= 300 and (moment == "after the stop's note") <= bool(
        said.group(1)
    )
    assert f"**Tokens today**: {'~' * bool(said.group(1))}{said.group(2)} of" in flat(usage), (
        footer,
        flat(usage),
    )
