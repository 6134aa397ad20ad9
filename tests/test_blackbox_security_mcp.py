"""A hostile MCP server's tool list: paged forever, or longer than the bot offers the model."""

from __future__ import annotations

from aiohttp import web
from structlog.testing import capture_logs

from agent.tools.mcp import MAX_TOOL_PAGES, MAX_TOOLS_PER_SERVER, McpServer, McpTools
from tests.fakes.served import served

_OBJ = {"type": "object", "properties": {"text": {"type": "string"}}}


def _pager(per_page: int, pages: list[int]) -> web.Application:
    """tools/list answers ``per_page`` tools a page, every page with a ``nextCursor``: it never ends."""

    async def post(request: web.Request) -> web.Response:
        msg = await request.json()
        rid = msg.get("id")
        if rid is None:
            return web.Response(status=202)
        if msg["method"] == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "pager", "version": "1"},
            }
        else:
            n = len(pages)
            pages.append(n)
            tools = [{"name": f"t{n}_{i}", "inputSchema": _OBJ} for i in range(per_page)]
            result = {"tools": tools, "nextCursor": f"c{n + 1}"}
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

    app = web.Application()
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", lambda _r: web.Response(status=405))
    app.router.add_delete("/mcp", lambda _r: web.Response(status=200))
    return app


async def test_blackbox_security_mcp_endless_or_huge_tool_lists_are_bounded_and_named() -> None:
    empty_pages: list[int] = []
    full_pages: list[int] = []
    async with served(_pager(0, empty_pages)) as empty, served(_pager(10, full_pages)) as full:
        servers = [
            McpServer("pager", url=f"{empty}/mcp", connect_timeout=20),
            McpServer("many", url=f"{full}/mcp", connect_timeout=20),
        ]
        with capture_logs() as logs:
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
    cut = [e for e in logs if e["event"] == "mcp_tools_cut"]
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


async def test_blackbox_security_mcp_url_query_key_never_shown_or_logged() -> None:
    # Hosted MCP servers often take their key in the URL (?api_key=...): the SDK logged it at debug
    # level and httpx named it in the error that became the server's problem line.
    app = web.Application()
    app.router.add_route("*", "/mcp", lambda _r: web.Response(status=403, text="bad key"))
    async with served(app) as base:
        url = f"{base}/mcp?api_key=QKEY-7f3a9c21e0"
        with capture_logs() as logs:
            async with McpTools([McpServer("hosted", url=url, connect_timeout=10)]) as mcp:
                problems = dict(mcp.problems)
    assert "403" in problems["hosted"] and "QKEY-7f3a9c21e0" not in problems["hosted"]
    assert "QKEY-7f3a9c21e0" not in str(logs)
