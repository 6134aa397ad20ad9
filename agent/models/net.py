"""The model client's sockets: httpcore's network backend on asyncio's own transports, without anyio.

httpx sends through httpcore, which reaches sockets through a pluggable network backend (its public
``network_backend`` parameter). Its default on asyncio is anyio's: every socket read and write opens an
anyio cancel scope with its own timer for the timeout, and every receive yields to the loop once before
it looks at the socket. In the bot at 100 sessions that was about a tenth of the event loop's CPU
(``py-spy --gil``: anyio frames in 11.9% of its samples; 20.6 timers per run of 6 model calls). This
backend keeps httpx, httpcore and h11 as they are and reads a buffered protocol: a read that finds bytes
waiting returns them at once, with no timer; one that must wait arms a single ``call_at`` for its timeout.
Errors are httpcore's own (``ReadTimeout``, ``ConnectError`` …), so httpx reports them exactly as before.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

READ_CHUNK = 65536
"""Bytes buffered from the socket before the protocol pauses reading (h11 reads 64 KiB at a time)."""


class _Protocol(asyncio.Protocol):
    """Bytes from the socket, kept until :class:`AsyncioStream` reads them; the one waiter woken."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= READ_CHUNK and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport: HTTP/1.1 never half-closes from our side

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            if exc is None:
                self._drained.set_result(None)
            else:
                self._drained.set_exception(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def take(self, max_bytes: int) -> bytes:
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        if self._paused and len(self.buffer) < READ_CHUNK and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def drained(self) -> asyncio.Future[None] | None:
        """A future done when the transport takes writes again; None when it takes them now."""
        if not self._write_paused:
            return None
        if self._drained is None or self._drained.done():
            self._drained = self._loop.create_future()
        return self._drained


async def _within(fut: asyncio.Future[None], seconds: float | None) -> bool:
    """Wait for ``fut``; False when ``seconds`` passed first. One timer, and only for a wait."""
    if seconds is None:
        await fut
        return True
    loop = asyncio.get_running_loop()
    timer = loop.call_at(loop.time() + seconds, _expire, fut)
    try:
        await fut
    except TimeoutError:
        return False
    finally:
        timer.cancel()
    return True


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class AsyncioStream(AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        p = self._protocol
        while not p.buffer:
            if p.eof:
                if p.error is not None:
                    raise httpcore.ReadError(str(p.error) or type(p.error).__name__)
                return b""
            p.waiter = asyncio.get_running_loop().create_future()
            try:
                if not await _within(p.waiter, timeout):
                    raise httpcore.ReadTimeout("timed out")
            finally:
                p.waiter = None
        return p.take(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        try:
            self._transport.write(buffer)
        except (OSError, RuntimeError) as e:
            raise httpcore.WriteError(str(e)) from e
        drained = self._protocol.drained()
        if drained is not None:
            try:
                if not await _within(drained, timeout):
                    raise httpcore.WriteTimeout("timed out")
            except OSError as e:
                raise httpcore.WriteError(str(e)) from e

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(self._transport, self._protocol, ssl_context, server_hostname=server_hostname),
                timeout,
            )
        except TimeoutError as e:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out") from e
        except (OSError, ssl.SSLError, ConnectionError) as e:
            self._transport.close()
            raise httpcore.ConnectError(str(e)) from e
        if transport is None:
            raise httpcore.ConnectError("the TLS handshake ended the connection")
        self._protocol.transport = transport  # type: ignore[assignment]
        return AsyncioStream(transport, self._protocol)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":  # a kept-alive connection with bytes or EOF waiting is not reused
            p = self._protocol
            if p.buffer or p.eof or self._transport.is_closing():
                return True
            sock = self._transport.get_extra_info("socket")  # a close the loop has not read yet
            return sock is not None and bool(select.select([sock], [], [], 0)[0])
        return None


class AsyncioBackend(AsyncNetworkBackend):
    """httpcore's ``network_backend`` for the model client (see the module docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = _Protocol(loop)
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(
                    lambda: protocol,
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                ),
                timeout,
            )
        except TimeoutError as e:
            raise httpcore.ConnectTimeout("timed out") from e
        except OSError as e:
            raise httpcore.ConnectError(str(e)) from e
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)  # type: ignore[arg-type]

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = _Protocol(loop)
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_unix_connection(lambda: protocol, path), timeout
            )
        except TimeoutError as e:
            raise httpcore.ConnectTimeout("timed out") from e
        except OSError as e:
            raise httpcore.ConnectError(str(e)) from e
        return AsyncioStream(transport, protocol)  # type: ignore[arg-type]

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
