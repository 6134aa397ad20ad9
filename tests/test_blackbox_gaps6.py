"""The gaps the last closing note named, each met as its user meets it: kill -9 at the instants a turn
has ended for the member but not yet in the store (a saved answer, a stopped one, a Stop of a run
waiting for a slot), `/config tools` autocomplete with the server's own MCP tools, another server's
memories imported, and members' words quoted by the bot."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.fakes.mcp_server import HttpMcpServer
from tests.test_e2e_config import autocomplete, choices, flat, run
from tests.test_restart_process import _no_bot_left_running, start_bot_process  # noqa: F401 (fixture)


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


@pytest.fixture
def other() -> FakeGuild:
    return FakeGuild.create("Other", channels=("general",), members=("dave",), admins=("boss",))


@pytest.fixture
def guilds(guild: FakeGuild, other: FakeGuild) -> list[FakeGuild]:
    return [guild, other]


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


async def test_a_saved_answer_delivered_after_a_kill_brings_its_files_and_enters_the_servers_memory(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The run writes notes.md and answers; the bot is killed as the answer lands, before its footer.
    The restart delivered the footer only: a finished turn also attaches the files it wrote and stores
    its answer in the server's memory, and neither happened (`/memory list` stayed empty)."""
    answer = "Tides follow the moon." + " The moon pulls the sea." * 80
    llm.script(
        tool_call("write_file", {"path": "notes.md", "content": "# Tides\nthe moon"}),
        text(answer),
        text("A second answer, paid twice."),
    )
    log, data = tmp_path / "bot.log", tmp_path / "data"
    proc = await start_bot_process(fake, llm, data, guild, log, MEMORY_ENABLED="true")
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "Why do tides turn?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general, within=20)

    def shown(start: str) -> list[str]:
        return [m.content for m in fake.messages(thread) if m.content.startswith(start)]

    def kill_as_the_answer_lands() -> None:  # inside the answer's request: the bot never reads its reply
        if proc.returncode is None and shown("Tides follow the moon."):
            proc.kill()

    fake.state.on_change.append(kill_as_the_answer_lands)
    await fake.wait_for(lambda: shown("Tides follow the moon."), within=30, what="the answer")
    await proc.wait()
    fake.state.on_change.clear()
    assert not [m for m in fake.messages(thread) if "tokens" in m.content], _tail(log)

    async with running_bot(fake, llm, data, guild, MEMORY_ENABLED=True) as bot:
        await fake.wait_for(lambda: "✅ done" in fake.messages(thread)[0].content, within=30, what="done")
        await wait_idle(fake, bot)
        listed = flat(await run(fake, guild, "memory list", user="bob"))
    messages = fake.messages(thread)
    contents = [m.content for m in messages]
    assert len(llm.requests) == 2 and len(shown("Tides follow the moon.")) == 1, contents
    (footer,) = [c for c in contents if "tokens" in c]
    assert "Tides follow the moon." in listed and "Why do tides turn?" in listed, listed
    files = [m for m in messages if m.content.startswith("📎 Files written in this turn:")]
    assert [a.filename for f in files for a in f.attachments] == ["notes.md"], contents
    assert contents.index(files[0].content) > contents.index(footer), contents


@pytest.mark.usefixtures("fast_write_window")
async def test_a_stopped_answer_posted_before_a_kill_keeps_one_footer_after_the_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Alice stops the run during step 2; the bot posts the partial answer and its footer and is
    killed as the footer lands, before the turn is closed. The restart posted the footer again: its
    duration was computed anew, so the thread's copy was not recognised."""
    llm.script(
        tool_call("calculator", {"expression": "6*7"}, prompt_tokens=250, completion_tokens=50),
        Reply(hang=True),
        text("Resumed although stopped."),
    )
    log, data = tmp_path / "bot.log", tmp_path / "data"
    proc = await start_bot_process(fake, llm, data, guild, log)
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general, within=20)
    await fake.wait_for(lambda: len(llm.requests) == 2, within=20, what="step 2's model call")

    def footers() -> list[str]:
        return [m.content for m in fake.messages(thread) if "tokens" in m.content]

    def kill_as_the_footer_lands() -> None:
        if proc.returncode is None and footers():
            proc.kill()

    fake.state.on_change.append(kill_as_the_footer_lands)
    header = fake.messages(thread)[0]
    (row,) = header.components
    fake.inject_component(row["components"][0]["custom_id"], message=header, user="alice")
    await fake.wait_for(footers, within=20, what="the stopped answer's footer")
    await proc.wait()
    fake.state.on_change.clear()
    assert "⏳ running" in fake.messages(thread)[0].content, _tail(log)  # the turn was not closed yet

    async with running_bot(fake, llm, data, guild) as bot:
        await fake.wait_for(lambda: "⏹️ stopped" in fake.messages(thread)[0].content, within=30, what="stop")
        await wait_idle(fake, bot)
    contents = [m.content for m in fake.messages(thread)]
    assert len(llm.requests) == 2, contents  # nothing ran after the stop
    assert len([c for c in contents if c.startswith("Stopped by alice after 1 step.")]) == 1, contents
    assert len(footers()) == 1, footers()
    (footer,) = footers()
    # step 1's 300 tokens, and step 2's call the Stop cut, counted by estimate
    assert "1 step · estimated: " in footer and "stopped by alice" in footer, footer


