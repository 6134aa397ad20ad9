"""`agentbot ask`'s research tools against what a hostile server answers: keys echoed back in a tool's
result never reach the model or the terminal (both read the same tool outcome)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.messages import ToolCall
from agent.tools.mcp import McpServer, McpTools
from agent.tools.registry import ToolContext, ToolRegistry
from tests.fakes.served import served

_OBJ = {"type": "object", "properties": {}}


def _echoing_mcp() -> web.Application:
    """A streamable-HTTP MCP server whose tools answer with the headers it was sent, as a server saying
    "invalid token <what you sent>" does: ``echo`` as a result, ``fail`` as an error result."""

    async def post(request: web.Request) -> web.Response:
        msg = await request.json()
        rid = msg.get("id")
        if rid is None:
            return web.Response(status=202)
        result: dict[str, Any]
        if msg["method"] == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "echo", "version": "1"},
            }
        elif msg["method"] == "tools/call":
            h = request.headers
            said = (
                f"invalid token {h.get('Authorization', '').split()[-1]}; "
                f"key {h.get('X-Api-Key')}; client {h.get('X-Client')}; query {request.query_string}"
            )
            failed = msg["params"]["name"] == "fail"
            result = {"content": [{"type": "text", "text": said}], "isError": failed}
        else:
            result = {"tools": [{"name": n, "inputSchema": _OBJ} for n in ("echo", "fail")]}
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

    app = web.Application()
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", lambda _r: web.Response(status=405))
    app.router.add_delete("/mcp", lambda _r: web.Response(status=200))
    return app


async def test_an_mcp_server_echoing_its_key_shows_the_model_and_terminal_no_key() -> None:
    # Before: the answer "invalid token ghp_..." went to the model (and the terminal's result line)
    # whole: neither the headers' keys nor the URL's ?api_key= (registered, but only for logs) were masked.
    async with served(_echoing_mcp()) as base:
        server = McpServer(
            "echo",
            url=f"{base}/mcp?api_key=QRYKEY-5d1e77a0",
            headers={
                "Authorization": "Bearer ghp_ECHOTOKEN4f2a91c7",
                "X-Api-Key": "XKEY-0b9e33d1c2",
                "X-Client": "research-agent-7",
            },
            connect_timeout=10,
        )
        async with McpTools([server]) as mcp:
            tools = ToolRegistry(mcp.tools())
            ok = await tools.execute(ToolCall("a", "echo__echo", "{}"), ToolContext())
            bad = await tools.execute(ToolCall("b", "echo__fail", "{}"), ToolContext())
    for out in (ok, bad):
        seen = out.output + (out.full_text or "")
        for key in ("ghp_ECHOTOKEN4f2a91c7", "XKEY-0b9e33d1c2", "QRYKEY-5d1e77a0"):
            assert key not in seen, seen
        # What is not a secret still reads as the server wrote it.
        assert "invalid token ***" in seen and "client research-agent-7" in seen, seen
    assert not ok.is_error and bad.is_error
