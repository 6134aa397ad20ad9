"""Hostile members, pages, attachments, MCP servers and sandboxed code against the product's real entry
points (``agentbot ask`` in a subprocess, the fake Discord, servers on 127.0.0.1), found by the third
black-box security QA. Each test failed before the fix its comment names."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from pathlib import Path

import pytest
from aiohttp import web

import agent.models.http
from agent.attachments import IncomingFile, receive
from agent.config import AgentSettings
from agent.messages import Message, ToolCall
from agent.models.anthropic import AnthropicModel
from agent.models.base import ModelError, ModelSettings, ModelUnavailableError, final_response
from agent.models.http import make_client
from agent.models.openai import OpenAIChatModel
from agent.tools.builtin import calculator
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.python_exec import python_tools
from agent.tools.registry import ToolContext, ToolRefused, ToolRegistry
from agent.tools.sandbox_run import PythonSettings
from bot.config import BotSettings
from bot.doctor import _check, _database
from bot.guild_mcp import GuildMcp
from tests.fakes.dns_server import serving_dns
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.served import served
from tests.test_blackbox_ask_tools import ask_cli


async def test_deeply_nested_tool_arguments_are_an_observation_not_a_crash(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # A prompt-injected model sent calculator("[" * 100_000): json raises RecursionError (not a
    # ValueError), and the run died with a traceback on stderr (exit 1) instead of telling the model.
    llm.script(tool_call("calculator", "[" * 100_000), text("Done."))
    code, out, err = await ask_cli(llm, tmp_path, "add")
    assert (code, out) == (0, "Done.\n"), err[-2000:]
    told = llm.requests[1]["messages"][-1]["content"]
    assert "nested too deeply" in told and "Traceback" not in err


async def test_a_database_password_given_as_a_url_parameter_is_never_shown(tmp_path: Path) -> None:
    # libpq and asyncpg take ``?password=`` in DATABASE_URL; `agentbot doctor` printed it whole:
    # "FAIL database: DATABASE_URL: cannot connect to postgresql://***@.../db?password=S3CRET...".
    url = "postgresql://bob@127.0.0.1:1/agentbot?sslmode=disable&password=S3CRET-pg-0001"
    agent = AgentSettings.model_validate({"DATA_DIR": str(tmp_path)})
    check = await _check(
        "database", lambda: _database(agent, BotSettings.model_validate({"DATABASE_URL": url}))
    )
    assert not check.ok and "S3CRET" not in check.detail, check.detail
    assert "127.0.0.1:1/agentbot?sslmode=disable&password=***" in check.detail  # the rest stays readable


def _pushing_mcp(gets: list[int]) -> web.Application:
    """A streamable-HTTP MCP server with a session whose GET stream pushes 1 MiB of log notifications,
    closes and asks to be reopened at once (``retry: 0``): the SDK reopened it forever."""
    head = {"mcp-session-id": "s1"}
    note = json.dumps(
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x" * 200}}
    )

    async def post(request: web.Request) -> web.Response:
        msg = await request.json()
        rid, method = msg.get("id"), msg.get("method")
        if rid is None:
            return web.Response(status=202, headers=head)
        if method == "initialize":
            info = {"name": "push", "version": "1"}
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": info,
            }
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "echo: " + msg["params"]["arguments"]["text"]}]}
        else:
            result = {
                "tools": [
                    {
                        "name": "echo",
                        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
                    }
                ]
            }
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result}, headers=head)

    async def get(request: web.Request) -> web.StreamResponse:
        gets.append(1)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **head})
        await resp.prepare(request)
        await resp.write(b"retry: 0\n\n" + f"data: {note}\n\n".encode() * 4000)
        return resp

    app = web.Application()
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", get)
    app.router.add_delete("/mcp", lambda _r: web.Response(status=200))
    return app


async def test_an_mcp_server_cannot_keep_the_bot_reading_what_it_pushes() -> None:
    # A /config mcp server answered the SDK's GET (its stream for server-initiated messages) with 1 MiB
    # of notifications, closed it and asked for it again at once: the bot's event loop parsed them
    # without end, between turns too, while its tools worked as if nothing happened.
    gets: list[int] = []
    guild_mcp = GuildMcp(allow_loopback=True)
    async with served(_pushing_mcp(gets)) as base:
        try:
            tools, left_out = await guild_mcp.tools_for(1, {"push": f"{base}/mcp"})
            registry = ToolRegistry(tools)
            call = ToolCall(id="c1", name="push__echo", arguments='{"text": "hi"}')
            out = await registry.execute(call, ToolContext())
        finally:
            await guild_mcp.aclose()
    assert (left_out, out.is_error, out.output) == ({}, False, "echo: hi")
    assert gets == []  # never opened, so nothing pushed is read


async def test_a_gzip_body_of_endless_empty_members_is_refused() -> None:
    # 2 MB of 20-byte empty gzip members (100,000): each member's end copied the rest of its network
    # chunk, so one such page cost 0.6 s of the bot's event loop (30x a normal page), within fetch_url's
    # rate limit many times a minute per server. A few members, as some servers send, still read whole.
    few = b"".join(gzip.compress(f"<p>part {i} of the otter survey</p>".encode()) for i in range(3))
    bodies = {"/few": few, "/endless": gzip.compress(b"") * 100_000}

    async def page(request: web.Request) -> web.Response:
        body = bodies[request.path]
        return web.Response(body=body, content_type="text/html", headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/{name}", page)
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=10))
    async with served(app) as base:
        try:
            read = await fetcher.fetch(f"{base}/few")
            with pytest.raises(ToolRefused, match="more than 1000 gzip members"):
                await fetcher.fetch(f"{base}/endless")
        finally:
            await fetcher.aclose()
    assert all(f"part {i} of the otter survey" in read.text for i in range(3))


async def test_the_calculator_refuses_rounding_to_an_absurd_number_of_digits() -> None:
    # round(5, -10**9) computed 10**(10**9) holding the GIL: a page asking the model for it froze the
    # whole bot (every server) for hours; the tool's 5 s timeout cannot fire while the GIL is held.
    registry = ToolRegistry([calculator])
    for expression, shown in (
        ("round(5, -10**5)", None),
        ("round(1234.5678, 2)", "1234.57"),
        ("round(1500, -3)", "2000"),
    ):
        call = ToolCall(id="c", name="calculator", arguments=json.dumps({"expression": expression}))
        out = await registry.execute(call, ToolContext())
        assert out.output == (shown or '{"error": "round\'s digits are too many (limit 10000)"}'), expression


async def test_sandboxed_code_cannot_read_the_hosts_paths_in_its_supervisors_command_line(
    tmp_path: Path,
) -> None:
    # PID 1 of the sandbox is the supervisor's fork, started with its settings as JSON in argv: the
    # code read /proc/1/cmdline and got the host's workspace path, where .env is and the run's cgroups.
    workspace = tmp_path / "data" / "workspaces" / "s1"
    workspace.mkdir(parents=True)
    registry = ToolRegistry(python_tools(PythonSettings(timeout=10, cpu_seconds=5, memory_mb=256)))
    needles = [str(tmp_path), "/sys/fs/cgroup"]  # the workspace (and hidden paths) and the cgroups
    code = (
        "c = open('/proc/1/cmdline').read()\n"
        "print('PID 1 is the supervisor:', 'Supervisor for one sandboxed Python run' in c)\n"
        f"print('host paths:', [n for n in {needles!r} if n in c])"
    )
    call = ToolCall(id="c", name="run_python", arguments=json.dumps({"code": code}))
    out = await registry.execute(call, ToolContext(session_id="s1", workspace=workspace))
    assert not out.is_error and "PID 1 is the supervisor: True" in out.output, out.output
    assert "host paths: []" in out.output, out.output


async def test_a_model_server_streaming_without_end_is_cut_at_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A provider (or gateway) that streamed an answer without end, ignoring max_tokens, took
    # `agentbot ask` to 1 GB in 18 s; a bot turn may last 15 minutes, so every server went down with it.
    # Also one endless line (no newline at all): the SSE reader buffers a line whole.
    monkeypatch.setattr(
        agent.models.http, "MAX_RESPONSE_BYTES", 2**20, raising=False
    )  # 128 MiB in production
    event = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "blah " * 200}}]}) + "\n\n"
    asked: list[str] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        piece = (event * 50).encode() if request.path.startswith("/events") else b"data: " + b"x" * 50_000
        with contextlib.suppress(ConnectionError, RuntimeError):
            for _ in range(400):  # 20 MB, far past the bound: the client must stop reading first
                await resp.write(piece)
        return resp

    app = web.Application()
    app.router.add_post("/{kind}/v1/chat/completions", chat)
    async with served(app) as base, make_client() as client:
        for kind in ("events", "line"):
            model = OpenAIChatModel(
                "m", base_url=f"{base}/{kind}/v1", api_key="sk-x", client=client, max_attempts=3
            )
            with pytest.raises(
                ModelUnavailableError, match="sent more than 1 MiB in one answer without finishing"
            ):
                await final_response(model, [Message("user", "hi")], ModelSettings(stream=True))
    assert asked == ["/events/v1/chat/completions", "/line/v1/chat/completions"]  # not retried


async def test_one_servers_hanging_fetches_leave_other_servers_room_to_fetch() -> None:
    # Members of one server fetched 20 names whose name server never answers: the guard's 16 lookup
    # threads (and the client's 20 connections, as a host that accepts and never answers does) were all
    # theirs for the whole timeout, so another server's fetch_url waited behind them and timed out; at
    # one server's rate limit it never stopped.
    async with serving_dns({}) as dns:
        fetcher = PageFetcher(
            FetchSettings(timeout=30, extract_workers=1, dns_servers=f"127.0.0.1:{dns.port}")
        )
        registry = ToolRegistry(fetch_tools(fetcher))

        async def fetch(server: str, host: str) -> object:
            call = ToolCall(id="c", name="fetch_url", arguments=json.dumps({"url": f"http://{host}/"}))
            return await registry.execute(call, ToolContext(namespace=server))

        hostile = [asyncio.create_task(fetch("1", f"a{i}.hang.test")) for i in range(20)]
        try:
            await asyncio.sleep(0)  # the hostile lookups are queued first
            other = await asyncio.wait_for(fetch("2", "docs.example.org"), 10)  # theirs still hang
            assert "cannot resolve the host docs.example.org" in other.output
        finally:
            for t in hostile:
                t.cancel()
            await asyncio.gather(*hostile, return_exceptions=True)
            await fetcher.aclose()


async def test_an_attachment_the_cdn_would_compress_is_saved_as_sent(tmp_path: Path) -> None:
    # Attachments are read raw (so the cap counts the bytes kept, and no gzip bomb inflates), but the
    # request still offered gzip: a CDN that compresses text (as Cloudflare does) had its gzip bytes
    # saved as the member's notes.csv, and the model read them as Windows-1252 garbage.
    text = b"month,units\njan,12\nfeb,30\n" * 50
    offered: list[str] = []

    async def cdn(request: web.Request) -> web.Response:
        offered.append(request.headers.get("Accept-Encoding", ""))
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=gzip.compress(text), headers={"Content-Encoding": "gzip"})
        return web.Response(body=text)

    app = web.Application()
    app.router.add_get("/notes.csv", cdn)
    async with served(app) as base, make_client() as client:  # the bot's shared client downloads them
        got = await receive(
            [IncomingFile("notes.csv", f"{base}/notes.csv", len(text))], tmp_path, client, vision=False
        )
    assert got.refused == [] and (tmp_path / "notes.csv").read_bytes() == text, offered


async def test_a_json_page_cannot_grow_past_its_body_when_made_readable() -> None:
    # fetch_url indents JSON for the model: 122 KB nested 900 deep became 55 MB of indentation in the
    # bot's process (+150 MB RSS per call; 4 per server at once); past json's recursion limit the page
    # was refused outright ("could not extract text: RecursionError").
    bodies = {
        "/deep": b"[" * 900 + b"0," * 20_000 + b"0" + b"]" * 900,
        "/deeper": b'{"a":' * 5000 + b"1" + b"}" * 5000,
        "/plain": b'{"otters": [1, 2]}',
    }

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.path], content_type="application/json")

    app = web.Application()
    app.router.add_get("/{name}", page)
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=10))
    async with served(app) as base:
        try:
            deep, deeper, plain = [await fetcher.fetch(f"{base}{path}") for path in bodies]
        finally:
            await fetcher.aclose()
    assert len(deep.text) <= 2 * len(bodies["/deep"]) + 1000 and deep.text.count("0") == 20_001
    assert deeper.text == bodies["/deeper"].decode()  # as sent, rather than refused
    assert plain.text == '{\n "otters": [\n  1,\n  2\n ]\n}'  # small JSON is still indented


async def test_a_gateway_answering_json_nested_past_the_parsers_limit_is_a_model_error() -> None:
    # json raises RecursionError, not ValueError, on "[" * 100_000: a hostile gateway's stream chunk,
    # whole body or error body ended the run with a traceback instead of the model's error.
    deep = '{"choices": ' + "[" * 100_000 + "]" * 100_000 + "}"
    paths: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        paths.append(kind)
        if kind == "error":
            return web.Response(status=400, text=deep, content_type="application/json")
        if kind == "body":
            return web.Response(text=deep, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"data: {deep}\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_post("/{kind}/v1/chat/completions", answer)
    app.router.add_post("/{kind}/v1/messages", answer)
    async with served(app) as base, make_client() as client:
        for kind in ("stream", "body", "error"):
            for model in (
                OpenAIChatModel(
                    "m", base_url=f"{base}/{kind}/v1", api_key="k", client=client, max_attempts=1
                ),
                AnthropicModel(
                    "claude-x", base_url=f"{base}/{kind}", api_key="k", client=client, max_attempts=1
                ),
            ):
                with pytest.raises(ModelError):  # not RecursionError's traceback
                    await final_response(
                        model, [Message("user", "hi")], ModelSettings(stream=kind == "stream")
                    )
    assert len(paths) == 6
