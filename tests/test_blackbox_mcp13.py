"""MCP servers as operators and admins meet them when something is wrong at connect: the reason a server
is left out (``ask`` prints it, a thread says it) must name what to fix, and come at once when the
server has already said it. One small HTTP server (its answer set per test) serves the HTTP cases."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.tools.mcp import McpServer, McpTools
from tests.fakes.served import served

SLOW = 60.0
"""A connect timeout no test waits out when the fix holds: before it, the case waited all of it."""


class _Answers:
    """A streamable-HTTP endpoint that answers every POST the way ``mode`` says."""

    def __init__(self) -> None:
        self.mode = "html"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        if self.mode == "html":  # a web page (a login page, a docs site) where the endpoint was expected
            return web.Response(text="<html><body>Welcome</body></html>", content_type="text/html")
        if self.mode == "404":  # a wrong path: /sse for /mcp, or the path left out
            return web.Response(status=404, text="Not Found")
        if self.mode == "401":
            challenge = 'Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge}, text="unauthorized")
        raise AssertionError(self.mode)


@pytest.fixture
async def http_mcp() -> AsyncIterator[tuple[_Answers, str]]:
    answers = _Answers()
    app = web.Application()
    app.router.add_post("/mcp", answers.handle)
    async with served(app) as base:
        yield answers, f"{base}/mcp"


async def _left_out(server: McpServer) -> str:
    async with McpTools([server]) as mcp:
        assert mcp.tools() == []
        return mcp.problems[server.name]


async def test_a_web_page_at_the_url_is_named_at_once_not_waited_out(http_mcp: tuple[_Answers, str]) -> None:
    """An HTTP server answering ``initialize`` with a web page: the server was left out as "no answer
    within 60 s", after all 60 s (the SDK drops an answer it cannot read; the handshake waited on)."""
    answers, url = http_mcp
    answers.mode = "html"
    why = await _left_out(McpServer("docs", url=url, connect_timeout=SLOW))
    assert "text/html" in why and "MCP endpoint" in why and "no answer" not in why, why


async def test_a_url_with_no_endpoint_says_404_not_session_terminated(http_mcp: tuple[_Answers, str]) -> None:
    """A wrong path answered 404 at ``initialize``: the reason was "McpError: Session terminated", which
    sends an admin looking for a session problem in a server that was never reached."""
    answers, url = http_mcp
    answers.mode = "404"
    why = await _left_out(McpServer("wrong", url=url, connect_timeout=SLOW))
    assert "404" in why and "MCP endpoint" in why and "Session terminated" not in why, why


async def test_a_server_wanting_credentials_says_what_it_wants_and_where_they_go(
    http_mcp: tuple[_Answers, str],
) -> None:
    """401 with ``WWW-Authenticate: Bearer``: the reason was httpx's "Client error '401 Unauthorized'
    for url '...'" and a link to MDN; now the scheme the server asks for and the file's ``headers``."""
    answers, url = http_mcp
    answers.mode = "401"
    why = await _left_out(McpServer("locked", url=url, connect_timeout=SLOW))
    assert "401" in why and "Bearer" in why and "headers" in why and "developer.mozilla" not in why, why


STARTS_WRONG = "print('Listening on http://0.0.0.0:8000', flush=True)\nimport time\ntime.sleep(600)\n"
"""Not a stdio MCP server (an HTTP one, or one that needs a ``--stdio`` flag): it says so on stdout."""
DIES_SAYING = "print('Error: GITHUB_TOKEN is not set', flush=True)\nraise SystemExit(1)\n"
"""A server that writes its fatal error to stdout (many do: console.log) and exits."""


