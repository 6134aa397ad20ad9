"""What members see when the bot lacks a permission in the channel its thread is in: the real
discord.py bot on the fake Discord (which refuses what the bot's role does not allow), the scripted
model on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import discord
import pytest

from bot.formatting import DmLimit
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_models import INTENT_GUILDS, FakeChannel, role_payload
from tests.fakes.discord_records import RestCall
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"))


def forbid(guild: FakeGuild, fake: FakeDiscord | None = None, **perms: bool) -> None:
    """Take permissions from every role, the bot's and @everyone's included (``fake``: a connected bot
    is told, as an admin's change is announced)."""
    for role in guild.roles:
        role.permissions &= ~discord.Permissions(**perms).value
        if fake is not None:
            data = {"guild_id": str(guild.id), "role": role_payload(role)}
            fake.state.dispatch("GUILD_ROLE_UPDATE", data, intent=INTENT_GUILDS)


@pytest.mark.usefixtures("fast_write_window")
async def test_without_attach_files_a_long_answer_and_written_files_are_not_lost(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """An answer over 6,000 characters is attached as a file when the bot may attach files; without
    Attach Files Discord refused that message and the member saw a header and a footer, no answer.
    The answer comes as messages instead, and files the agent wrote are named with what is missing."""
    huge = "\n\n".join(f"Section {i}: " + "dolor sit amet " * 60 for i in range(10))  # ~9,000 chars
    llm.script(tool_call("write_file", {"path": "notes.md", "content": "# Notes"}), text(huge))
    general = guild.channel("general")
    forbid(guild, attach_files=True)
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "A long report"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=20)
        await wait_idle(fake, bot)
        shown = [m.content for m in fake.messages(thread)]
    refused = [c for c in fake.calls("POST", f"/channels/{thread.id}/messages") if c.status == 403]
    assert refused == []
    parts = [c for c in shown if c.startswith("Section")]
    assert all(len(p) <= 2000 for p in parts)
    assert "\n\n".join(parts).split() == huge.split()  # the whole answer, in order
    files_note = next(c for c in shown if c.startswith("📎"))
    assert "notes.md" in files_note and "**Attach Files**" in files_note, files_note


@pytest.mark.usefixtures("fast_write_window")
async def test_without_send_permissions_the_member_is_told_once_in_a_dm_and_nothing_runs(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A mention where the bot may neither open a thread nor post: its refusal reply was refused too, so
    the member heard nothing. A follow-up in a session thread after an admin took Send Messages in
    Threads away ran the agent (and charged it) into a thread where nothing could be shown. Both get
    one DM naming the missing permission; nothing runs."""
    llm.script(text("First answer."), text("Nobody sees this."))
    general = guild.channel("general")

    def refused(channel: FakeChannel) -> list[RestCall]:
        return [c for c in fake.calls("POST", f"/channels/{channel.id}/messages") if c.status == 403]

    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        forbid(guild, fake, send_messages=True, send_messages_in_threads=True, create_public_threads=True)
        fake.inject_message(general, "alice", f"<@{bot.user.id}> and the moon?")
        dm = fake.state.open_dm(fake.state.user(guild.member("alice").user.id))
        first = await fake.wait_for_message(dm, within=10)
        fake.inject_message(thread, "alice", "more please")
        second = await fake.wait_for_message(dm, lambda m: m.id != first.id, within=10)
        # She keeps posting in both: no DM per message (one per channel per hour); bob is told for himself.
        fake.inject_message(general, "alice", f"<@{bot.user.id}> hello?")
        fake.inject_message(thread, "alice", "anyone?")
        # (A second refused mention within a minute is not even tried in the channel: bot.cogs.research.)
        await fake.wait_for(lambda: len(refused(thread)) == 2, within=10)
        fake.inject_message(thread, "bob", f"<@{bot.user.id}> me too")
        bobs = fake.state.open_dm(fake.state.user(guild.member("bob").user.id))
        await fake.wait_for_message(bobs, within=10)
        await wait_idle(fake, bot)
    assert "**Create Public Threads**" in first.content, first.content
    assert "**Send Messages in Threads**" in second.content and f"<#{thread.id}>" in second.content
    assert len(fake.messages(dm)) == 2 and len(llm.requests) == 1 and len(refused(general)) == 1
    assert len(fake.messages(bobs)) == 1


def test_dms_about_a_channel_are_forgotten_after_the_window_and_beyond_the_bound() -> None:
    bounded = DmLimit(kept=2)
    assert [bounded.allow(m, 7) for m in (1, 1, 2, 3)] == [True, False, True, True]
    assert bounded.allow(1, 7) and not bounded.allow(3, 7)  # member 1 was the oldest, forgotten first
    assert bounded.allow(3, 8)  # another channel
    expired = DmLimit(window=0.0)
    assert expired.allow(1, 7) and expired.allow(1, 7)
