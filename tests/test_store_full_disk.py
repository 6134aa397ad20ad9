"""The embedded SQLite store when it refuses writes: a full disk, or (as here, which a test can do
without a filesystem of its own) the write lock held by another program, an operator's ``sqlite3``
shell left inside a transaction. SQLite says "database is locked" or "database or disk is full", both
``sqlite3.OperationalError``: a member is told what happened, in words, and everything works again once
the store takes writes. (A real full disk, a 3 MB tmpfs as DATA_DIR, gave the same replies.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_e2e_config import flat, run


async def test_a_store_refusing_writes_is_said_as_such_to_commands_and_follow_ups_and_then_passes(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Paris."), text("Berlin."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Paris.", within=15)
        await wait_idle(fake, bot)
        await bot.services.db.conn.execute("PRAGMA busy_timeout = 0")  # refused at once, not after 5 s
        holder = sqlite3.connect(tmp_path / "agentbot.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            # /research said "Something went wrong" (and logged a traceback, as for a bug).
            said = flat(await run(fake, guild, "research", {"task": "Capital of Spain?"}, user="admin"))
            assert "database refused a write (out of space or locked?)" in said, said
            assert "went wrong" not in said
            # A follow-up ended in silence (the runner logged turn_crashed; the thread showed nothing).
            fake.inject_message(thread, "alice", "And Germany?")
            refused = await fake.wait_for_message(thread, lambda m: "refused a write" in m.content, within=15)
            assert "locked or out of space?" in refused.content
        finally:
            holder.rollback()
            holder.close()
        fake.inject_interaction("research", {"task": "Capital of Germany?"}, user="alice", channel=general)
        again = await fake.wait_for_thread(parent=general, name="🔎 Capital of Germany?")
        await fake.wait_for_message(again, lambda m: m.content == "Berlin.", within=15)
