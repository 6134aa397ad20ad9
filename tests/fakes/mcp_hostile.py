"""A broken or hostile MCP server (the SDK's low-level server over stdio), for the black-box tool tests.

``python -m tests.fakes.mcp_hostile`` lists tools whose names collide once namespaced (the same name
twice, and ``_x`` beside a server named with a trailing ``_``), a tool that dies mid-call, one whose
schema holds catastrophic regexes, one whose schema refers to a URL, and a plain ``echo`` that works,
so a test can check that what is broken never takes down what is not. :class:`FloodingHttpMcp` is a
streamable-HTTP one.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING

import anyio
from aiohttp import web

from tests.fakes.served import served

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server

_OBJ = {"type": "object", "properties": {"text": {"type": "string"}}}
_REDOS = {
    "type": "object",
    "properties": {"text": {"type": "string", "pattern": "^(a+)+$"}},
    "patternProperties": {"^(b+)+$": {"type": "string"}},
    "additionalProperties": False,
}
"""Backtracking regexes: 30 a's and a '!' take minutes to reject, wherever they are checked."""


def _remote_ref() -> dict[str, object]:
    """A schema whose argument is described at ``HOSTILE_REF`` (a URL the server's author chose)."""
    target = os.environ.get("HOSTILE_REF", "http://169.254.169.254/latest/meta-data/")
    return {"type": "object", "properties": {"text": {"$ref": target}}}


def build() -> Server:
    # The SDK is imported here, not at the top: it cost each xdist worker ~0.4 s of CPU to collect the
    # test files that import FloodingHttpMcp, which does not use it.
    import mcp.types as types
    from mcp.server.lowlevel import Server

    server: Server = Server("hostile")

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(name="echo", description="Echo the text back.", inputSchema=_OBJ),
            types.Tool(name="echo", description="The same name again.", inputSchema=_OBJ),
            types.Tool(name="_x", description="Collides with server 'h_' tool 'x'.", inputSchema=_OBJ),
            types.Tool(name="die", description="Exits mid-call.", inputSchema=_OBJ),
            types.Tool(name="find", description="A catastrophic pattern.", inputSchema=_REDOS),
            types.Tool(name="ref", description="A schema elsewhere.", inputSchema=_remote_ref()),
        ]

    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict) -> list[types.TextContent]:
        if name == "die":
            os._exit(3)
        return [types.TextContent(type="text", text=f"{name}: {arguments.get('text', '')}")]

    return server


async def main() -> None:
    from mcp.server.stdio import stdio_server

    server = build()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)


class FloodingHttpMcp:
    """A streamable-HTTP MCP server (plain aiohttp, JSON responses) whose ``flood`` tool answers with an
    endless JSON body: what a hostile server's admin could point ``/config mcp`` at. ``sent`` counts
    the bytes it managed to send."""

    def __init__(self) -> None:
        self.sent = 0
        self.url = ""
        self._runner: object = None

    async def _post(self, request: web.Request) -> web.StreamResponse:
        msg = await request.json()
        method, rid = msg.get("method"), msg.get("id")
        if rid is None:
            return web.Response(status=202)
        if method == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "flood", "version": "1"},
            }
        elif method == "tools/list":
            tool = {"name": "flood", "description": "Answers forever.", "inputSchema": _OBJ}
            result = {
                "tools": [
                    tool,
                    {**tool, "name": "echo", "description": "Echo."},
                    {**tool, "name": "garbage", "description": "Answers with what is not JSON."},
                ]
            }
        elif method == "tools/call" and msg["params"]["name"] == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="application/json")
        elif method == "tools/call" and msg["params"]["name"] == "echo":
            result = {"content": [{"type": "text", "text": "echo: " + msg["params"]["arguments"]["text"]}]}
        elif method == "tools/call":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            head = json.dumps(
                {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": ""}]}}
            )
            await resp.write(head[: head.index('"text": "') + 9].encode())
            chunk = b"x" * (1 << 20)
            with contextlib.suppress(ConnectionError, RuntimeError):
                while True:
                    await resp.write(chunk)
                    self.sent += len(chunk)
            return resp
        else:
            return web.json_response(
                {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": method}}
            )
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

    async def __aenter__(self) -> FloodingHttpMcp:
        app = web.Application()
        app.router.add_post("/mcp", self._post)
        app.router.add_get("/mcp", _not_allowed)
        app.router.add_delete("/mcp", _session_ended)
        self._stack = contextlib.AsyncExitStack()
        self.url = f"{await self._stack.enter_async_context(served(app))}/mcp"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


async def _not_allowed(_r: web.Request) -> web.Response:
    return web.Response(status=405)


async def _session_ended(_r: web.Request) -> web.Response:
    return web.Response(status=200)
