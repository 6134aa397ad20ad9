"""Black-box: /memory commands given odd input by members, through the real bot and a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM
from tests.test_security_memory import run_command


@pytest.mark.usefixtures("fast_write_window")
async def test_blackbox_memory_a_query_of_only_spaces_is_answered_not_an_error(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # Discord trims ASCII spaces but not U+3000, the space of Japanese and Chinese keyboards.
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=True) as bot:
        assert bot.services.memory is not None, bot.services.memory_error
        for name in ("memory search", "memory forget"):
            msg = await run_command(fake, guild, name, {"query": "\u3000 \u3000"}, "alice")
            assert "Give a `query` with words in it" in msg.content, (name, msg.content)
