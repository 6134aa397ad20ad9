"""The gaps the last closing note named, each driven as its user meets it: fetch_url's lookups under
hostile name servers, /usage me during a run, a restart, the reader in the thread, members' text in
thread names, the channels allow-list on buttons, and SIGTERM at start-up."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.messages import ToolCall
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.registry import ToolContext, ToolRegistry
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.dns_server import serving_dns
from tests.fakes.llm_server import FakeLLM, Reply, error, text, tool_call
from tests.fakes.served import served
from tests.fakes.web_server import FakeWeb
from tests.test_e2e_config import answer, click, flat, run

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))


async def test_hanging_name_servers_of_many_servers_leave_other_servers_fetches_running() -> None:
    """Six servers each fetch 4 pages whose name server never answers (24 lookups: the 16 shared DNS
    threads were full at 5 servers, and every other server's fetch_url waited behind them). Another
    server's page is fetched meanwhile; each hanging fetch ends with its own reason; the SSRF rules
    still hold for what the name server answers."""
    app = web.Application()
    app.router.add_get(
        "/article", lambda _: web.Response(text="Otters hold hands.", content_type="text/plain")
    )
    records = {"docs.test": ["127.0.0.1"], "inside.test": ["10.1.2.3"]}
    async with serving_dns(records) as dns, served(app) as base:
        settings = FetchSettings(timeout=3, allow_loopback=True, dns_servers=f"127.0.0.1:{dns.port}")
        fetcher = PageFetcher(settings)
        registry = ToolRegistry(fetch_tools(fetcher))

        async def fetch(server: str, url: str) -> str:
            call = ToolCall(id="c", name="fetch_url", arguments=json.dumps({"url": url}))
            return (await registry.execute(call, ToolContext(namespace=server))).output

        threads = threading.active_count()
        hostile = [
            asyncio.create_task(fetch(f"hostile{s}", f"http://p{i}.s{s}.hang.test/"))
            for s in range(6)
            for i in range(4)
        ]
        try:
            await dns.wait_asked(24)
            port = base.rsplit(":", 1)[1]
            page = await fetch("other", f"http://docs.test:{port}/article")
            assert "Otters hold hands." in page, page
            assert not any(t.done() for t in hostile), [t.result() for t in hostile if t.done()]
            assert threading.active_count() <= threads + 2  # no thread per lookup
            inside = await fetch("other", "http://inside.test/")
            assert "inside.test (which resolves to 10.1.2.3)" in inside and "private" in inside, inside
            missing = await fetch("other", "http://nowhere.test/")
            assert "cannot resolve the host nowhere.test: no such name" in missing, missing
            for out in await asyncio.gather(*hostile):
                assert "did not answer" in out, out
        finally:
            for t in hostile:
                t.cancel()
            await asyncio.gather(*hostile, return_exceptions=True)
            await fetcher.aclose()


async def test_sigterm_while_agentbot_run_is_still_importing_exits_cleanly(tmp_path: Path) -> None:
    """`docker compose restart` right after a start: SIGTERM in the first ~2 s (the imports, before
    the bot's own handler) killed the process with -15; later in start-up it exits 0."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path),
        "OPENAI_API_KEY": "sk-gaps5-start-test-0001",
        "DISCORD_TOKEN": "gaps5.token.never-used",
        "DISCORD_API_BASE_URL": "http://127.0.0.1:9/api/v10",
        "MEMORY_ENABLED": "false",
        "PYTHONPROFILEIMPORTTIME": "1",  # each import is a line on stderr: SIGTERM lands mid-imports
    }
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "run", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        while (line := await asyncio.wait_for(proc.stderr.readline(), 30)).split(b"|")[
            -1
        ].strip() != b"typer":
            assert line, "agentbot run ended before importing typer"
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [x for x in err.decode().splitlines() if not x.startswith("import time:")]
    assert proc.returncode == 0, lines[-20:]
    assert not any("Traceback" in x for x in lines), lines


@pytest.mark.usefixtures("fast_write_window")
async def test_a_running_research_shows_the_members_text_without_hidden_characters_and_its_usage_apart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A task written with a right-to-left override, an isolate and a zero-width space: the thread's
    name and its header's quote kept them, so they showed one text and said another (the persona check
    already refused them). A ZWJ emoji and line breaks are real text and stay. /usage me meanwhile
    shows the running step's reservation apart from what is spent."""
    llm.script(Reply(hang=True))
    task = "Why do \u202eslaet\u202c tides\u200b turn? \u2067x\u2069 👩\u200d🔬\nSecond line"
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0.2):
        fake.inject_interaction("research", {"task": task}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the model call")
        header = fake.messages(thread)[0].content
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    assert thread.name == "🔎 Why do slaet tides turn? x 👩\u200d🔬", repr(thread.name)
    assert "> Why do slaet tides turn? x 👩\u200d🔬\n> Second line" in header, repr(header)
    # /usage me during the run counted the step's reservation as tokens used (no footer had that number):
    # nothing is spent yet, and the reservation is shown apart.
    assert re.search(r"\*\*Tokens today\*\*: 0 \(\+ [\d,]+ reserved by a running request\)", usage), usage
    assert "what it does not use is given back" in usage, usage


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general", "lab"), members=("bob",), admins=("admin",))
    g.add_member("alice", roles=[g.add_role("Pro")])
    return g


async def test_a_follow_up_in_a_session_whose_request_was_refused_is_announced_as_one_after_a_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """One run slot. Bob's research waits for it, and a token limit refuses it when it starts; his
    follow-up then waits for the slot across a restart. It was announced as "Starting this research"
    (the session had no turn, so it was taken for the session's own request)."""
    llm.script(Reply(hang=True), Reply(hang=True), text("Waves: the wind."))
    settings = {"BOT_SHUTDOWN_GRACE_SECONDS": 0.2, "BOT_MAX_CONCURRENT_RUNS": 1}
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, **settings) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        tides = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="alice's model call")
        fake.inject_interaction("research", {"task": "salt"}, user="bob", channel=general)
        salt = await fake.wait_for_thread(parent=general, name="🔎 salt")
        await fake.wait_for_message(salt, lambda m: "waiting for a free slot" in m.content, within=10)
        await run(fake, guild, "config limits", {"limit": "tokens_per_day", "value": "1"})
        pro = {"limit": "tokens_per_day", "value": "1000000", "role": guild.role("Pro")}
        await run(fake, guild, "config limits", pro)
        await click(fake, fake.messages(tides)[0], "Stop", user="alice")
        await fake.wait_for_message(salt, lambda m: m.content.startswith("⛔"), within=10)
        fake.inject_message(tides, "alice", "And waves?")
        await fake.wait_for(lambda: len(llm.requests) == 2, what="alice's follow-up running")
        rocks = fake.inject_message(salt, "bob", "And rocks?")
        await fake.wait_for(lambda: bot.runner.queued(rocks.id), what="bob's follow-up waiting for the slot")
    async with running_bot(fake, llm, tmp_path, guild, **settings) as bot:
        await fake.wait_for_message(salt, lambda m: "before the restart" in m.content, within=20)
        await wait_idle(fake, bot)
    said = [m.content for m in fake.messages(salt)]
    assert any(c.startswith("⏳ Answering a follow-up queued before the restart: “And rocks?”") for c in said)
    assert not any("Starting this research" in c for c in said), said


