"""Hostile members, pages, attachments, MCP servers, providers and sandboxed code against the product's
real entry points (the fake Discord, ``agentbot ask``, servers on 127.0.0.1), found by the fifth
black-box security QA. Each test failed before the fix its comment names."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

import bot.services
from agent.config import load_agent_settings
from agent.events import Cost, RunResult, ToolResultEvent, Usage
from agent.logs import configure_logging
from agent.messages import Message, ToolCall
from agent.models.base import ModelError, ModelSettings, final_response
from agent.models.gemini import GeminiModel
from agent.models.http import make_client
from agent.models.openai import OpenAIChatModel
from agent.models.prices import default_prices
from agent.models.tokens import MAX_REPORTED_TOKENS
from agent.run_state import Bill
from agent.tools.mcp import McpServer, McpTools
from agent.tools.registry import ToolContext, ToolRegistry
from agent.tools.research import ResearchToolSettings, research_tools
from agent.tools.web_search import SearchSettings
from bot import progress
from bot.config import load_bot_settings
from bot.footer import format_footer
from bot.health import health
from bot.progress import short_observation
from bot.services import build_services
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_calls
from tests.fakes.served import served
from tests.test_blackbox_security_mcp import _OBJ, _json_mcp
from tests.test_e2e_config import run

VIEW_CHANNEL, READ_MESSAGE_HISTORY, USE_APPLICATION_COMMANDS = 1 << 10, 1 << 16, 1 << 31


async def test_an_mcp_resource_link_cannot_write_a_masked_link_in_the_bots_voice() -> None:
    # A /config mcp server answered with a resource link whose URI has no http scheme: pydantic keeps
    # such a URI as sent (only http(s) ones are percent-encoded), so ``x:> [claim](https://…) <x:``
    # reached the step line as ``<x:> [claim](https://evil.example) <x:>`` and the footer's Sources as
    # ``<x:%3E%20[claim](https://evil.example)…>``: Discord renders both as a link in the bot's words.
    planted = "x:> [claim your nitro](https://evil.example) <x:"
    links = [
        {"type": "resource_link", "uri": planted, "name": "r"},
        {"type": "resource_link", "uri": "https://example.org/otters", "name": "ok"},
    ]
    tools = {"tools": [{"name": "links", "inputSchema": _OBJ}]}
    async with (
        served(_json_mcp(lambda: tools, lambda: {"content": links})) as base,
        McpTools([McpServer("ln", url=f"{base}/mcp", connect_timeout=10)]) as mcp,
    ):
        out = await ToolRegistry(mcp.tools()).execute(ToolCall("c", "ln__links", "{}"), ToolContext())
    assert not out.is_error and len(out.sources) == 2, out
    ev = ToolResultEvent(step=1, call_id="c", name="ln__links", output=out.output, sources=out.sources)
    footer = format_footer(RunResult("", "completed", 1, Usage(), Cost(), ["m"], sources=out.sources))
    for shown in (short_observation(ev), footer):
        assert "](https://evil.example)" not in re.sub("`[^`]*`", "", shown), shown  # only as code
        assert "<https://example.org/otters>" in shown, shown  # web addresses stay links


def test_a_pages_own_words_in_the_step_line_are_shown_as_written_not_as_formatting() -> None:
    """A hostile page's text reached the step line raw: bold rendered in the bot's voice, and a masked
    link with an upper-case scheme was missed by the address pattern that blanks links."""
    page = "**FREE NITRO** for members: [claim it](HTTPS://evil.example/grab) <@&1>"
    ev = ToolResultEvent(
        step=1, call_id="c", name="fetch_url", output=page, sources=["https://example.org/page"]
    )
    shown = short_observation(ev)
    assert "evil.example" not in shown and "](h" not in shown.lower(), shown
    assert "\\*\\*FREE NITRO\\*\\*" in shown, shown
    assert shown.endswith("<https://example.org/page>"), shown


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",))


PLANTED = "x** [claim nitro](https://evil.example) <@&1>\n# FREE NITRO\n-# small"


def _formatting_outside_code(text: str) -> list[str]:
    """Masked links, headings and subtext lines that render in ``text`` (code spans and escaped
    brackets show as written)."""
    plain = re.sub("`[^`]*`", "", text)
    return re.findall(r"(?<!\\)\[[^\]]*\]\(https?://[^)]*\)|^#+ .*|^-# small.*", plain, flags=re.M)


async def test_a_hostile_model_provider_or_page_cannot_write_links_or_headings_in_the_bots_lines(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A prompt-injected model called a tool named "x** [claim nitro](https://evil.example)\n# FREE
    # NITRO": the step message showed it as '🔧 **name**', so the masked link, a heading and a subtext
    # line rendered in the bot's own step line under the thread's header.
    # The provider's reported model name (any server between the bot and the model may set it) was
    # the footer's model list as written: the same link and heading in the message that pings the asker.
    # A page answered 503 with the reason phrase "[Verify your account](https://evil.example)": the
    # retry note ("↻ retrying fetch_url …: HTTP 503 <reason> from <host>") showed it as a masked link.
    hits: list[int] = []

    async def page(request: web.Request) -> web.Response:
        hits.append(1)
        if len(hits) == 1:
            return web.Response(status=503, reason="[Verify your account](https://evil.example)")
        return web.Response(text="Otters hold hands while sleeping.")

    app = web.Application()
    app.router.add_get("/otters", page)
    monkeypatch.setenv("FETCH_ALLOW_LOOPBACK", "1")
    general = guild.channel("general")
    async with served(app) as base, running_bot(fake, llm, tmp_path, guild) as bot:
        llm.script(
            tool_calls((PLANTED, "{}"), ("fetch_url", {"url": f"{base}/otters"})),
            Reply(text="Done.", model=PLANTED),
        )
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=20)
        await wait_idle(fake, bot)
        shown = [m.content for m in fake.messages(thread) if m.author.id == bot.user.id]
    assert [_formatting_outside_code(m) for m in shown] == [[]] * len(shown), shown
    step = next(m for m in shown if m.startswith("**Step 1**"))
    assert "HTTP 503 \\[Verify your account](https://evil.example)" in "\n".join(shown)  # as written
    assert "`x** [claim nitro](https://evil.example) <@&1> # FREE NITRO -# small`" in step  # as written
    footer = next(m for m in shown if "tokens" in m)
    assert _formatting_outside_code(footer) == [] and "· gpt-4o-mini ·" in footer, footer  # the name asked
    told = str(llm.requests[1]["messages"][-2:])
    assert "unknown tool" in told and len(hits) == 2  # the model is told, and the retry read the page


@pytest.mark.usefixtures("fast_write_window")
async def test_a_provider_reporting_absurd_usage_cannot_fail_the_turn(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # A server (or a gateway in front of it) reported 10**400 prompt tokens: the cost became inf and
    # the quota ledger's conversion raised OverflowError, so the answer was lost ("something went
    # wrong", a traceback in the log). Counts are bounded where they are read, so the answer stands.
    llm.script(Reply(text="Otters hold hands.", prompt_tokens=10**400, completion_tokens=10**30))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        footer = await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=20)
        await wait_idle(fake, bot)
        shown = [m.content for m in fake.messages(thread) if m.author.id == bot.user.id]
    assert "Otters hold hands." in shown and "inf" not in footer.content, shown
    assert f"{MAX_REPORTED_TOKENS:,} in" in footer.content, footer.content


@pytest.mark.usefixtures("fast_write_window")
async def test_an_answer_larger_than_discord_takes_is_attached_cut_not_lost(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that ignored max_tokens streamed an answer larger than the server's upload limit: the
    # message carrying its preview and the .md file was refused (413) and given up, so the member saw
    # "✅ done" and a footer, and no answer at all. The file is now cut to a size Discord takes.
    monkeypatch.setattr(progress, "ANSWER_FILE_BYTES", 512 * 1024, raising=False)  # 8 MiB in production
    fake.state.attachment_size_limit = 1024 * 1024  # 10 MiB on Discord
    llm.script(Reply(text="Otters hold hands. " * 80_000, fragment=400_000))  # 1.4 MiB
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=20)
        await wait_idle(fake, bot)
        answer = next(m for m in fake.messages(thread) if m.attachments)
    assert answer.content.startswith("Otters hold hands.") and "cut at 512 KB of 1.4 MB" in answer.content
    (file,) = answer.attachments
    assert file.filename == "answer.md" and len(file.data) == 512 * 1024, file


async def test_a_search_service_cannot_inflate_a_bomb_in_ask_or_library_use() -> None:
    # `agentbot ask` (and any library user who shares no client) searched with a plain httpx client,
    # whose decoder inflates each network chunk whole: a SearxNG instance (a public one is anyone's
    # server) answering 270 bytes of "Content-Encoding: gzip, gzip, gzip" took the process to 2.1 GB
    # before the 4 MiB answer cap could look. The bot's shared client refused it; now both do.
    from tests.fakes.web_server import gzip_bomb
    from tests.test_fetch_security import MB, _peak_growth, _reset_peak

    bomb = gzip_bomb(512, 3)

    asked: list[int] = []

    async def search(_request: web.Request) -> web.Response:
        asked.append(1)
        headers = {"Content-Encoding": "gzip, gzip, gzip", "Content-Type": "application/json"}
        return web.Response(body=bomb, headers=headers)

    app = web.Application()
    app.router.add_get("/search", search)
    async with served(app) as base:
        settings = ResearchToolSettings(search=SearchSettings(backend="searxng", searxng_url=base))
        tools = [t for t in research_tools(settings) if t.name == "web_search"]
        call = ToolCall("c", "web_search", json.dumps({"query": "otters"}))
        baseline = _reset_peak()
        out = await ToolRegistry(tools).execute(call, ToolContext())  # no shared client, as in ask
        growth = _peak_growth(baseline)
    assert out.is_error and "stacked encodings" in out.output, out.output
    assert len(asked) == 1  # refused, not asked again twice (each after a wait) for the same bomb
    assert growth < 50 * MB, f"the process grew by {growth / MB:.0f} MB"


@pytest.mark.usefixtures("fast_write_window")
async def test_editing_a_message_over_and_over_keeps_one_re_run_offer(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # Each edit of a message that asked a finished turn posted a new "✏️ You edited your message…"
    # offer with a button: edits are not held back by slowmode, quotas or the follow-up cap, so a member
    # editing in a loop had the bot post without end in the thread (12 edits, 12 offers, one per write
    # of the thread's window). One offer now follows the latest edit, and re-runs that.
    llm.script(text("Paris."))
    me, general = fake.bot_user, guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        ask = fake.inject_message(general, "alice", f"<@{me.id}> Capital of France?", mentions=[me])
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        for i in range(12):
            edit_message(fake, ask, f"<@{me.id}> Capital of Italy? ({i})")
        last = "“Capital of Italy? (11)”"
        await fake.wait_for_message(thread, lambda m: last in m.content, within=15)
        await wait_idle(fake, bot)
        offers = [m.content for m in fake.messages(thread) if m.content.startswith("✏️ You edited")]
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None
        (turn,) = await bot.services.sessions.turns(session.id)
    assert len(offers) == 1 and last in offers[0], offers
    assert turn.edited_prompt == "Capital of Italy? (11)"  # what its button re-runs


def test_an_interaction_token_never_reaches_a_debug_log() -> None:
    # At LOG_LEVEL=DEBUG discord.py logged every interaction answer as "Webhook ID … with POST
    # https://discord.com/api/v10/interactions/<id>/<token>/callback has returned …": an interaction
    # (or webhook) token lets whoever reads the log post as the bot in that channel for 15 minutes,
    # mentions allowed. The token part of such an address is redacted like any secret.
    token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpzZWNyZXRzZWNyZXRzZWNyZXQ"
    logged = io.StringIO()
    configure_logging("DEBUG", "json", stream=logged)
    api = "https://discord.com/api/v10"
    webhooks = logging.getLogger("discord.webhook.async_")
    fmt = "Webhook ID %s with %s %s has returned status code %s"
    webhooks.debug(fmt, 1, "POST", f"{api}/interactions/1234567890/{token}/callback?with_response=1", 200)
    webhooks.debug(fmt, 1, "PATCH", f"{api}/webhooks/1234567890/{token}/messages/@original", 200)
    lines = logged.getvalue().splitlines()
    assert len(lines) == 2 and token not in logged.getvalue(), lines
    assert (
        "/interactions/1234567890/***/callback" in lines[0]
        and "/webhooks/1234567890/***/messages" in lines[1]
    )


async def test_a_chroma_server_echoing_its_token_cannot_put_it_in_logs_or_the_health_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Chroma server (or the proxy in front of it) that refused the bot said what it got, as some do:
    # "invalid credentials Bearer <CHROMA_TOKEN>". That text became the memory's start-up error, logged
    # as it was (CHROMA_TOKEN was no registered secret) and served by GET /healthz to whoever reaches it.
    token = "ctok-SECRET-0b9f27c1"

    async def refuse(request: web.Request) -> web.Response:
        said = f"invalid credentials {request.headers.get('Authorization')}"
        return web.json_response({"error": "Unauthorized", "message": said}, status=401)

    async def embed(request: web.Request) -> web.Response:  # a remote embedding: no model to load here
        texts = (await request.json())["input"]
        return web.json_response({"data": [{"index": i, "embedding": [1.0, 0.5]} for i in range(len(texts))]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embed)
    app.router.add_route("*", "/{path:.*}", refuse)
    async with served(app) as base:
        port = base.rsplit(":", 1)[1]
        chroma = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": port, "CHROMA_TOKEN": token}
        chroma |= {"MEMORY_EMBEDDING": "openai", "MEMORY_EMBEDDING_URL": f"{base}/v1"}
        chroma |= {"MEMORY_EMBEDDING_MODEL": "e"}
        agent = load_agent_settings(
            DATA_DIR=str(tmp_path), PYTHON_SANDBOX="off", ROUTER_CLASSIFIER="heuristic", **chroma
        )
        with capture_logs() as logs:
            monkeypatch.setattr(bot.services, "log", structlog.get_logger("bot.services"))
            sv = await build_services(agent, load_bot_settings(MEMORY_ENABLED=True), serving=False)
    try:
        _, report = await health(True, sv, SimpleNamespace(running=lambda: 0))  # type: ignore[arg-type]
    finally:
        await sv.close()
    assert "401" in str(sv.memory_error) or "Unauthorized" in str(sv.memory_error), sv.memory_error
    shown = [str(logs), str(report), str(sv.memory_error)]
    assert [token in s for s in shown] == [False, False, False], shown


@pytest.mark.usefixtures("fast_write_window")
async def test_a_member_who_cannot_post_in_a_channel_cannot_post_there_through_research(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # /research checked the bot's permissions in the channel, never the member's: a member who may read
    # #announcements but not post there (or one an admin muted by taking Send Messages) had the bot
    # open a thread in it, quoting whatever they wrote in its header, and the agent's answer below.
    llm.script(Reply(text="Anything at all."))
    general = guild.channel("general")
    reader = VIEW_CHANNEL | READ_MESSAGE_HISTORY | USE_APPLICATION_COMMANDS  # no Send Messages
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        reply = (
            await run(fake, guild, "research", {"task": "FREE NITRO"}, user="alice", permissions=reader)
        ).content
        await wait_idle(fake, bot)
    assert "you can't post in this channel" in reply and "**Send Messages**" in reply, reply
    assert fake.calls("POST", f"/channels/{general.id}/threads") == [] and llm.requests == []


async def test_a_stream_with_tool_call_indexes_of_mixed_types_is_read_not_a_crash() -> None:
    # A gateway sent one streamed tool call at index "a" (or null) and the next at index 0: ordering the
    # calls compared a str with an int, and the TypeError ended the run with a traceback ("something
    # went wrong" in the thread) instead of running the calls.
    def chunk(idx: object, call_id: str) -> bytes:
        call = {"index": idx, "id": call_id, "type": "function"}
        call["function"] = {"name": "calculator", "arguments": '{"expression": "1+1"}'}
        return ("data: " + json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})).encode()

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        for piece in (chunk("a", "c1"), chunk(None, "c2"), chunk(0, "c3")):
            await resp.write(piece + b"\n\n")
        await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app) as base, make_client() as client:
        model = OpenAIChatModel("m", base_url=f"{base}/v1", api_key="k", client=client, max_attempts=1)
        reply = await final_response(model, [Message("user", "hi")], ModelSettings(stream=True))
    assert sorted(c.id for c in reply.message.tool_calls) == ["c1", "c2", "c3"]


async def test_stream_chunks_of_another_shape_are_a_model_error_not_a_crash() -> None:
    # The OpenAI-compatible stream read each chunk as the expected shape: a gateway's {"choices": "x"},
    # [1], a tool call that is a number, or a name that is a number ended the run with AttributeError
    # or TypeError (a traceback; "something went wrong" in the thread). The same shapes in a whole JSON
    # body were already a model error. A reported model name that is a list was kept as the model's name.
    shapes = [
        {"choices": "x"},
        [1, 2],
        {"choices": [{"delta": {"tool_calls": [1]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": 5}}]}}]},
        {"error": "down", "choices": {"a": 1}},
    ]
    sent: list[object] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"data: {json.dumps(shapes[len(sent)])}\n\n".encode())
        sent.append(1)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app) as base, make_client() as client:
        model = OpenAIChatModel("m", base_url=f"{base}/v1", api_key="k", client=client, max_attempts=1)
        for _ in shapes:
            with pytest.raises(ModelError):
                await final_response(model, [Message("user", "hi")], ModelSettings(stream=True))
    assert len(sent) == len(shapes)
    # Gemini's stream: a functionCall named with a number failed later, when the reply was counted.
    call = {"functionCall": {"name": 5, "args": {}}}
    gemini_chunk = {"candidates": [{"content": {"parts": [call]}, "finishReason": "STOP"}]}

    async def gemini(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"data: {json.dumps(gemini_chunk)}\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_post("/{path:.*}", gemini)
    async with served(app) as base, make_client() as client:
        model = GeminiModel("gemini-2.0-flash", base_url=base, api_key="k", client=client, max_attempts=1)
        with pytest.raises(ModelError):
            await final_response(model, [Message("user", "hi")], ModelSettings(stream=True))
    bill = Bill("m")
    bill.charge(default_prices(), ["not", "a", "name"], Usage(), "m")  # type: ignore[arg-type]
    assert bill.model == "m"
