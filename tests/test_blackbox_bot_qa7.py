"""The seventh black-box QA pass of the bot: a demanding admin and a hostile member, provider or page
against the real discord.py bot on the fake Discord, the scripted model on 127.0.0.1. One bot start
serves several scenarios where they do not disturb each other. Each test failed before the fix its
docstring names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, error, text

PLANTED = "[Verify your account](https://evil.example) **now** <@&1>"


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


def rendered_links(text: str) -> list[str]:
    """Masked links that render in ``text`` (code spans and escaped brackets show as written)."""
    return re.findall(r"(?<!\\)\[[^\]]*\]\(https?://[^)]*\)", re.sub("`[^`]*`", "", text))


async def test_words_of_a_provider_or_a_member_are_shown_as_written_in_the_bots_notes(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A provider (or any gateway in front of it) refused a call with the error message
    "[Verify your account](https://evil.example) **now**": the turn's failure note showed it as a
    masked link and bold in the bot's voice, under the thread's header (the retry note escaped the
    same words). A member who edited a finished mention to carry a masked link had the bot's
    "✏️ You edited your message to “…”" offer render that link as the bot's own."""
    general, me = guild.channel("general"), fake.bot_user
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        llm.script(error(400, PLANTED))
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        failed = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(failed, lambda m: "failed" in m.content and "tokens" in m.content)
        await wait_idle(fake, bot)

        llm.script(text("Paris."))
        ask = fake.inject_message(general, "bob", f"<@{me.id}> Capital of Frnace?", mentions=[me])
        thread = await fake.wait_for_thread(parent=general, name="🔎 Capital of Frnace?")
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        edit_message(fake, ask, f"<@{me.id}> Capital of {PLANTED}?")
        offer = await fake.wait_for_message(thread, lambda m: m.content.startswith("✏️ You edited"))
        await wait_idle(fake, bot)
        mine = [m.content for t in (failed, thread) for m in fake.messages(t) if m.author.id == me.id]
    (note,) = [c for c in mine if c.startswith("⚠️")]
    assert "\\[Verify your account](https://evil.example) \\*\\*now\\*\\*" in note, note  # as written
    assert "\\[Verify your account](https://evil.example) \\*\\*now\\*\\*" in offer.content, offer.content
    assert [rendered_links(c) for c in mine] == [[]] * len(mine), mine
