"""Members and admins of a server meet sessions across restarts, limits and roles: the real discord.py
bot on the fake Discord, the scripted model on 127.0.0.1 (found by the black-box QA of the bot)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.e2e.harness import make_bot, running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import flat, run


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general",), members=("bob",))
    g.add_member("alice", roles=[g.add_role("Pro")])
    return g


async def test_a_restart_keeps_the_requesters_role_limits_and_a_follow_up_edited_meanwhile(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The server allows 1,000 tokens a day, alice's role 50,000. Her run paused by a restart after a
    3,030-token step was refused on resuming ("3,030 of 1,000 tokens"), her research lost: the resumed
    turn was checked without her roles. The follow-up she had queued (⏳) and edited while the bot was
    down was answered with its old text (the restart fetched the message for its files, not its text)."""
    llm.script(
        tool_call("calculator", {"expression": "6*7"}, prompt_tokens=3000, completion_tokens=30),
        Reply(hang=True),
        text("Resumed: 42.", prompt_tokens=3100, completion_tokens=30),
        text("Six times eight is 48.", prompt_tokens=200, completion_tokens=10),
    )
    settings = {"BOT_SHUTDOWN_GRACE_SECONDS": 0.2}
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, **settings):
        await run(fake, guild, "config limits", {"limit": "tokens_per_day", "value": "1000"})
        pro = {"limit": "tokens_per_day", "value": "50000", "role": guild.role("Pro")}
        await run(fake, guild, "config limits", pro)
        fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: len(llm.requests) == 2, what="step 2's model call")
        follow_up = fake.inject_message(thread, "alice", "And 6*9?")
        await fake.wait_for(lambda: "⏳" in fake.message(follow_up.id).reactions, what="⏳")
    edit_message(fake, follow_up, "And 6*8?")  # the bot is down: no event reaches it
    async with running_bot(fake, llm, tmp_path, guild, **settings) as bot:
        await fake.wait_for_message(thread, lambda m: m.content == "Six times eight is 48.", within=20)
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    shown = [m.content for m in fake.messages(thread)]
    assert not any("limit reached" in c for c in shown), shown
    # 3,030 + 3,130 tokens, and step 2's call that the restart cut (billed: counted by estimate)
    said = [
        int(m.group(1).replace(",", ""))
        for c in shown
        if (m := re.search(r"2 steps · estimated: ([\d,]+) tokens", c))
    ]
    assert said and said[0] > 6_160, shown
    # The member's words as written: "6*8" is escaped (a member's Markdown never renders in the bot's voice).
    assert any(
        c.startswith("⏳ Answering a follow-up queued before the restart: “And 6\\*8?”") for c in shown
    )
    assert [r["messages"][-1]["content"] for r in llm.requests][-1] == "And 6*8?"
    assert f"**Tokens today**: ~{said[0] + 210:,} of 50,000" in usage, usage  # and the follow-up's 210


@pytest.mark.usefixtures("fast_write_window")
async def test_a_turn_that_ends_while_the_bot_stops_leaves_its_header_done_and_a_follow_up_kept(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The bot is stopped (SIGTERM) while a turn's last model call runs; the turn ends within the grace
    period, but its header said "⏳ running…" with a Stop button for good, also after the restart. A
    follow-up posted during the grace period was dropped without a word, and never answered."""
    llm.script(Reply(text="Paris.", delay=1), text("About 2.1 million."))
    bot = make_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=5)
    await fake.start_bot(bot)
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general)
    await fake.wait_for(lambda: llm.requests, what="the model call")
    stopping = asyncio.create_task(fake.stop_bot(bot))
    await fake.wait_for(lambda: bot.runner.busy() and bot.runner._closing, what="the bot to be stopping")
    follow_up = fake.inject_message(thread, "alice", "How many live there?")
    await fake.wait_for(lambda: "⏳" in fake.message(follow_up.id).reactions, what="⏳: it is kept")
    await stopping
    header = fake.messages(thread)[0]
    assert "Paris." in [m.content for m in fake.messages(thread)]
    assert "✅ done" in header.content and header.components == [], header.content
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await fake.wait_for_message(thread, lambda m: m.content == "About 2.1 million.", within=15)
        await wait_idle(fake, bot)
    assert [r["messages"][-1]["content"] for r in llm.requests] == [
        "Capital of France?",
        "How many live there?",
    ]
