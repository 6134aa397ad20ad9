"""Thread manners end to end, second round (session 13): the real discord.py bot against the fake
Discord and the scripted LLM, over 127.0.0.1. What a member or a moderator would notice in a session
thread after something went wrong: a refused header, a closed thread, a retry, big files.
"""

from __future__ import annotations

from pathlib import Path

import discord
import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_models import BOT_PERMISSIONS
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text

INVITED = BOT_PERMISSIONS & ~discord.Permissions(manage_threads=True, manage_messages=True).value
"""What README's invite asks for: no Manage Threads, so the bot cannot delete a thread."""


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


async def answer_of(fake: FakeDiscord, inter) -> str:
    await fake.wait_for(
        lambda: (
            inter.followup_ids
            or (inter.original_message_id and not fake.message(inter.original_message_id).loading)
        ),
        what="the interaction's answer",
    )
    ids = inter.followup_ids or [inter.original_message_id]
    return fake.message(ids[-1]).content


async def test_a_thread_left_by_a_refused_header_starts_no_headerless_turn(
    llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The header refused and the thread not removable (no Manage Threads): the empty thread stayed and
    still led to the failed session, so the requester's message there ran a paid turn with no header."""
    llm.script(text("Tides answer."))
    async with FakeDiscord([guild], bot_permissions=INVITED) as fake:
        general = guild.channel("general")
        async with running_bot(fake, llm, tmp_path, guild) as bot:
            fake.inject_error("POST", "/channels/*/messages", status=403, code=50013, count=1)
            inter = fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
            refusal = await answer_of(fake, inter)
            (left,) = fake.threads(parent=general)
            fake.inject_message(left, "alice", "so what about the tides?")
            asked = fake.inject_message(left, "alice", f"<@{fake.bot_user.id}> hello?")
            told = await fake.wait_for_message(left, lambda m: m.reference_id == asked.id)
            await wait_idle(fake, bot)
            shown = [m.content for m in fake.messages(left)]
    assert "could not remove" in refusal, refusal
    assert llm.requests == [], shown  # a paid turn ran, its answer under no header
    assert told.content.startswith("Nothing runs in this thread"), told.content
    assert len(shown) == 3, shown
