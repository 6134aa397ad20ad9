"""Tools from MCP servers (the official ``mcp`` SDK), offered to the agent beside the built-in ones.

Each server's tools are namespaced ``<server>__<tool>``, keep their JSON schemas, and are ordinary
:class:`~agent.tools.registry.Tool` objects (timeout, output cap, rate limits, per-server switches).

Why each connection lives in a task of its own: the SDK's transports are anyio task groups, whose
scopes must be left by the task that entered them; one owner task per server keeps that true while any
run's task sends calls through the session. A server that cannot be reached (or does not answer
``initialize`` and ``tools/list`` within ``connect_timeout``) is reported once and its tools are left
out; a server that dies later makes its tools answer "unavailable" at once. Nothing waits on a dead
server longer than its timeouts, so no run stalls on one.

Why mcp 1.x: the 2.x line swaps httpx for a fork of its own and adds OpenTelemetry; 1.x runs on the
httpx the project already uses, and accepts our own (SSRF-guarded) client for servers that members add.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

import anyio
import httpx
import structlog

from agent.logs import redact, register_secret
from agent.tools.mcp_config import McpConfigError, McpServer, load_servers, server_secrets
from agent.tools.mcp_http import MAX_RESPONSE_BYTES, NO_ENDPOINT, NoServerStream, http_refusal, plain_client
from agent.tools.mcp_stderr import StderrTail, said_before_end
from agent.tools.mcp_wire import wire_tool
from agent.tools.registry import Tool, ToolRefused

__all__ = ["MAX_RESPONSE_BYTES", "McpConfigError", "McpServer", "McpTools", "NoServerStream", "load_servers"]

log = structlog.get_logger(__name__)

MAX_TOOLS_PER_SERVER = 64
MAX_TOOL_PAGES = MAX_TOOLS_PER_SERVER
"""``tools/list`` pages read per server: a server making progress (one tool a page or more) fills the
tool cap within it, so only one that pages on without tools (a ``nextCursor`` on every answer) reaches it."""


RECONNECT_EVERY = 30.0
"""Seconds between attempts to reconnect a server whose session died (its calls answer at once between)."""
_SESSION_TERMINATED = 32600
"""The code the SDK reports when an HTTP server answers 404 for our session id: it was restarted."""


_METHOD_NOT_FOUND = -32601
_CONNECTION_CLOSED = -32000
"""The SDK's code for a call whose session's stream ended under it."""


class McpListError(Exception):
    """A server's handshake or ``tools/list`` failed in a way said here; the message is the reason shown
    for leaving it out."""


class _Unreadable(Exception):
    """An answer the SDK could not read; the message says why."""


class _SessionGone(Exception):
    """The server no longer knows the session; the call was not run."""


class _Connection:
    """One live session, owned by one task from connect to close."""

    def __init__(self, server: McpServer, http_client: Callable[[McpServer], httpx.AsyncClient]) -> None:
        self.server = server
        self._http_client = http_client
        self.session: Any = None
        self.tools: list[Any] = []
        self.error: str | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._unreadable: set[asyncio.Future[str]] = set()
        """One per call in flight over HTTP, told when an answer could not be read (see :meth:`call`)."""
        self._task: asyncio.Task[None] | None = None
        self._stderr: StderrTail | None = None
        self._stray = b""
        """The last stdout line of a stdio server that was no protocol message (a log, an error printed)."""
        self._reconnecting = asyncio.Lock()
        self._retry_at = 0.0
        self.closed = False
        """Closed for good (:meth:`McpTools.aclose`): a late call must not start a server again."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._own(), name=f"mcp:{self.server.name}")
        try:
            async with asyncio.timeout(self.server.connect_timeout):
                await self._ready.wait()
        except TimeoutError:
            self.error = f"no answer within {self.server.connect_timeout:g} s"
            await self.close(wait=0)
            self.error += self._said()
        except asyncio.CancelledError:  # Ctrl-C or SIGTERM mid-handshake: the owner task was left running
            await self.close(wait=0)
            raise

    async def _own(self) -> None:
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, get_default_environment
        from mcp.client.streamable_http import streamable_http_client

        from agent.tools.mcp_stdio import stdio_transport  # the SDK (~100 ms of imports) only when used

        s = self.server
        self._stderr, self._stray = None, b""
        try:
            async with contextlib.AsyncExitStack() as stack:
                if s.url:
                    client = await stack.enter_async_context(self._http_client(s))
                    read, write, _ = await stack.enter_async_context(
                        streamable_http_client(s.url, http_client=client)
                    )
                else:
                    assert s.command is not None
                    params = StdioServerParameters(
                        command=s.command, args=list(s.args), env=get_default_environment() | dict(s.env)
                    )
                    stderr = self._stderr = StderrTail()
                    stack.callback(stderr.close)
                    read, write = await stack.enter_async_context(
                        stdio_transport(
                            params, stderr.file, max_line=MAX_RESPONSE_BYTES, on_stray=self._on_stray
                        )
                    )
                session = await stack.enter_async_context(
                    ClientSession(
                        read,
                        write,
                        read_timeout_seconds=timedelta(seconds=s.timeout),
                        message_handler=self._on_message,
                    )
                )
                await self._handshake(session)
                self.session = session
                self._ready.set()
                await self._closing.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # an anyio ExceptionGroup wraps the transport's real error
            self.error = self.error or _reason(e) + self._said()
        finally:
            self.session = None
            self._ready.set()
            for unreadable in self._unreadable:  # a call's HTTP 500 or 401 ends the transport, not the call
                if not unreadable.done():
                    unreadable.set_result(self.error or "its connection ended")

    async def _handshake(self, session: Any) -> None:
        """``initialize`` and ``tools/list``, failing at once on an answer that cannot be read (a web page
        at the URL waited out the whole read timeout) or an HTTP 404 (reported as "Session terminated")."""
        from mcp.shared.exceptions import McpError

        try:
            await self._raced(session.initialize())
            self.tools = await self._raced(self._list(session))
        except _Unreadable as e:
            hint = f": {NO_ENDPOINT}" if self.server.url else ""
            raise McpListError(f"its answer could not be read ({e}){hint}") from None
        except McpError as e:
            if self.server.url and e.error.code == _SESSION_TERMINATED:
                raise McpListError(f"HTTP 404 Not Found: {NO_ENDPOINT}") from None
            if e.error.code == _METHOD_NOT_FOUND:  # a resources- or prompts-only server
                raise McpListError(
                    "it offers no tools (tools/list: Method not found); the bot uses tools only"
                ) from None
            raise

    def _on_stray(self, line: bytes) -> None:
        self._stray = line[:300]

    def _said(self) -> str:
        return said_before_end(self._stray, self._stderr, hide=self.server.env.values())

    async def _list(self, session: Any) -> list[Any]:
        tools: list[Any] = []
        cursor = None
        for _ in range(MAX_TOOL_PAGES):
            page = await session.list_tools(cursor=cursor)
            tools += page.tools
            cursor = getattr(page, "nextCursor", None)
            if not cursor or len(tools) >= MAX_TOOLS_PER_SERVER:
                break
        else:
            # Half a list could lack the very tool the operator wanted: say so instead of offering it.
            raise McpListError(
                f"its tool list never ended (still more after {MAX_TOOL_PAGES} pages, {len(tools)} tools)"
            )
        if cursor or len(tools) > MAX_TOOLS_PER_SERVER:
            log.warning(
                "mcp_tools_cut",
                server=self.server.name,
                reason=f"MCP server {self.server.name} lists more than {MAX_TOOLS_PER_SERVER} tools; "
                f"only its first {MAX_TOOLS_PER_SERVER} are offered",
            )
        return tools[:MAX_TOOLS_PER_SERVER]

    async def _on_message(self, message: Any) -> None:
        """An exception here is an answer the SDK could not read (not JSON, a wrong content type, past the
        size cap; over stdio, a line that is an answer) and dropped: its call would wait out its whole
        timeout. The calls in flight are failed instead (which one it was is not known; usually one)."""
        if isinstance(message, Exception):
            for unreadable in self._unreadable:
                if not unreadable.done():
                    unreadable.set_result(_reason(message))

    async def _reconnect(self, stale: Any) -> None:
        """A new session: the server restarted (it answers that it no longer knows ``stale``, so a call
        on it never ran) or the old session died (``stale`` None: tried at most every RECONNECT_EVERY s).
        Without this a redeployed server's tools failed until the bot itself restarted."""
        async with self._reconnecting:
            if self.closed or (self.session is not None and self.session is not stale):
                return  # closed for good, or another call has reconnected
            if stale is None and time.monotonic() < self._retry_at:
                return
            self._retry_at = time.monotonic() + RECONNECT_EVERY
            await self.close()
            self._ready, self._closing, self.error = asyncio.Event(), asyncio.Event(), None
            await self.start()

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        if self.session is None:
            await self._reconnect(None)
        for _ in range(2):
            session = self.session
            if session is None:
                raise ToolRefused(
                    f"the {self.server.name} MCP server is unavailable ({self.error or 'closed'})"
                )
            try:
                return await self._call(session, name, arguments)
            except _SessionGone:
                await self._reconnect(session)
        raise ToolRefused(f"the {self.server.name} MCP server does not keep a session; try again later")

    async def _call(self, session: Any, name: str, arguments: dict[str, Any]) -> Any:
        try:
            return await self._raced(session.call_tool(name, arguments))
        except _Unreadable as e:
            raise ToolRefused(f"the {self.server.name} MCP server's answer could not be read ({e})") from None
        except Exception as e:
            code = getattr(getattr(e, "error", None), "code", None)
            if code == _SESSION_TERMINATED:
                raise _SessionGone from None
            why = _reason(e)
            if code == _CONNECTION_CLOSED or isinstance(
                e, anyio.ClosedResourceError | anyio.BrokenResourceError
            ):
                # Its stream ended (a stdio server that exited): the session was kept, and every later
                # call said "ClosedResourceError" for good. Closed, the next call starts it again.
                await self.close()
                why = "its connection ended" + self._said()
            raise ToolRefused(f"the {self.server.name} MCP server failed: {why}") from None

    async def _raced(self, request: Awaitable[Any]) -> Any:
        """``request``'s result, or :class:`_Unreadable` as soon as an answer could not be read."""
        unreadable: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._unreadable.add(unreadable)
        task = asyncio.ensure_future(request)
        try:
            await asyncio.wait({task, unreadable}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                raise _Unreadable(unreadable.result())
            return task.result()
        finally:
            self._unreadable.discard(unreadable)
            if not task.done():
                task.cancel()

    async def close(self, *, wait: float = 5) -> None:
        """Let the server's task end its session (up to ``wait`` s), then cancel it. A server that never
        finished the handshake is not waited for: it was stuck in ``initialize``, not watching for the
        close, so ``ask`` said it was left out 5 s after its 10 s had run out."""
        self._closing.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(wait):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _reason(e: BaseException) -> str:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    if isinstance(e, McpListError):
        return str(e)
    if isinstance(e, httpx.HTTPStatusError) and (refusal := http_refusal(e)):
        return refusal
    # httpx names the URL in its errors, password included: this text reaches the thread and the model.
    text = redact(str(e)).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class McpTools:
    """Connections to a set of servers and the tools they offer. ``async with McpTools(servers) as m``."""

    def __init__(
        self,
        servers: Iterable[McpServer],
        *,
        http_client: Callable[[McpServer], httpx.AsyncClient] = plain_client,
    ) -> None:
        self._conns = [_Connection(s, http_client) for s in servers]
        # The SDK logs a server's URL and httpx names it in every error; a server may echo its key in an
        # answer: each secret the operator gave a server (:func:`server_secrets`) is never shown.
        for secret in (x for c in self._conns for x in server_secrets(c.server)):
            register_secret(secret)
        self.problems: dict[str, str] = {}
        """Server name -> why its tools are left out (each reported once, at connect)."""
        self.retrying: asyncio.Task[None] | None = None
        """The try under way of the servers left out (:meth:`late_tools`), owned here, ended by aclose."""
        self._late: tuple[tuple[_Connection, ...], list[Tool]] = ((), [])

    @property
    def names(self) -> list[str]:
        """Every configured server's name, reachable or not."""
        return [c.server.name for c in self._conns]

    async def __aenter__(self) -> McpTools:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        await asyncio.gather(*(c.start() for c in self._conns))
        for c in self._conns:
            if c.session is None:
                self.problems[c.server.name] = c.error or "closed"
                log.warning("mcp_server_unavailable", server=c.server.name, reason=c.error)

    async def aclose(self) -> None:
        for c in self._conns:
            c.closed = True
        if self.retrying is not None:
            self.retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.retrying
        await asyncio.gather(*(c.close() for c in self._conns))

    def late_tools(self) -> list[Tool]:
        """The tools of HTTP servers left out at connect that have come up since, and another try (in the
        background, at most every RECONNECT_EVERY s a server) of those still down. Why: ``agentbot run``
        builds its tools once, and a server that was down then (a sidecar started after the bot) stayed
        out until the bot restarted. A stdio server that failed to start is not started again every 30 s
        (a process each time, ``npx``'s seconds of CPU): what failed is its command, fixed by a restart."""
        late = [c for c in self._conns if c.server.name in self.problems and c.server.url and not c.closed]
        down = [c for c in late if c.session is None]
        if down and (self.retrying is None or self.retrying.done()):
            self.retrying = asyncio.create_task(self._retry(down), name="mcp:retry")
        up = tuple(c for c in late if c.session is not None)
        if up != self._late[0]:
            self._late = (up, self._tools_of(up))
        return self._late[1]

    async def _retry(self, down: list[_Connection]) -> None:
        await asyncio.gather(*(c._reconnect(None) for c in down), return_exceptions=True)
        for c in down:
            if c.session is not None:
                log.info("mcp_server_up", server=c.server.name, tools=len(c.tools))

    def tools(self) -> list[Tool]:
        return self._tools_of(self._conns)

    def _tools_of(self, conns: Iterable[_Connection]) -> list[Tool]:
        out: list[Tool] = []
        seen: set[str] = set()
        for c in conns:
            if c.session is None:
                continue
            wanted = set(c.server.tools) if c.server.tools is not None else None
            for t in c.tools:
                if wanted is not None and t.name not in wanted:
                    continue
                if (built := wire_tool(c.server, t, c.call)) is not None and built.name in seen:
                    # A server listing a name twice (or "a"'s "_x" beside "a_"'s "x") would make the
                    # registry refuse the whole set, and every run with it: the first one is kept.
                    log.warning("mcp_tool_skipped", server=c.server.name, tool=t.name, reason="name taken")
                elif built is not None:
                    seen.add(built.name)
                    out.append(built)
                else:
                    why = "schema not an object, invalid or too large"
                    log.warning("mcp_tool_skipped", server=c.server.name, tool=t.name, reason=why)
        return out
