"""A broken or hostile MCP server (the SDK's low-level server over stdio), for the black-box tool tests.

``python -m tests.fakes.mcp_hostile`` lists tools whose names collide once namespaced (the same name
twice, and ``_x`` beside a server named with a trailing ``_``), a tool that dies mid-call, and a plain
``echo`` that works, so a test can check that what is broken never takes down what is not.
"""

from __future__ import annotations

import os

import anyio
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

_OBJ = {"type": "object", "properties": {"text": {"type": "string"}}}


def build() -> Server:
    server: Server = Server("hostile")

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(name="echo", description="Echo the text back.", inputSchema=_OBJ),
            types.Tool(name="echo", description="The same name again.", inputSchema=_OBJ),
            types.Tool(name="_x", description="Collides with server 'h_' tool 'x'.", inputSchema=_OBJ),
            types.Tool(name="die", description="Exits mid-call.", inputSchema=_OBJ),
        ]

    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict) -> list[types.TextContent]:
        if name == "die":
            os._exit(3)
        return [types.TextContent(type="text", text=f"{name}: {arguments.get('text', '')}")]

    return server


async def main() -> None:
    server = build()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
