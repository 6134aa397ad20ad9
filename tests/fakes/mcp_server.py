"""A real MCP server built with the official SDK (FastMCP), for the MCP tool tests.

``python -m tests.fakes.mcp_server`` serves it over stdio (a subprocess, as an operator's file runs
one); :class:`HttpMcpServer` serves the same tools over streamable HTTP on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP
    from mcp.server.fastmcp.utilities.types import Image


def build(name: str = "lab") -> FastMCP:
    # The SDK is imported on first use, not with the module: it cost each xdist worker ~0.4 s of CPU to
    # collect the test files that import this one. ``Image`` is made a module global, where FastMCP
    # resolves the tools' annotations.
    global Image
    from mcp.server.fastmcp import FastMCP
    from mcp.server.fastmcp.utilities.types import Image

    mcp = FastMCP(name, stateless_http=False, json_response=False)

    @mcp.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    @mcp.tool()
    def lookup(code: str) -> str:
        """Look up a part by its code in the lab's inventory."""
        return f"part {code}: 12 in stock, shelf B4"

    @mcp.tool()
    def broken() -> str:
        """Always fails."""
        raise ValueError("the inventory database is offline")

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "done"

    @mcp.tool()
    def picture() -> Image:
        """A 1x1 PNG."""
        return Image(data=b"\x89PNG\r\n\x1a\n" + b"\0" * 16, format="png")

    @mcp.tool()
    def huge() -> str:
        """A long answer."""
        return "x" * 50_000

    return mcp


class HttpMcpServer:
    """The same server over streamable HTTP at ``self.url`` (127.0.0.1, a free port)."""

    def __init__(self, port: int = 0) -> None:
        """``port``: a given one, to restart a server where its clients knew it."""
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
            s.bind(("127.0.0.1", port))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        import uvicorn

        app = build().streamable_http_app()
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="error",
                lifespan="on",
                timeout_graceful_shutdown=1,  # a client's open stream must not hold the test for 10 s
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> HttpMcpServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


if __name__ == "__main__":
    build().run("stdio")
