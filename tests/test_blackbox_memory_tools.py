"""Black-box: the memory tools a run's model is offered, as the operator configured them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_security_memory import research


@pytest.mark.usefixtures("fast_write_window")
async def test_blackbox_memory_remember_is_not_offered_when_the_operator_turned_notes_off(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("An answer."))
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=True, MEMORY_REMEMBER_PER_RUN=0) as bot:
        await research(fake, guild, "What did we decide about the logo?", "alice")
        await wait_idle(fake, bot)
    offered = {t["function"]["name"] for t in llm.requests[0]["tools"]}
    assert "recall" in offered, offered
    assert "remember" not in offered  # a tool that could only refuse costs a step
