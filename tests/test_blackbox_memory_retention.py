"""Black-box: a server's memory retention (``/config memory max_items max_age_days``) as its admin sets it
and its members then meet it, through the real bot, the fake Discord and a real Chroma store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_security_memory import research, run_command

OLD = "The guild's old raid night was Tuesday, in the west hall."
NEWER = "The guild's raid night moved to Friday, in the east hall."
NEWEST = "Friday raids start at 21:00 server time."


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


async def test_blackbox_memory_retention_set_by_an_admin_holds_before_anything_new_is_stored(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Raids are on Friday."))
    ns = str(guild.id)
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=True) as bot:
        memory = bot.services.memory
        assert memory is not None, bot.services.memory_error
        day = 86400.0
        await memory.store(ns, OLD, kind="fact", created=time.time() - 100 * day)  # stored long ago
        await memory.store(ns, NEWER, kind="fact", created=time.time() - 2 * day)
        await memory.store(ns, NEWEST, kind="fact", created=time.time() - day)
        await run_command(fake, guild, "config memory", {"max_age_days": "30", "auto_store": False}, "admin")

        # Nothing older than 30 days is shown, counted or recalled, though nothing new was stored.
        stats = await run_command(fake, guild, "memory stats", {}, "bob")
        assert "Memories: **2**" in stats.content and "at most 30 days old" in stats.content
        listed = await run_command(fake, guild, "memory list", {}, "bob")
        assert "west hall" not in listed.content and "(2 in all)" in listed.content
        thread = await research(fake, guild, "Which night does the guild raid, and where?", "alice")
        await wait_idle(fake, bot)
        assert "west hall" not in llm.requests[0]["messages"][0]["content"]
        assert any("recalled 2 memories" in m.content for m in fake.messages(thread))

        await run_command(fake, guild, "config memory", {"max_items": "1"}, "admin")
        listed = await run_command(fake, guild, "memory list", {}, "bob")
        assert "(1 in all)" in listed.content and "21:00" in listed.content  # the oldest went first
