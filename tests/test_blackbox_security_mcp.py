"""A hostile MCP server's tool list: paged forever, or longer than the bot offers the model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

import agent.tools.mcp
from agent.messages import ToolCall
from agent.tools.mcp import MAX_TOOL_PAGES, MAX_TOOLS_PER_SERVER, McpServer, McpTools
from agent.tools.registry import MAX_SOURCES, ToolContext, ToolRegistry
from tests.fakes.served import served

_OBJ = {"type": "object", "properties": {"text": {"type": "string"}}}


def _json_mcp(
    list_tools: Callable[[], dict[str, Any]], call: Callable[[], dict[str, Any]] | None = None
) -> web.Application:
    """A streamable-HTTP MCP server answering plain JSON: ``list_tools`` makes each tools/list result."""

    async def post(request: web.Request) -> web.Response:
        msg = await request.json()
        rid = msg.get("id")
        if rid is None:
            return web.Response(status=202)
        if msg["method"] == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile", "version": "1"},
            }
        elif msg["method"] == "tools/call" and call is not None:
            result = call()
        else:
            result = list_tools()
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

    app = web.Application()
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", lambda _r: web.Response(status=405))
    app.router.add_delete("/mcp", lambda _r: web.Response(status=200))
    return app


@pytest.fixture
def mcp_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What agent.tools.mcp logs. Through a fresh logger: the module's own, once bound by an earlier test
    in this worker, keeps that test's processors and would log past the capture."""
    with capture_logs() as logs:
        monkeypatch.setattr(agent.tools.mcp, "log", structlog.get_logger("agent.tools.mcp"))
        yield logs


def _pager(per_page: int, pages: list[int]) -> web.Application:
    """tools/list answers ``per_page`` tools a page, every page with a ``nextCursor``: it never ends."""

    def page() -> dict[str, Any]:
        n = len(pages)
        pages.append(n)
        tools = [{"name": f"t{n}_{i}", "inputSchema": _OBJ} for i in range(per_page)]
        return {"tools": tools, "nextCursor": f"c{n + 1}"}

    return _json_mcp(page)


async def test_blackbox_security_mcp_endless_or_huge_tool_lists_are_bounded_and_named(
    mcp_logs: list[dict[str, Any]],
) -> None:
    empty_pages: list[int] = []
    full_pages: list[int] = []
    async with served(_pager(0, empty_pages)) as empty, served(_pager(10, full_pages)) as full:
        servers = [
            McpServer("pager", url=f"{empty}/mcp", connect_timeout=20),
            McpServer("many", url=f"{full}/mcp", connect_timeout=20),
        ]
        async with McpTools(servers) as mcp:
            problems, names = dict(mcp.problems), [t.name for t in mcp.tools()]
    # The endless one is left out with a reason that says so, after a bounded number of pages.
    assert list(problems) == ["pager"]
    assert (
        problems["pager"] == f"its tool list never ended (still more after {MAX_TOOL_PAGES} pages, 0 tools)"
    )
    assert len(empty_pages) == MAX_TOOL_PAGES
    # The long one is cut at the tool cap, read no further, and the cut is one line naming the server.
    assert len(names) == MAX_TOOLS_PER_SERVER and all(n.startswith("many__") for n in names)
    assert len(full_pages) == -(-MAX_TOOLS_PER_SERVER // 10)
    cut = [e for e in mcp_logs if e["event"] == "mcp_tools_cut"]
    assert [e["server"] for e in cut] == ["many"] and "MCP server many lists more than" in cut[0]["reason"]


async def test_blackbox_security_mcp_url_password_never_shown_in_why_a_server_is_left_out() -> None:
    # `agentbot ask` printed "MCP server sec is left out: ... for url 'http://bob:HUNTER2PASS@...'"
    # (the logs were redacted, the line in the terminal and a /config mcp server's problem were not).
    app = web.Application()
    app.router.add_route("*", "/mcp", lambda _r: web.Response(status=401, text="who are you"))
    async with served(app) as base:
        url = base.replace("http://", "http://bob:HUNTER2PASS@") + "/mcp"
        async with McpTools([McpServer("sec", url=url, connect_timeout=10)]) as mcp:
            problems = dict(mcp.problems)
    assert "401" in problems["sec"]
    assert "HUNTER2PASS" not in problems["sec"] and "***@127.0.0.1" in problems["sec"]


async def test_blackbox_security_mcp_url_query_key_never_shown_or_logged(
    mcp_logs: list[dict[str, Any]],
) -> None:
    # Hosted MCP servers often take their key in the URL (?api_key=...): the SDK logged it at debug
    # level and httpx named it in the error that became the server's problem line.
    app = web.Application()
    app.router.add_route("*", "/mcp", lambda _r: web.Response(status=403, text="bad key"))
    async with served(app) as base:
        url = f"{base}/mcp?api_key=QKEY-7f3a9c21e0"
        async with McpTools([McpServer("hosted", url=url, connect_timeout=10)]) as mcp:
            problems = dict(mcp.problems)
    assert "403" in problems["hosted"] and "QKEY-7f3a9c21e0" not in problems["hosted"]
    assert mcp_logs and "QKEY-7f3a9c21e0" not in str(mcp_logs)  # logged, and never the key


async def test_blackbox_security_mcp_answer_with_a_flood_of_links_cites_a_bounded_few() -> None:
    # Every resource link of an answer became a source of the run, de-duplicated one by one against all
    # before them: 20,000 took 4.4 s of the event loop, and an 8 MB answer held 130,000.
    links = [
        {"type": "resource_link", "uri": f"https://example.org/r/{i}", "name": f"r{i}"} for i in range(2_000)
    ]
    tools = {"tools": [{"name": "links", "inputSchema": _OBJ}]}
    async with served(_json_mcp(lambda: tools, lambda: {"content": links})) as base:
        server = McpServer("ln", url=f"{base}/mcp", connect_timeout=10, max_output=2000)
        async with McpTools([server]) as mcp:
            out = await ToolRegistry(mcp.tools()).execute(ToolCall("c", "ln__links", "{}"), ToolContext())
    assert not out.is_error and out.truncated  # the text is cut at the tool's output cap as before
    assert out.sources == [f"https://example.org/r/{i}" for i in range(MAX_SOURCES)]


async def test_blackbox_security_mcp_answer_over_2_mib_is_refused_not_parsed_on_the_event_loop() -> None:
    # The SDK parses an answer on the bot's event loop: 8 MiB of links held every server's runs 1.6 s.
    tools = {"tools": [{"name": "big", "inputSchema": _OBJ}]}
    big = {"content": [{"type": "text", "text": "x" * (2 * 2**20 + 1000)}]}
    async with served(_json_mcp(lambda: tools, lambda: big)) as base:
        mcp = McpTools([McpServer("bg", url=f"{base}/mcp", connect_timeout=10)])
        async with mcp:
            out = await ToolRegistry(mcp.tools()).execute(ToolCall("c", "bg__big", "{}"), ToolContext())
    assert out.is_error and "passed the 2 MiB limit" in out.output, out.output[:300]
