"""The HTTP side of a streamable-HTTP MCP connection: the client the bot connects with (bounded answers,
no server-pushed stream), kept apart from the sessions in ``mcp.py``."""

from __future__ import annotations

import httpx

from agent.logs import redact
from agent.tools.mcp_config import McpServer
from agent.tools.netguard import CappedTransport

__all__ = ["MAX_RESPONSE_BYTES", "NoServerStream", "plain_client"]

MAX_RESPONSE_BYTES = 2 * 2**20
"""Most bytes of one HTTP answer (or stdio message line) from a server: 64 tools with 16 KB schemas (1 MiB) fit, and a call's
text is cut to its ``max_output`` anyway. The SDK parses an answer on the event loop: 8 MiB of resource
links held it 1.6 s per call (load 10), 2 MiB 0.13 s."""


class NoServerStream(httpx.AsyncBaseTransport):
    """Never opens the stream a streamable-HTTP server pushes its own messages on (the SDK's GET):
    answers it 405 here, which the protocol allows a server to say, so the SDK gives it up.

    Nothing here reads server-initiated messages, and the SDK reopens that stream at once whenever the
    server closes it cleanly (its ``retry:`` field sets the delay, 0 included): a hostile server that
    sent 1 MiB of log notifications per GET and closed kept the bot's event loop parsing them for as
    long as its connection was kept, between turns too (a third of a core in the measure, per server)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(405, request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def plain_client(server: McpServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        headers=dict(server.headers),
        timeout=httpx.Timeout(server.timeout, connect=10),
        transport=NoServerStream(CappedTransport(httpx.AsyncHTTPTransport(), MAX_RESPONSE_BYTES)),
    )


NO_ENDPOINT = "is the URL the server's MCP endpoint (its path often ends in /mcp)?"


def http_refusal(e: httpx.HTTPStatusError) -> str | None:
    """What a 401 or 403 asks for, said to whoever configured the server: httpx's "Client error '401
    Unauthorized' for url '...'" named neither the scheme the server wants nor where credentials go.
    None for other statuses (their own text says enough)."""
    response = e.response
    if response.status_code not in (401, 403):
        return None
    scheme = response.headers.get("WWW-Authenticate", "").strip().split(" ", 1)[0][:40]
    wants = f"it asks for {scheme} credentials" if scheme else "it wants credentials"
    return (
        f"HTTP {response.status_code} {response.reason_phrase} from {redact(str(e.request.url))}: {wants} "
        "(MCP_SERVERS_FILE gives them in "
        'the server\'s headers, e.g. Authorization = "Bearer <token>"; a /config mcp server sends none)'
    )