@pytest.mark.usefixtures("fast_write_window")
async def test_retry_and_re_run_are_refused_in_a_channel_taken_off_the_allowed_list(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """An admin limits the bot to #lab. A failed turn's Retry, and a re-run of an edited question, in
    threads under #general still ran (new sessions are refused there); they now give /research's
    refusal, and nothing runs."""
    llm.script(error(400, "bad request"), text("I know no Spian."), text("never asked"))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "first"}, user="alice", channel=general)
        failed = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(failed, lambda m: "try it again" in m.content, within=10)
        await wait_idle(fake, bot)
        asked = fake.inject_message(general, "alice", f"<@{bot.user.id}> Capital of Spian?")
        answered = await fake.wait_for_thread(parent=general, name="🔎 Capital of Spian?")
        await fake.wait_for_message(answered, lambda m: m.content == "I know no Spian.", within=15)
        await wait_idle(fake, bot)
        edit_message(fake, asked, f"<@{bot.user.id}> Capital of Spain?")
        offer = await fake.wait_for_message(answered, lambda m: m.content.startswith("✏️ You edited"))
        await run(fake, guild, "config channels", {"action": "add", "channel": guild.channel("lab")})
        retry = next(m for m in fake.messages(failed) if m.components and "try it again" in m.content)
        said = [
            await click(fake, retry, "Retry", user="alice"),
            await click(fake, offer, "Re-run with the edit", user="alice"),
        ]
        await wait_idle(fake, bot)
    lab = guild.channel("lab").id
    for inter in said:
        assert [r["data"]["content"] for r in inter.responses] == [
            f"/research is not enabled in this channel. Try: <#{lab}>"
        ]
    assert len(llm.requests) == 2