@pytest.mark.parametrize(
    ("script", "said", "before"),
    [
        (STARTS_WRONG, "Listening on http://0.0.0.0:8000", "no answer within 3 s"),
        (DIES_SAYING, "Error: GITHUB_TOKEN is not set", "McpError: Connection closed"),
    ],
    ids=["listening-and-silent", "printed-and-exited"],
)
async def test_a_stdio_server_printing_on_stdout_is_left_out_naming_what_it_printed(
    script: str, said: str, before: str
) -> None:
    """What a stdio server writes on stdout that is not a protocol message was dropped without a trace:
    the reason was "no answer within 3 s" or "Connection closed", though the server had said why."""
    server = McpServer("cli", command=sys.executable, args=("-c", script), connect_timeout=3)
    why = await _left_out(server)
    assert said in why and "stdout" in why, why
    assert why.startswith(before), why


async def test_an_operator_server_down_at_start_up_joins_a_later_turn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``agentbot run`` builds its tools once: an MCP_SERVERS_FILE server that was down then (a sidecar
    started after the bot) stayed left out of every turn until the bot restarted; nothing tried it again.
    A stdio server whose command failed is not started again behind every turn."""
    from agent.tools.registry import ToolRegistry
    from bot.assembly import with_late_tools
    from tests.fakes.mcp_server import HttpMcpServer
    from tests.test_mcp_tools import call, closed_port

    monkeypatch.setattr("agent.tools.mcp.RECONNECT_EVERY", 0.0)  # each turn may try it again
    port = closed_port()
    starts = tmp_path / "starts"
    broken = McpServer("broken", command="sh", args=("-c", f"echo start >> {starts}; exit 1"))
    late_http = McpServer("late", url=f"http://127.0.0.1:{port}/mcp", connect_timeout=10)
    async with McpTools([late_http, broken]) as mcp:
        assert mcp.tools() == [] and {"late", "broken"} <= set(mcp.problems)
        assert mcp.late_tools() == []  # a turn while it is still down: tried again behind it
        assert mcp.retrying is not None
        await mcp.retrying
        with HttpMcpServer(port=port):
            assert mcp.late_tools() == []  # the turn that starts the try does not wait for it
            await mcp.retrying
            late = mcp.late_tools()
            assert "late__add" in [t.name for t in late]
            turn = with_late_tools(ToolRegistry([]), late, None)
            assert await call(turn, "late__add", {"a": 2, "b": 3}) == ("5", False)
        assert starts.read_text().count("start") == 1, "the broken stdio server was started again"


async def test_a_servers_mcp_server_that_never_answers_does_not_hold_its_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `/config mcp` server left out (down), then accepting connections and never answering: each
    turn that tried it again (one every 30 s) waited the whole connect timeout before its first step,
    and so did every turn of the server queued behind it. The try now goes on behind the turn."""
    import asyncio

    import bot.guild_mcp
    from bot.guild_mcp import GuildMcp

    monkeypatch.setattr(bot.guild_mcp, "RETRY_EVERY", 0.0)  # 30 s in production
    monkeypatch.setattr(bot.guild_mcp, "RETRY_WAIT", 0.0)  # a turn does not wait for the try at all
    held: list[web.Request] = []
    arrived, release = asyncio.Event(), asyncio.Event()
    mode = ["down"]

    async def handle(request: web.Request) -> web.StreamResponse:
        if mode[0] == "down":
            return web.Response(status=503, text="starting")
        held.append(request)
        arrived.set()
        await release.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/mcp", handle)
    guilds = GuildMcp(allow_loopback=True, connect_timeout=SLOW)
    async with served(app) as base:
        try:
            tools, left_out = await guilds.tools_for(1, {"hang": f"{base}/mcp"})
            assert tools == [] and "hang" in left_out, left_out
            mode[0] = "hang"
            tools, left_out = await guilds.tools_for(1, {"hang": f"{base}/mcp"})  # the next turn
            assert (tools, left_out) == ([], {})
            await arrived.wait()
            transport = held[0].transport  # None or closing: the try ended (timed out) inside the turn
            assert transport is not None and not transport.is_closing(), "the turn waited out the try"
        finally:
            release.set()
            await guilds.aclose()


