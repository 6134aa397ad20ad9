"""Thread manners end to end (session 13): the real discord.py bot against the fake Discord and the
scripted LLM, over 127.0.0.1. What a member or a server admin would notice in a session thread: what the
bot claims it did, how long answers are cut into messages, what it writes in the bot's own voice.
"""

from __future__ import annotations

from pathlib import Path

import discord
import pytest

from tests.e2e.harness import running_bot
from tests.fakes.discord_models import BOT_PERMISSIONS
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM

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


async def test_a_thread_the_bot_could_not_delete_is_not_said_removed(
    llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Invited as README says (no Manage Threads), the bot whose header Discord refused said "so I removed
    it" of a thread that stayed, empty, in the channel: a moderator had no reason to look for it."""
    async with FakeDiscord([guild], bot_permissions=INVITED) as fake:
        general = guild.channel("general")
        async with running_bot(fake, llm, tmp_path, guild):
            fake.inject_error("POST", "/channels/*/messages", status=403, code=50013, count=1)
            inter = fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
            refusal = await answer_of(fake, inter)
            fake.inject_error("POST", "/channels/*/messages", status=403, code=50013, count=1)
            said = fake.inject_message(general, "alice", f"<@{fake.bot_user.id}> and the moon?")
            reply = await fake.wait_for_message(general, lambda m: m.reference_id == said.id)
        left = fake.threads(parent=general)
    assert len(left) == 2 and fake.calls("DELETE", f"/channels/{left[0].id}")  # tried, refused: they stay
    for text in (refusal, reply.content):
        assert "removed it" not in text and "**Manage Threads**" in text, text
        assert "**Send Messages in Threads**" in text, text
    assert llm.requests == []