async def test_a_failing_page_reader_is_shown_in_the_thread(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, web: FakeWeb, tmp_path: Path
) -> None:
    """READER_MODEL refusing a long page: `agentbot ask` said so, the thread's progress did not (the
    whole page went to the agent's model, at its price, without a word). The reason, with the provider's
    address, stays in the operator's log (reader_failed), as other provider errors do."""

    def respond(body: dict[str, Any]) -> Reply:
        if body["model"] == "reader-model":
            return error(400, "reader overloaded with *nonsense*")
        if not any(m["role"] == "tool" for m in body["messages"]):
            return tool_call("fetch_url", {"url": web.url("/long")})
        return text("Read it myself.")

    llm.responder = respond
    reader = {"READER_MODEL": "reader-model", "FETCH_ALLOW_LOOPBACK": True, "FETCH_MAX_CHARS": 2000}
    async with running_bot(fake, llm, tmp_path, guild, agent_env=reader) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "otters"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content.startswith("Read it myself."), within=20)
        await wait_idle(fake, bot)
    step = next(m.content for m in fake.messages(thread) if "fetch_url" in m.content)
    # One line under the call; the provider's words (and its address) are for the operator's log.
    assert "\n⚠️ the page reader failed (the bot's log says why), so the agent reads the page" in step, step
    assert "nonsense" not in step and llm.base_url.split("/v1")[0] not in step, step


@pytest.mark.parametrize("guild", [FakeGuild.create("Lab", channels=("general", "lab", "random"))])
@pytest.mark.usefixtures("fast_write_window")
async def test_a_deleted_channel_on_the_allowed_list_is_never_offered_to_members(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """An admin limits the bot to #lab and #random; #random is then deleted. /research elsewhere said
    "Try: #lab, #deleted-channel"; with #lab gone too it pointed only at channels that no longer
    exist. Deleted channels are left out, and with none left the member is told to ask an admin."""
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        for name in ("lab", "random"):
            await run(fake, guild, "config channels", {"action": "add", "channel": guild.channel(name)})
        lab = guild.channel("lab").id
        fake.delete_thread(guild.channel("random"))
        first = await answer(
            fake, fake.inject_interaction("research", {"task": "Tides?"}, user="alice", channel=general)
        )
        fake.delete_thread(guild.channel("lab"))
        second = await answer(
            fake, fake.inject_interaction("research", {"task": "Tides?"}, user="alice", channel=general)
        )
        await wait_idle(fake, bot)
    assert flat(first) == f"/research is not enabled in this channel. Try: <#{lab}>", flat(first)
    assert "no longer exist" in flat(second) and "/config channels" in flat(second), flat(second)
    assert fake.threads(parent=general) == [] and llm.requests == []