RESOURCES_ONLY = """
import anyio
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

server = Server("docs")


@server.list_resources()
async def resources() -> list[types.Resource]:
    return []


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


anyio.run(main)
"""


async def test_a_server_with_no_tools_says_so_not_method_not_found() -> None:
    """A resources-only server (docs, files) in the operator's file: left out as "McpError: Method not
    found", which reads as a broken server or a protocol mismatch rather than one with nothing to offer."""
    why = await _left_out(
        McpServer("docs", command=sys.executable, args=("-c", RESOURCES_ONLY), connect_timeout=30)
    )
    assert "offers no tools" in why, why


CRASHES_ONCE = """
import os
import sys
from pathlib import Path

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("idx")
mark = Path(sys.argv[1])


@mcp.tool()
def search(q: str) -> str:
    \"\"\"Search the index.\"\"\"
    if not mark.exists():
        mark.write_text("crashed")
        print("Fatal: out of memory reading the index", file=sys.stderr, flush=True)
        os._exit(3)
    return f"3 hits for {q}"


mcp.run("stdio")
"""


async def test_a_stdio_server_that_crashed_mid_call_is_started_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A stdio server that exited during a call (a crash, the OOM killer): that call said "McpError:
    Connection closed" and every later one "ClosedResourceError", for the life of the bot; the session
    was never seen to be dead, so it was never started again. The crash now says the server's last
    stderr line and the next call starts it again (at most every 30 s)."""
    from agent.tools.registry import ToolRegistry
    from tests.test_mcp_tools import call

    monkeypatch.setattr("agent.tools.mcp.RECONNECT_EVERY", 0.0)  # 30 s in production
    server = McpServer(
        "idx",
        command=sys.executable,
        args=("-c", CRASHES_ONCE, str(tmp_path / "crashed")),
        connect_timeout=30,
    )
    async with McpTools([server]) as mcp:
        tools = ToolRegistry(mcp.tools())
        crashed, failed = await call(tools, "idx__search", {"q": "otters"})
        assert failed and "out of memory reading the index" in crashed, crashed
        assert await call(tools, "idx__search", {"q": "otters"}) == ("3 hits for otters", False)


EITHER_ID_OR_PATH = """
import anyio
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

server = Server("ci")
SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "full_path": {"type": "string"}},
    "anyOf": [{"required": ["id"]}, {"required": ["full_path"]}],
}


@server.list_tools()
async def tools() -> list[types.Tool]:
    return [types.Tool(name="resource", description="A CI catalog resource.", inputSchema=SCHEMA)]


@server.call_tool()
async def call(name: str, arguments: dict) -> list[types.TextContent]:
    return [types.TextContent(type="text", text=f"resource {arguments}")]


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


anyio.run(main)
"""


async def test_a_tool_schema_with_a_top_level_anyof_is_offered_in_a_form_providers_accept() -> None:
    """zod's unions and pydantic's model validators publish ``anyOf``/``oneOf``/``allOf`` at the top of a
    tool's input schema; Anthropic answers every request offering such a tool 400 ("input_schema does not
    support oneOf, allOf, or anyOf at the top level"): one such tool failed every run of the bot. The
    model now sees the schema without them; the bot still checks arguments against all of it."""
    from agent.tools.registry import ToolRegistry
    from tests.test_mcp_tools import call

    server = McpServer("ci", command=sys.executable, args=("-c", EITHER_ID_OR_PATH), connect_timeout=30)
    async with McpTools([server]) as mcp:
        tools = ToolRegistry(mcp.tools())
        (offered,) = tools.specs()
        assert offered["name"] == "ci__resource" and offered["parameters"]["type"] == "object", offered
        assert not {"anyOf", "oneOf", "allOf"} & set(offered["parameters"]), offered
        refused, failed = await call(tools, "ci__resource", {})
        assert failed and "invalid arguments for ci__resource" in refused, refused
        assert await call(tools, "ci__resource", {"id": "7"}) == ("resource {'id': '7'}", False)
