"""/config as admins meet it: the real discord.py bot on the fake Discord, the scripted LLM, a real
SQLite store. What is set is shown back, and what is accepted works."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_e2e_config import flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",), admins=("admin",))


@pytest.mark.usefixtures("fast_write_window")
async def test_a_tier_of_models_the_bot_cannot_call_is_refused_instead_of_breaking_every_run(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Every model the price package knows is offered, including other providers' models this bot has no
    key for. Such a tier used to be accepted ("✅"), and then every /research on the server failed with
    "something went wrong (error id …)", each counting a request. Now /config says why it cannot be used
    and changes nothing."""
    llm.script(text("Paris."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        refused = await run(
            fake, guild, "config tier", {"tier": "simple", "models": "anthropic:claude-3-5-haiku-latest"}
        )
        mixed = await run(
            fake,
            guild,
            "config tier",
            {"tier": "medium", "models": "gpt-4o-mini, anthropic:claude-3-5-haiku-latest"},
        )
        gs = await bot.services.guild_settings.get(guild.id)
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Paris.", within=15)
        await wait_idle(fake, bot)
    for msg in (refused, mixed):
        assert msg.content.startswith("⚠️"), msg.content
        assert "anthropic:claude-3-5-haiku-latest" in msg.content and "ANTHROPIC_API_KEY" in msg.content
        assert "nothing changed" in msg.content.lower(), msg.content
    assert gs.overrides == {}


@pytest.mark.usefixtures("fast_write_window")
async def test_config_show_lists_the_fetch_domains_and_mcp_servers_set_here(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """/config show is "the effective settings": it left out where fetch_url may read and the server's MCP
    servers, so an admin reading it saw no sign of an allow-list that made every other site unreadable
    (once the change had left the 10 recent ones)."""
    async with running_bot(fake, llm, tmp_path, guild):
        await run(
            fake, guild, "config fetch", {"allow": "docs.python.org, BÜCHER.de", "block": "evil.example"}
        )
        await run(fake, guild, "config mcp", {"name": "wiki", "url": "https://mcp.example.com/mcp"})
        for steps in range(1, 11):  # ten later changes push those out of "Recent changes"
            await run(fake, guild, "config max-steps", {"steps": steps})
        shown = flat(await run(fake, guild, "config show"))
    assert "`docs.python.org`" in shown and "`xn--bcher-kva.de`" in shown, shown
    assert "`evil.example`" in shown, shown
    assert "`wiki`" in shown and "https://mcp.example.com/mcp" in shown, shown


@pytest.mark.usefixtures("fast_write_window")
async def test_an_mcp_servers_password_never_shows_in_the_change_reply_or_the_audit_lines(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A URL's user:password is a secret wherever it is shown (README), and /config mcp's own listing hides
    it; but /config show's "Recent changes" wrote the stored URL out whole, to every admin, ever after."""
    url = "https://bot:hunter2@mcp.example.com/mcp"
    async with running_bot(fake, llm, tmp_path, guild):
        added = flat(await run(fake, guild, "config mcp", {"name": "wiki", "url": url}))
        listed = flat(await run(fake, guild, "config mcp"))
        shown = flat(await run(fake, guild, "config show"))
    for text_ in (added, listed, shown):
        assert "hunter2" not in text_, text_
    assert "mcp.example.com" in shown and "`mcp.wiki`: default →" in shown, shown


async def test_a_server_whose_tiers_the_bot_can_no_longer_call_is_told_why_runs_fail(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Tiers set while the bot had a provider's key, then the operator removed it: every run on the server
    stopped with "something went wrong (error id …)", which neither the member nor an admin can act on.
    The thread now says which model cannot be used and why."""
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        for tier in ("simple", "medium", "complex"):  # stored as /config stored it back then
            await bot.services.guild_settings.set(
                guild.id, 1, f"tier.{tier}", "anthropic:claude-3-5-haiku-latest"
            )
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        note = await fake.wait_for_message(thread, lambda m: m.content.startswith("⚠️ This turn stopped"))
        await wait_idle(fake, bot)
    assert "something went wrong" not in note.content, note.content
    assert "anthropic:claude-3-5-haiku-latest" in note.content and "ANTHROPIC_API_KEY" in note.content
    assert llm.requests == []


@pytest.mark.usefixtures("fast_write_window")
async def test_config_show_says_the_tier_is_chosen_per_task_until_a_default_tier_is_set(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """With no default tier set, /research lets the router choose per task ("tier simple (auto)" in the
    header), yet /config show said "Default tier: `medium`" (the bot's DEFAULT_TIER, which only applies
    once a server sets one), so admins read a tier that no run used."""
    llm.script(text("Paris."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        before = flat(await run(fake, guild, "config show"))
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Paris.", within=15)
        await wait_idle(fake, bot)
        header = fake.messages(thread)[0].content
        changed = await run(fake, guild, "config default-tier", {"tier": "complex"})
        after = flat(await run(fake, guild, "config show"))
    assert "(auto)" in header, header
    assert "Default tier: auto" in before and "`medium`" not in before.split("Default tier")[1][:40], before
    assert changed.content.startswith("✅ `default_tier`: auto"), changed.content
    assert "Default tier: `complex` *(set here)*" in after, after
