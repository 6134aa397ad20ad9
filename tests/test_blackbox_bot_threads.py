"""What a member sees in a session thread, driven as users drive it: the real discord.py bot on the fake
Discord, the scripted model on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_records import MessageRecord
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, error, text


@pytest.mark.usefixtures("fast_write_window")
async def test_a_follow_up_refused_by_a_quota_leaves_the_header_saying_done(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing was stopped: the finished answer stands, only the new request was refused."""
    monkeypatch.setenv("QUOTA_REQUESTS_PER_DAY", "1")
    llm.script(text("first answer"))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "first"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "first answer", within=15)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "alice", "more please")
        await fake.wait_for_message(thread, lambda m: "Daily request limit reached" in m.content, within=15)
        await wait_idle(fake, bot)  # the header is edited before the session goes idle
        header = fake.messages(thread)[0]
    assert "✅ done" in header.content and "stopped" not in header.content, header.content
    assert len(llm.requests) == 1


def retry_button(fake: FakeDiscord, thread: Any) -> tuple[MessageRecord, str]:
    ((msg, custom_id),) = [
        (m, c["custom_id"])
        for m in fake.messages(thread)
        for row in m.components
        for c in row["components"]
        if c.get("label") == "Retry"
    ]
    return msg, custom_id


@pytest.mark.usefixtures("fast_write_window")
async def test_retry_pressed_twice_or_after_it_worked_runs_the_failed_turn_once(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A double click, or a press of the old button once the retry has answered, neither asks the
    model again nor posts (and bills) the same answer twice."""
    llm.script(error(400, "bad request"), text("recovered"), text("asked twice"), text("asked thrice"))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "first"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "try it again" in m.content, within=10)
        await wait_idle(fake, bot)
        msg, custom_id = retry_button(fake, thread)
        first = fake.inject_component(custom_id, message=msg, user="alice")
        second = fake.inject_component(custom_id, message=msg, user="alice")
        await fake.wait_for(lambda: first.responses and second.responses, what="both clicks answered")
        await fake.wait_for_message(thread, lambda m: m.content == "recovered", within=10)
        await wait_idle(fake, bot)
        late = fake.inject_component(custom_id, message=msg, user="alice")
        await fake.wait_for(lambda: late.responses, what="the late click answered")
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None
        history = await bot.services.sessions.history(session.id)
    shown = [m.content for m in fake.messages(thread)]
    assert "asked twice" not in shown and "asked thrice" not in shown, shown
    assert len(llm.requests) == 2
    assert [m["content"] for m in history] == ["first", "recovered"]
    answers = [r["data"] for i in (first, second, late) for r in i.responses]
    assert all(a.get("flags") == 64 for a in answers)  # each answer is for the presser only
    assert [a["content"] for a in answers].count("Retrying…") == 1, answers


@pytest.mark.usefixtures("fast_write_window")
async def test_re_run_with_the_edit_pressed_twice_runs_the_edit_once(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A double click on "Re-run with the edit" neither answers twice nor puts the question twice
    into the conversation."""
    llm.script(text("I know no Spian."), text("Madrid."), text("Madrid again."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        follow = fake.inject_message(general, "alice", f"<@{bot.user.id}> Capital of Spian?")
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "I know no Spian.", within=15)
        await wait_idle(fake, bot)
        edit_message(fake, follow, f"<@{bot.user.id}> Capital of Spain?")
        offer = await fake.wait_for_message(thread, lambda m: m.content.startswith("✏️ You edited"), within=15)
        button = offer.components[0]["components"][0]["custom_id"]
        first = fake.inject_component(button, message=offer, user="alice")
        second = fake.inject_component(button, message=offer, user="alice")
        await fake.wait_for(lambda: first.responses and second.responses, what="both clicks answered")
        await fake.wait_for_message(thread, lambda m: m.content == "Madrid.", within=15)
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None
        history = await bot.services.sessions.history(session.id)
    assert "Madrid again." not in [m.content for m in fake.messages(thread)]
    assert len(llm.requests) == 2
    assert [m["content"] for m in history] == ["Capital of Spain?", "Madrid."]
    answers = [r["data"] for i in (first, second) for r in i.responses]
    assert all(a.get("flags") == 64 for a in answers)
    assert [a["content"] for a in answers].count("Re-running with your edit…") == 1, answers
