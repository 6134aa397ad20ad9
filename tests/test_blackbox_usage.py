"""What a member reads in the footer and in ``/usage me`` after one cheap turn: the real discord.py bot
on the fake Discord, the scripted endpoint on 127.0.0.1 pricing gpt-4o-mini."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_e2e_config import flat, run


@pytest.mark.usefixtures("fast_write_window")
async def test_one_cheap_priced_turn_is_never_shown_as_free(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Paris.", prompt_tokens=100, completion_tokens=20))  # $0.000027 of gpt-4o-mini
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, name=None)
        footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content, within=30)
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    assert "$0.0000 " not in footer.content and "$0.0000·" not in footer.content, footer.content
    assert "$0.000027" in footer.content, footer.content
    spent = re.search(r"\*\*Spending this month\*\*: \$([\d.]+)", usage)
    assert spent and float(spent.group(1)) > 0, usage  # not "$0.0000 of $5.00"
