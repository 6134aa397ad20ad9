"""End to end: the real discord.py bot, the fake Discord and the scripted LLM, all over 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild, FakeUser
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))
    g.add_member(FakeUser("otherbot", bot=True))
    return g


async def research(fake: FakeDiscord, guild: FakeGuild, task: str, user: str = "alice"):
    general = guild.channel("general")
    inter = fake.inject_interaction("research", {"task": task}, user=user, channel=general)
    thread = await fake.wait_for_thread(parent=general, name=None)
    return inter, thread


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_research_streams_steps_and_final_answer_in_order(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "6*7"}),
        text("The answer is **42**. @everyone look!", prompt_tokens=300, completion_tokens=40),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        inter, thread = await research(fake, guild, "What is 6*7?")
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        msgs = fake.messages(thread)
        contents = [m.content for m in msgs]
        assert contents[0].startswith("🔎 **Research** for") and "> What is 6\\*7?" in contents[0]
        # The header had a Stop button while the run went on; once done, it says so and the button goes.
        assert msgs[0].history[0].components[0]["components"][0]["custom_id"].startswith("agentbot:stop:")
        assert msgs[0].components == [] and "✅ done <t:" in contents[0]
        step = next(i for i, c in enumerate(contents) if "calculator" in c)
        final = next(i for i, c in enumerate(contents) if c.startswith("The answer is **42**."))
        footer = next(i for i, c in enumerate(contents) if "tokens" in c)
        assert 0 < step < final < footer == len(contents) - 1
        assert "6*7" in contents[step] and "↳" in contents[step] and "42" in contents[step]
        assert (
            "2 steps" in contents[footer] and "$0.0" in contents[footer] and "gpt-4o-mini" in contents[footer]
        )
        # Nothing the model writes can ping anyone; only the footer pings, and only the requester.
        assert all(m.allowed_mentions is not None and m.allowed_mentions.get("parse") == [] for m in msgs)
        alice = guild.member("alice").id
        assert [m.pinged_user_ids for m in msgs if m.pinged_user_ids] == [[alice]]
        assert msgs[footer].pinged_user_ids == [alice]
        # The interaction was deferred and answered ephemerally; the session wrote only in its thread.
        assert inter.response_type == 5
        assert f"<#{thread.id}>" in fake.message(inter.original_message_id).content
        general = guild.channel("general")
        assert not [m for m in fake.messages(general, include_ephemeral=False) if m.via == "channel"]
        assert fake.duplicates == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_follow_up_continues_the_session_with_its_history(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Paris is the capital of France."), text("About 2.1 million people live in Paris."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "What is the capital of France?")
        await fake.wait_for_message(thread, lambda m: m.content.startswith("Paris is"), within=15)
        await wait_idle(fake, bot)
        # Someone other than the requester follows up by mentioning the bot.
        fake.inject_message(
            thread, "bob", f"<@{fake.bot_user.id}> How many people live there?", mentions=[fake.bot_user]
        )
        fake.inject_message(thread, "otherbot", "ignore me, I am a bot")
        await fake.wait_for_message(thread, lambda m: m.content.startswith("About 2.1 million"), within=15)
        await wait_idle(fake, bot)
    assert len(llm.requests) == 2  # the other bot's message started nothing
    convo = [(m["role"], m["content"]) for m in llm.requests[1]["messages"] if m["role"] != "system"]
    assert convo == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris is the capital of France."),
        ("user", "How many people live there?"),
    ]


async def test_e2e_stop_button_cancels_the_running_turn(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "1+1"}, text="Working on it: 1+1 is 2."), Reply(hang=True)
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Think forever")
        header = await fake.wait_for_message(thread)
        await fake.wait_for(lambda: len(llm.requests) == 2, what="the second model call", within=10)
        # bob neither started it nor may manage threads: refused, and the turn goes on.
        refused = fake.inject_component(
            header.components[0]["components"][0]["custom_id"], message=header, user="bob"
        )
        await fake.wait_for(lambda: refused.responses, what="bob's refusal")
        assert (
            "Only the person who started"
            in fake.message(
                refused.followup_ids[0] if refused.followup_ids else refused.original_message_id
            ).content
        )
        assert bot.runner.busy()
        stop = fake.inject_component(
            header.components[0]["components"][0]["custom_id"], message=header, user="alice"
        )
        await fake.wait_for_message(thread, lambda m: "stopped by alice" in m.content, within=10)
        await wait_idle(fake, bot)
        assert stop.responses
        contents = [m.content for m in fake.messages(thread)]
        stopped = next(c for c in contents if c.startswith("Stopped by alice after"))
        assert "Working on it: 1+1 is 2." in stopped  # the partial answer is kept
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None and session.status == "idle"
        turns = await bot.services.sessions.turns(session.id)
        assert [t.status for t in turns] == ["cancelled"]
        history = await bot.services.sessions.history(session.id)
        # Whole steps only: the task, step 1's call and its result, then the stop note.
        assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert len(llm.requests) == 2


async def test_e2e_burst_of_429s_loses_and_duplicates_nothing(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    steps = [tool_call("calculator", {"expression": f"{i}*{i}"}, delay=0.05) for i in range(1, 5)]
    llm.script(
        Reply(tool_calls=[("calculator", '{"expression": "0"}')], delay=0.6), *steps, text("Squares done.")
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Squares please")
        await fake.wait_for_message(thread)  # the header is in; now every send in the thread meets 429s
        fake.inject_429("POST", f"/channels/{thread.id}/messages", count=8, retry_after=0.05)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
        await wait_idle(fake, bot)
        contents = [m.content for m in fake.messages(thread)]
    text_all = "\n".join(contents)
    for i in range(1, 5):
        assert f"{i * i}" in text_all and f'"{i}*{i}"' in text_all
    assert "Squares done." in contents
    assert fake.duplicates == []
    assert len([c for c in contents if c == "Squares done."]) == 1
    assert contents.index("Squares done.") < len(contents) - 1  # the footer follows the answer


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_history_survives_a_bot_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("The Nile is about 6,650 km long."), text("The Amazon is a close second."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "How long is the Nile?")
        await fake.wait_for_message(thread, lambda m: m.content.startswith("The Nile"), within=15)
        await wait_idle(fake, bot)
    # A new process: same data directory, nothing in memory.
    async with running_bot(fake, llm, tmp_path, guild) as bot2:
        fake.inject_message(thread, "alice", "And the second longest?")
        await fake.wait_for_message(thread, lambda m: m.content.startswith("The Amazon"), within=15)
        await wait_idle(fake, bot2)
        synced = [c for c in fake.calls("PUT") if "commands" in c.path]
    assert len(synced) == 1  # the second start found the command hash unchanged and did not sync
    convo = [(m["role"], m["content"]) for m in llm.requests[1]["messages"] if m["role"] != "system"]
    assert convo[:2] == [("user", "How long is the Nile?"), ("assistant", "The Nile is about 6,650 km long.")]


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_mention_in_a_channel_starts_a_session(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Hello from the agent."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_message(general, "alice", f"<@{fake.bot_user.id}> say hello", mentions=[fake.bot_user])
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Hello from the agent.", within=15)
        await wait_idle(fake, bot)
    assert llm.requests[0]["messages"][-1] == {"role": "user", "content": "say hello"}


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_quota_refusal_names_the_limit_and_reset(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUOTA_REQUESTS_PER_DAY", "1")
    llm.script(text("first answer"))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "first")
        await fake.wait_for_message(thread, lambda m: m.content == "first answer", within=15)
        await wait_idle(fake, bot)
        general = guild.channel("general")
        inter = fake.inject_interaction("research", {"task": "second"}, user="alice", channel=general)
        await fake.wait_for(
            lambda: inter.original_message_id and fake.message(inter.original_message_id).content,
            what="the refusal",
        )
        refusal = fake.message(inter.original_message_id)
    assert refusal.ephemeral and "⛔" in refusal.content and "<t:" in refusal.content
    assert "request" in refusal.content.lower()
    assert len(fake.threads(parent=general)) == 1 and len(llm.requests) == 1


async def test_e2e_shutdown_pauses_a_run_and_the_next_start_resumes_it(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "2+3"}), Reply(hang=True), text("Five, after the restart.")
    )
    async with running_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0.2):
        _, thread = await research(fake, guild, "What is 2+3?")
        await fake.wait_for(lambda: len(llm.requests) == 2, what="step 2's model call", within=10)
    # The first bot closed (graceful shutdown): the run paused, its turn is still open for resuming.
    paused = [m.content for m in fake.messages(thread) if "⏸️" in m.content]
    assert paused and "after step 1" in paused[0]
    async with running_bot(fake, llm, tmp_path, guild) as bot2:
        await fake.wait_for_message(thread, lambda m: m.content == "Five, after the restart.", within=15)
        await wait_idle(fake, bot2)
        session = await bot2.services.sessions.by_thread(thread.id)
        assert session is not None
        turns = await bot2.services.sessions.turns(session.id)
        history = await bot2.services.sessions.history(session.id)
    assert [t.status for t in turns] == ["interrupted", "completed"]
    assert [m["role"] for m in history] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]  # the task once, no step twice
    assert len(llm.requests) == 3 and llm.requests[2]["messages"][-1]["content"] == "5"


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_long_answers_are_split_or_attached(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    medium = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 40 for i in range(6))  # ~3,000 chars
    huge = "\n\n".join(f"Section {i}: " + "dolor sit amet " * 60 for i in range(10))  # ~9,000 chars
    llm.script(text(medium), text(huge))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Write a medium answer")
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "alice", "Now a huge one")
        await fake.wait_for(
            lambda: sum("tokens" in m.content for m in fake.messages(thread)) == 2,
            within=15,
            what="the second footer",
        )
        await wait_idle(fake, bot)
        msgs = fake.messages(thread)
    parts = [m.content for m in msgs if m.content.startswith("Paragraph")]
    assert len(parts) == 2 and all(len(p) <= 2000 for p in parts)
    assert "\n\n".join(parts).split() == medium.split()  # split at a paragraph, nothing lost
    attached = [m for m in msgs if m.attachments]
    assert len(attached) == 1
    att = attached[0].attachments[0]
    assert att.filename.endswith(".md") and att.data.decode() == huge.strip()
    assert "attached as a Markdown file" in attached[0].content


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_failed_turn_offers_retry_and_retry_runs_it_again(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    from tests.fakes.llm_server import error

    llm.script(error(400, "messages: something the server dislikes"), text("Worked the second time."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Try me")
        offer = await fake.wait_for_message(
            thread, lambda m: m.content.startswith("This turn failed"), within=15
        )
        await wait_idle(fake, bot)
        contents = [m.content for m in fake.messages(thread)]
        assert any("something the server dislikes" in c for c in contents)  # the error is said, short
        button = offer.components[0]["components"][0]["custom_id"]
        assert button.startswith("agentbot:retry:")
        refused = fake.inject_component(button, message=offer, user="bob")
        await fake.wait_for(lambda: refused.responses, what="bob's refusal")
        fake.inject_component(button, message=offer, user="alice")
        await fake.wait_for_message(thread, lambda m: m.content == "Worked the second time.", within=15)
        await wait_idle(fake, bot)
    assert [r["messages"][-1]["content"] for r in llm.requests] == ["Try me", "Try me"]
    assert [m["role"] for m in llm.requests[1]["messages"]] == ["system", "user"]  # no duplicate of the task


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_files_the_agent_writes_are_attached_to_the_thread(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("write_file", {"path": "report/notes.md", "content": "# Notes\nTides follow the moon."}),
        text("I wrote the notes."),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Write notes about tides")
        await fake.wait_for_message(thread, lambda m: bool(m.attachments), within=15)
        await wait_idle(fake, bot)
        attached = [a for m in fake.messages(thread) for a in m.attachments]
    assert [(a.filename, a.data) for a in attached] == [
        ("report_notes.md", b"# Notes\nTides follow the moon.")
    ]
