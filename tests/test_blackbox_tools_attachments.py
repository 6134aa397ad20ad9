"""Attachments as users send them from the programs they use, through the real bot (discord.py
against the fake Discord, which serves the files on 127.0.0.1) with the scripted LLM reading them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.test_e2e_attachments import tool_results, user_text

ROWS = "city,café visits\nZürich,12\nMálaga,30\n"


@pytest.mark.usefixtures("fast_write_window")
async def test_a_windows_csv_and_a_notepad_unicode_text_are_read_not_refused(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # Excel's "CSV (Comma delimited)" on Windows is Windows-1252; Notepad's and Excel's "Unicode" text
    # is UTF-16 with a byte-order mark. Both were refused as "unsupported type".
    llm.script(
        tool_call("read_file", {"path": "visits.csv"}),
        tool_call("read_file", {"path": "notes.txt"}),
        text("Málaga had 30 café visits."),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_message(
            general,
            "alice",
            f"<@{bot.user.id}> which city had most visits?",
            attachments=[("visits.csv", ROWS.encode("cp1252")), ("notes.txt", ROWS.encode("utf-16"))],
        )
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Málaga had" in m.content, within=20)
        await wait_idle(fake, bot)
        shown = [m.content for m in fake.messages(thread)]
    assert not any("📎 Not read" in c for c in shown), shown
    told = user_text(llm.requests[0])
    assert "visits.csv (" in told and "notes.txt (" in told and "unsupported" not in told
    csv, notes = tool_results(llm.requests[2])[-2:]
    assert "Málaga,30" in csv and "café" in csv, csv
    assert "Málaga,30" in notes and "café" in notes, notes
