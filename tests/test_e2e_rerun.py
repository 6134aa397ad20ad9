"""Issue 17.3 end to end: editing the message that asked for a turn re-runs it with the edit.

The real discord.py bot against the fake Discord (which dispatches MESSAGE_UPDATE for a user's edit)
and the scripted LLM, a real SQLite file: a running turn restarts with the edited text, a finished one
gets a "Re-run with the edit" button that only the author may press, a re-run replaces the old turn in
the conversation (the old answer stays, marked superseded) and is charged like any turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_e2e_config import flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=())


def said(request: dict[str, Any], role: str) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == role]


async def answered(fake: FakeDiscord, thread: Any, content: str) -> None:
    await fake.wait_for_message(thread, lambda m: m.content == content, within=15)


async def session_with_follow_up(fake: FakeDiscord, guild: FakeGuild, follow_up: str) -> tuple[Any, Any]:
    """/research, its answer, then alice's follow-up and its answer; returns (thread, follow-up)."""
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general)
    await answered(fake, thread, "Paris.")
    follow = fake.inject_message(thread, "alice", follow_up)
    return thread, follow


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_editing_a_running_mention_restarts_the_turn_with_the_edit(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("never finished", hang=True), text("Four."))
    me = fake.bot_user
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        ask = fake.inject_message(general, "alice", f"<@{me.id}> waht is 2+2", mentions=[me])
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: len(llm.requests) == 1, what="the first call")
        edit_message(fake, ask, f"<@{me.id}> what is 2+2")
        await answered(fake, thread, "Four.")
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None
        turns = await bot.services.sessions.turns(session.id)
    assert len(llm.requests) == 2
    assert said(llm.requests[1], "user") == ["what is 2+2"]  # only the edited text, nothing of the typo
    assert "waht" not in str(llm.requests[1]["messages"])
    contents = [m.content for m in fake.messages(thread)]
    assert any("stopped by an edit of the message" in c for c in contents)  # the cut turn says why
    stopped, rerun = turns
    assert stopped.message_id == rerun.message_id == ask.id
    assert stopped.superseded_by == rerun.id and rerun.superseded_by is None


async def test_e2e_editing_a_finished_turn_offers_a_re_run_only_its_author_can_press(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Paris."), text("I know no Spian."), text("Madrid."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        thread, follow = await session_with_follow_up(fake, guild, "And of Spian?")
        await answered(fake, thread, "I know no Spian.")
        await wait_idle(fake, bot)
        edit_message(fake, follow, "And of Spain?")
        offer = await fake.wait_for_message(thread, lambda m: m.content.startswith("✏️ You edited"), within=15)
        button = offer.components[0]["components"][0]["custom_id"]
        assert button.startswith("agentbot:rerun:")
        assert offer.components[0]["components"][0]["label"] == "Re-run with the edit"
        refused = fake.inject_component(button, message=offer, user="bob")
        await fake.wait_for(lambda: refused.responses, what="bob's refusal")
        fake.inject_component(button, message=offer, user="alice")
        await answered(fake, thread, "Madrid.")
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None
        turns = await bot.services.sessions.turns(session.id)
        history = await bot.services.sessions.history(session.id)
        usage = await run(fake, guild, "usage me", user="alice")
    assert "Only the person who wrote the edited message" in str(refused.responses)
    assert refused.responses[0]["data"]["flags"] & 64  # ephemeral: only bob sees it
    assert len(llm.requests) == 3  # bob's click ran nothing
    rerun_request = llm.requests[2]
    assert said(rerun_request, "user") == ["Capital of France?", "And of Spain?"]
    assert said(rerun_request, "assistant") == ["Paris."]  # the superseded answer is out of the conversation
    contents = [m.content for m in fake.messages(thread)]
    assert "I know no Spian." in contents  # the earlier answer stays visible...
    assert any(c.startswith("✏️ Re-running with the edited message") and "superseded" in c for c in contents)
    assert [m["content"] for m in history if m["role"] == "assistant"] == ["Paris.", "Madrid."]
    _first, old, new = turns
    assert old.superseded_by == new.id and (new.prompt, new.message_id) == ("And of Spain?", follow.id)
    assert "**Requests today**: 3 of" in flat(usage)  # the re-run is charged like any turn


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_an_unchanged_edit_does_nothing_and_only_the_latest_turn_can_be_re_run(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Paris."), text("About 2 million."), text("The Seine."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        thread, follow = await session_with_follow_up(fake, guild, "How many live there? https://example.org")
        await answered(fake, thread, "About 2 million.")
        await wait_idle(fake, bot)
        fake.inject_message(thread, "alice", "Which river?")
        await answered(fake, thread, "The Seine.")
        await wait_idle(fake, bot)
        # Discord unfurls the link: MESSAGE_UPDATE with the same text. Nothing happens...
        edit_message(
            fake, follow, embeds=[{"type": "link", "url": "https://example.org", "title": "Example"}]
        )
        # ...while a real edit of that (older) turn gets the button, which explains why it cannot re-run.
        edit_message(fake, follow, "How many people live in Paris?")
        offer = await fake.wait_for_message(thread, lambda m: m.content.startswith("✏️ You edited"), within=15)
        click = fake.inject_component(
            offer.components[0]["components"][0]["custom_id"], message=offer, user="alice"
        )
        await fake.wait_for(lambda: click.responses, what="the explanation")
        await run(fake, guild, "usage me", user="alice")  # a round trip: every earlier event is handled
        await wait_idle(fake, bot)
    assert "Only the latest turn can be re-run" in str(click.responses)
    assert len([m for m in fake.messages(thread) if m.content.startswith("✏️")]) == 1
    assert len(llm.requests) == 3


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_queued_follow_up_that_is_edited_runs_with_the_new_text(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("never finished", hang=True), text("Madrid."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: len(llm.requests) == 1, what="the first call")
        follow = fake.inject_message(thread, "alice", "And of Spian?")
        await fake.wait_for(lambda: follow.reactions.get("⏳"), what="⏳ on the queued follow-up")
        edit_message(fake, follow, "And of Spain?")
        fake.inject_interaction("stop", {}, user="alice", channel=thread)
        await answered(fake, thread, "Madrid.")
        await wait_idle(fake, bot)
    assert said(llm.requests[1], "user")[-1] == "And of Spain?"
    assert "Spian" not in str(llm.requests[1]["messages"])
    assert not [m for m in fake.messages(thread) if m.content.startswith("✏️")]  # no button: it had not run
