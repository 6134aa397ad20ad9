"""README's /config table: ``/config default-tier`` is "the tier /research and mentions use (otherwise chosen
per task)". A server that set none must see that in ``/config show``, not a fixed tier its runs never use."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import running_bot
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM
from tests.test_e2e_config import flat, run


async def test_config_show_on_a_fresh_server_says_the_tier_is_chosen_per_task(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    async with running_bot(fake, llm, tmp_path, guild):
        fresh = flat(await run(fake, guild, "config show"))
        await run(fake, guild, "config default-tier", {"tier": "simple"})
        chosen = flat(await run(fake, guild, "config show"))
    assert "Default tier: `auto`" in fresh, fresh
    assert "Default tier: `simple`" in chosen, chosen