@pytest.mark.usefixtures("fast_write_window")
async def test_a_run_stopped_by_the_time_limit_and_killed_before_it_closed_is_not_run_again(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """BOT_TURN_TIMEOUT_SECONDS ends a run whose model never answers; the bot is killed as its footer
    lands. Nothing marked the turn ended, so the restart ran it again ("♻️ … starting again"), paid a
    second model call and posted a second footer."""
    llm.script(Reply(hang=True), text("Run again after its time limit."))
    log, data = tmp_path / "bot.log", tmp_path / "data"
    proc = await start_bot_process(fake, llm, data, guild, log, BOT_TURN_TIMEOUT_SECONDS="2")
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general, within=20)

    def footers() -> list[str]:
        return [m.content for m in fake.messages(thread) if "tokens" in m.content]

    def kill_as_the_footer_lands() -> None:
        if proc.returncode is None and footers():
            proc.kill()

    fake.state.on_change.append(kill_as_the_footer_lands)
    await fake.wait_for(footers, within=30, what="the timed-out run's footer")
    await proc.wait()
    fake.state.on_change.clear()

    def ended() -> bool:
        return any(s in fake.messages(thread)[0].content for s in ("⏹️ stopped", "✅ done"))

    async with running_bot(fake, llm, data, guild) as bot:
        await fake.wait_for(ended, within=30, what="the turn's end")
        await wait_idle(fake, bot)
    contents = [m.content for m in fake.messages(thread)]
    assert len(llm.requests) == 1 and not any(c.startswith("♻️") for c in contents), contents
    assert "⏹️ stopped" in contents[0], contents[0]
    (footer,) = footers()
    assert "stopped by a time limit" in footer, footer


async def test_a_stop_of_a_run_waiting_for_a_slot_holds_across_a_kill_just_after_stopping_is_said(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """One run slot: Alice's run holds it, Bob's research waits. Bob presses Stop and the bot is
    killed the instant it answers "Stopping…". His stored request was dropped only later, as the
    waiting run settled: the restart answered it ("Starting this research…") and charged him. Dropped
    first, the header then kept "🕒 waiting for a free slot" (with Stop) for good: the restart now
    shows it stopped."""

    def respond(body: dict[str, Any]) -> Reply:
        asked = " ".join(str(m.get("content")) for m in body["messages"] if m["role"] == "user")
        return text("Salt answered although stopped.") if "salt" in asked else text("Tides: the moon.")

    llm.script(Reply(hang=True))
    log, data = tmp_path / "bot.log", tmp_path / "data"
    proc = await start_bot_process(fake, llm, data, guild, log, BOT_MAX_CONCURRENT_RUNS="1")
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
    await fake.wait_for_thread(parent=general, within=20)
    await fake.wait_for(lambda: llm.requests, within=20, what="alice's model call")
    fake.inject_interaction("research", {"task": "salt"}, user="bob", channel=general)
    salt = await fake.wait_for_thread(parent=general, name="🔎 salt", within=20)
    await fake.wait_for_message(salt, lambda m: "waiting for a free slot" in m.content, within=20)
    header = fake.messages(salt)[0]
    (row,) = header.components
    click: Any = None

    def kill_as_stopping_is_said() -> None:
        if proc.returncode is None and click is not None and click.responses:
            proc.kill()

    fake.state.on_change.append(kill_as_stopping_is_said)
    # A moment's write lock on the store (a backup, a busy disk) widens the instant between the reply
    # and the drop to a second and a half: the reply used to go out at once, the drop waited for the lock.
    lock = sqlite3.connect(data / "agentbot.sqlite3", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        click = fake.inject_component(row["components"][0]["custom_id"], message=header, user="bob")
        with contextlib.suppress(TimeoutError):
            await fake.wait_for(lambda: click.responses, within=1.5, what="the reply to Stop")
    finally:
        lock.rollback()
        lock.close()
    await fake.wait_for(lambda: click.responses, within=20, what="the reply to Stop")
    await proc.wait()
    fake.state.on_change.clear()
    assert [r["data"].get("content") for r in click.responses] == ["Stopping…"], _tail(log)

    llm.responder = respond
    async with running_bot(fake, llm, data, guild, BOT_MAX_CONCURRENT_RUNS=1) as bot:
        await fake.wait_for(lambda: len(llm.requests) >= 2, within=30, what="alice's resumed run")
        await fake.wait_for(
            lambda: "⏹️ stopped" in fake.messages(salt)[0].content, within=20, what="salt's header"
        )
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="bob"))
    said = [m.content for m in fake.messages(salt)]
    assert not any("answered although stopped" in c or "Starting this research" in c for c in said), said
    assert len(llm.requests) == 2, [r["messages"][-1] for r in llm.requests]
    assert "**Tokens today**: 0" in usage, usage


