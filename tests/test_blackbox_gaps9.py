"""Small bot gaps the QA engineers found and left: what an admin is told at ``/config`` time, what a
thread's header says about a run a limit stopped, a second Stop press, and a resumed turn's routing
note. The real discord.py bot on the fake Discord, the scripted model on 127.0.0.1, real SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


def said(inter) -> list[tuple[str, bool]]:
    """Each answer to an interaction: its text and whether only the presser sees it."""
    return [(r["data"].get("content", ""), bool(r["data"].get("flags", 0) & 64)) for r in inter.responses]


async def test_config_warnings_a_limits_stop_in_the_header_and_a_second_stop_press(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """One bot, four things its users met:

    * ``/config mcp`` with a loopback or private URL answered ✅; the guard then refused it at every
      turn ("🔌 MCP server … is left out"). Now /config refuses it in the guard's words.
    * ``/config fetch`` with a domain in both lists answered two ✅ lines; block wins (README), so
      fetch_url refused what the admin had just allowed. The reply now says so.
    * Two Stop presses in quick succession both answered "Stopping…"; the second is told, privately,
      that the turn is already stopping.
    * A run a token limit stopped showed "💸 stopped by a limit" in its footer and "✅ done" in its
      header, as did one the step limit stopped at step 1; the header now says what the footer says.
    """
    llm.script(tool_call("calculator", {"expression": "6*7"}), Reply(hang=True))
    llm.script(tool_call("calculator", {"expression": "6*7"}, prompt_tokens=19_000, completion_tokens=50))
    llm.script(tool_call("calculator", {"expression": "6*6"}))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        loopback = flat(
            await run(fake, guild, "config mcp", {"name": "here", "url": "http://127.0.0.1:9/mcp"})
        )
        private = flat(await run(fake, guild, "config mcp", {"name": "lan", "url": "http://10.1.2.3/mcp"}))
        public = flat(
            await run(fake, guild, "config mcp", {"name": "wiki", "url": "https://mcp.example.com/mcp"})
        )
        both = flat(
            await run(
                fake, guild, "config fetch", {"allow": "example.com, docs.python.org", "block": "EXAMPLE.com"}
            )
        )
        only_block = flat(await run(fake, guild, "config fetch", {"block": "python.org"}))
        servers = (await bot.services.guild_settings.get(guild.id)).mcp

        fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: len(llm.requests) == 2, within=20, what="step 2's model call")
        header = fake.messages(thread)[0]
        (row,) = header.components
        stop = row["components"][0]["custom_id"]
        first = fake.inject_component(stop, message=header, user="alice")
        second = fake.inject_component(stop, message=header, user="alice")
        await fake.wait_for(lambda: first.responses and second.responses, within=20, what="both answers")
        await fake.wait_for(lambda: "⏹️ stopped" in fake.messages(thread)[0].content, within=20)
        await wait_idle(fake, bot)
        stopped = [m.content for m in fake.messages(thread)]

        await run(fake, guild, "config limits", {"limit": "tokens_per_day", "value": "20000"})
        fake.inject_interaction("research", {"task": "And 7*6?"}, user="bob", channel=general)
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 2, what="bob's thread")
        limited = fake.threads(parent=general)[-1]
        await fake.wait_for_message(
            limited, lambda m: "tokens" in m.content and m.content.startswith("-# "), within=20
        )
        await wait_idle(fake, bot)
        limited_shown = [m.content for m in fake.messages(limited)]

        await run(fake, guild, "config max-steps", {"steps": 1})  # and the step limit, at step 1
        fake.inject_interaction("research", {"task": "And 6*6?"}, user="admin", channel=general)
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 3, what="admin's thread")
        one_step = fake.threads(parent=general)[-1]
        await fake.wait_for_message(one_step, lambda m: m.content.startswith("-# ") and "tokens" in m.content)
        await wait_idle(fake, bot)
        stepped = [m.content for m in fake.messages(one_step)]

    guard = "refused to connect to 127.0.0.1: it is a loopback address. Only public internet addresses"
    assert loopback.startswith("⚠️ MCP server `here` not added: ") and guard in loopback, loopback
    assert "it is a private address" in private and "Nothing changed" in private, private
    assert public.startswith("✅"), public
    assert servers == {"wiki": "https://mcp.example.com/mcp"}
    assert "In both the allow-list and the block-list: `example.com`." in both, both
    assert "Block wins: fetch_url will not read them." in both and "docs.python.org`." not in both, both
    # A parent domain blocked covers an allowed subdomain too.
    assert "`docs.python.org`" in only_block and "`example.com`" in only_block, only_block

    assert said(first) == [("Stopping…", True)], said(first)
    assert said(second) == [("Already stopping: this turn is being stopped.", True)], said(second)
    assert sum(c.startswith("Stopped by") for c in stopped) == 1, stopped

    footer = next(c for c in limited_shown if c.startswith("-# ") and "tokens" in c)
    assert "💸 stopped by a limit" in footer, footer
    assert "💸 stopped by a limit" in limited_shown[0] and "✅ done" not in limited_shown[0], limited_shown[0]

    assert len(llm.requests) == 4, llm.requests  # neither limited run asked the model past its limit
    footer = next(c for c in stepped if c.startswith("-# ") and "tokens" in c)
    assert "⏱️ step limit reached" in footer, footer
    assert "-# ⏱️ step limit reached <t:" in stepped[0] and "✅ done" not in stepped[0], stepped[0]


async def test_a_turn_resumed_after_a_restart_does_not_repeat_the_route_its_header_names(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The bot restarts during a /research's second step: the resumed turn posted "🧭 simple tier →
    gpt-4o-mini (…)", which the header above already says (and a first turn never posts)."""
    llm.script(tool_call("calculator", {"expression": "6*7"}), Reply(hang=True), text("It is 42."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0):  # paused at once
        fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: len(llm.requests) == 2, within=20, what="step 2's model call")
    async with running_bot(fake, llm, tmp_path, guild):  # a note would show before the answer it precedes
        await fake.wait_for_message(thread, lambda m: m.content == "It is 42.", within=20)
    shown = [m.content for m in fake.messages(thread)]
    assert "-# tier simple (auto)" in shown[0], shown[0]
    assert any(c.startswith("♻️") for c in shown), shown  # it was resumed
    assert not any("🧭" in c for c in shown), shown
