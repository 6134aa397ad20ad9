"""Hostile Discord members against the real bot (discord.py on the fake Discord, the scripted model on
127.0.0.1), found by the fourth black-box security QA. Each test failed before the fix its comment names."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from aiohttp import web

from agent.attachments import IncomingFile
from agent.config import AgentSettings
from agent.events import Cost, RunResult, Usage
from agent.memory.transfer import _row_problem
from bot.attach import from_discord, take
from bot.cogs.threads import QUEUE_FULL, QUEUED
from bot.config import BotSettings
from bot.footer import format_footer
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text
from tests.fakes.served import served

HOSTILE_NICK = "[nitro](https://e.vil)\u202egnp.exe"


@pytest.fixture
def guild() -> FakeGuild:
    lab = FakeGuild.create("Lab", channels=("general",), members=("alice",))
    lab.add_member("mallory", nick=HOSTILE_NICK)
    return lab


@pytest.mark.usefixtures("fast_write_window")
async def test_a_hostile_nickname_that_stops_a_run_is_shown_as_plain_visible_text(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # Stop wrote the presser's nickname as is into the stop note and the footer ("stopped by …"):
    # its masked link rendered as a link in the bot's message, and a right-to-left override reversed
    # the rest of the line. The note is also the stored history the model reads next turn.
    llm.script(Reply(hang=True))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="mallory", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        header = await fake.wait_for_message(thread)
        await fake.wait_for(lambda: len(llm.requests) == 1, what="the model call")
        stop = header.components[0]["components"][0]["custom_id"]
        fake.inject_component(stop, message=header, user="mallory")
        await fake.wait_for_message(thread, lambda m: "stopped by" in m.content, within=10)
        await wait_idle(fake, bot)
        shown = "\n".join(m.content for m in fake.messages(thread) if m.author.id == bot.user.id)
    assert "\u202e" not in shown, shown
    assert shown.count("[nitro](") == shown.count("\\[nitro](") == 2, shown  # escaped: no link
    assert "stopped by \\[nitro](https://e.vil)" in shown  # still recognisable


@pytest.mark.usefixtures("fast_write_window")
async def test_members_flooding_a_thread_neither_queue_without_end_nor_hold_up_other_threads(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # Every follow-up posted while a turn ran was queued, without a bound: 300 messages were 300 turns
    # to run or refuse (each refusal a message in the thread). Each was marked ⏳ with a REST write taken
    # without a lane, so each became a lane of its own in the bot's round-robin REST budget and a flood
    # went ahead of every other thread's (and server's) writes, thread creation included.
    llm.script(Reply(hang=True), text("Otters hold hands while sleeping."))
    general = guild.channel("general")
    crowd = [f"m{i}" for i in range(4)]
    for name in crowd:
        guild.add_member(name)
    async with running_bot(
        fake, llm, tmp_path, guild, BOT_REST_WRITES_PER_SECOND=10, BOT_SHUTDOWN_GRACE_SECONDS=0
    ) as bot:
        fake.inject_interaction(
            "research", {"task": "tides", "tier": "simple"}, user="mallory", channel=general
        )
        flooded = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: len(llm.requests) == 1, what="the hanging model call")
        own = [fake.inject_message(flooded, "mallory", f"more {i}") for i in range(7)]
        ping = f"<@{bot.user.id}>"
        flood = own + [fake.inject_message(flooded, m, f"{ping} more {i}") for i in range(5) for m in crowd]
        await fake.wait_for(lambda: bot.runner.rest_budget.waiting() >= 16, what="the flood queued")
        fake.inject_interaction(
            "research", {"task": "otters", "tier": "simple"}, user="alice", channel=general
        )
        other = await fake.wait_for_thread(parent=general, name="🔎 otters", within=30)
        await fake.wait_for_message(other, lambda m: "tokens" in m.content, within=30)
        marked = sum(1 for m in flood if m.reactions.get(QUEUED))
        await fake.wait_for(lambda: sum(1 for m in flood if m.reactions.get(QUEUED)) == 25, within=10)
        await fake.wait_for_message(flooded, lambda m: m.content == QUEUE_FULL)
    assert marked < 16, f"alice's answer waited for {marked} of the flood's 25 ⏳ marks"
    assert [bool(m.reactions.get(QUEUED)) for m in own] == [True] * 5 + [False] * 2
    told = [m for m in fake.messages(flooded) if m.content == QUEUE_FULL]
    assert [m.reference_id for m in told] == [own[5].id]  # once, not for the 7th


async def test_an_attachment_address_outside_discord_is_never_requested(tmp_path: Path) -> None:
    # The bot downloaded whatever address an attachment carried with its own HTTP client, which follows
    # no SSRF guard (loopback, private networks and 169.254.169.254 included). Files come from Discord's
    # file servers; an address anywhere else is refused without a request.
    hits: list[str] = []

    async def secret(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="root:x:0:0")

    app = web.Application()
    app.router.add_get("/{name}", secret)
    async with served(app) as base, httpx.AsyncClient() as http:
        sv = SimpleNamespace(bot_settings=BotSettings(), agent_settings=AgentSettings(), http=http)
        got = await take(sv, [IncomingFile("passwd.txt", f"{base}/passwd", 10)], tmp_path, vision=False)
    assert (hits, got.refused) == ([], ["passwd.txt: it is not on Discord's file server"])
    assert from_discord("https://cdn.discordapp.com/attachments/1/2/a.txt")
    assert not from_discord("http://cdn.discordapp.com/attachments/1/2/a.txt")  # not over plain http


def test_a_source_url_from_an_imported_memory_cannot_write_markdown_in_the_footer() -> None:
    # A /memory import file's sources only had to hold no space: "https://a.example/x>\n## …" passed,
    # and every answer that recalled the memory showed its sources in the footer as ``<url>``, where
    # ``>`` and the line break ended the link and put a heading and a masked link in the bot's voice.
    planted = "https://a.example/x>\n##\u202eFREE\u00a0NITRO\u00a0[claim](https://evil.example)"
    # Import now refuses it too; a memory kept before that (or a source from elsewhere) is shown safely.
    assert "'sources' must hold URLs" in str(_row_problem({"text": "otters", "sources": [planted]}))
    result = RunResult("", "completed", 1, Usage(), Cost(), ["m"], sources=[planted])
    footer = format_footer(result)
    source = footer.splitlines()[1]
    assert source.startswith("1. <https://a.example/x%3E%0A##%E2%80%AEFREE") and source.endswith(">"), footer
    assert source.count(">") == 1 and "\u202e" not in footer and len(footer.splitlines()) == 3