async def test_mcp_tools_in_autocomplete_imported_memories_and_members_quoted_words(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, other: FakeGuild, tmp_path: Path
) -> None:
    """One bot, three things members and admins met:
    - `/config tools` autocomplete offered the built-in tools only; the server's own MCP tools (added
      with `/config mcp`) were accepted when typed whole, but never offered.
    - Other's admin imports Lab's export: each memory's "in #thread" pointed to Lab's thread, a dead
      link for Other's members. It now says the memory came from another server, without the link.
    - Alice's question, and her edit of it, held Markdown: the header's quote, the "You edited your
      message to …" offer and the re-run's "Re-running with the edited message: …" rendered it in the
      bot's voice (a masked link, bold, a heading). They show as she wrote them."""
    llm.script(text("I know no Frnace."), text("Paris."))
    asked_text = "Capital of **Frnace**? [map](https://evil.example)\n# FREE"
    edited_text = "Capital of **France**? [map](https://evil.example)"
    with HttpMcpServer() as server:
        async with running_bot(
            fake, llm, tmp_path, guild, MEMORY_ENABLED=True, agent_env={"FETCH_ALLOW_LOOPBACK": True}
        ) as bot:
            await run(fake, guild, "config mcp", {"name": "inv", "url": server.url})
            offered = await choices(
                fake, autocomplete(fake, guild, "config tools", {"tool": "inv", "enabled": True}, "tool")
            )

            memory, lab = bot.services.memory, str(guild.id)
            assert memory is not None, bot.services.memory_error
            await memory.store(
                lab, "Our club bakes on Saturdays.", kind="note", origin="agent", thread="4242"
            )
            export = (await run(fake, guild, "memory export")).attachments[0]
            await run(fake, other, "memory import", {"file": (export.filename, export.data)}, user="boss")
            there = flat(await run(fake, other, "memory list", user="dave"))
            here = flat(await run(fake, guild, "memory list", user="bob"))

            general = guild.channel("general")
            mention = f"<@{bot.user.id}> "
            asked = fake.inject_message(general, "alice", mention + asked_text)
            thread = await fake.wait_for_thread(parent=general)
            await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
            await wait_idle(fake, bot)
            edit_message(fake, asked, mention + edited_text)
            offer = await fake.wait_for_message(
                thread, lambda m: m.content.startswith("✏️ You edited"), within=15
            )
            fake.inject_component(
                offer.components[0]["components"][0]["custom_id"], message=offer, user="alice"
            )
            await fake.wait_for_message(thread, lambda m: m.content == "Paris.", within=15)
            await wait_idle(fake, bot)
    assert any(c["value"] == "inv__lookup" for c in offered), offered
    assert "Our club bakes on Saturdays." in there and "<#4242>" not in there, there
    assert "imported from another server" in there, there
    assert "<#4242>" in here, here  # Lab's own thread stays a link in Lab
    escaped = r"Capital of \*\*France\*\*? \[map](https://evil.example)"
    rerun = next(m.content for m in fake.messages(thread) if m.content.startswith("✏️ Re-running"))
    assert offer.content.startswith(f"✏️ You edited your message to “{escaped}”"), offer.content
    assert rerun.startswith(f"✏️ Re-running with the edited message: “{escaped}”"), rerun
    header = fake.messages(thread)[0].content
    assert "> Capital of \\*\\*Frnace\\*\\*? \\[map](https://evil.example)\n> \\# FREE" in header, header
