"""One pooled httpx client for every model call (the retry policy is agent.retry).

Pool limits matter more than anything else for many concurrent sessions: with httpx's default of
100 connections, 200 concurrent sessions queue behind each other (measured in bench/loop_overhead.py),
so the default pool is sized for a few hundred concurrent streams.
"""

from __future__ import annotations

import functools
import ssl
import time
import zlib
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
from httpx_sse import EventSource, ServerSentEvent

from agent.inflate import ACCEPT_ENCODING, READABLE, Inflater, encoding_layers
from agent.models.proxies import LOOPBACK


def timeouts(read: float = 120.0) -> httpx.Timeout:
    """The client's timeouts; ``read`` (``MODEL_TIMEOUT``) is how long a model may send nothing."""
    return httpx.Timeout(connect=10.0, read=read, write=30.0, pool=60.0)


DEFAULT_TIMEOUT = timeouts()
MAX_RESPONSE_BYTES = 128 * 2**20
"""Most bytes of one response body: a server that streamed without end (ignoring ``max_tokens``, or
hostile) took ``agentbot ask`` to 1 GB in 18 s, and the bot, whose turn may last 15 minutes, would have
run out of memory for every server. Past every real answer (a 100k-token reasoning stream is about
25 MB of events) and the largest attachment this client downloads (``ATTACHMENT_MAX_MB`` <= 100)."""


ERROR_BODY_BYTES = 2**20
"""Most bytes of an error answer read: its message is shown cut to a line anyway."""
JSON_BYTES_PER_CHAR = 6
"""Bytes one character of an answer may take in JSON: ``\\u00e9``, the longest escape of one character."""
JSON_OVERHEAD_BYTES = 2 * 2**20
"""Room in a whole answer beside its text and arguments: the JSON around them, usage, a reasoning
model's reasoning field (about 500,000 characters of it), logprobs of a short answer."""


def whole_answer_bytes(most_chars: int) -> int:
    """Most bytes of one answer read whole (``AGENT_STREAM=false``, or a server answering a stream
    with one JSON body) whose text and arguments may hold ``most_chars`` (agent.models.bounds)."""
    return JSON_BYTES_PER_CHAR * most_chars + JSON_OVERHEAD_BYTES


async def read_text(resp: httpx.Response, limit: int, *, cut: bool = False) -> str:
    """The body as text, read to at most ``limit`` (decoded) bytes: past it the rest is left unread and
    either cut off (``cut``, for an error's message) or refused with :class:`ResponseTooLarge`.

    ``aread()`` read a whole answer to :data:`MAX_RESPONSE_BYTES` (128 MiB) before the answer bound
    (16 characters a token) cut it: a server ignoring ``max_tokens=100`` made the client hold 128 MiB
    to keep 1,600 characters of it."""
    buf = bytearray()
    async for chunk in resp.aiter_bytes():
        buf += chunk
        if len(buf) > limit:
            if cut:
                del buf[limit:]
                break
            raise ResponseTooLarge(
                f"sent more than {_size(limit)} in one answer read whole, past what its max_tokens allows "
                "(a server ignoring max_tokens?); the rest was not read. With AGENT_STREAM=true such "
                "an answer is cut instead",
                request=resp.request,
            )
    try:
        return bytes(buf).decode(resp.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return bytes(buf).decode("utf-8", errors="replace")


def bounded_sse(resp: httpx.Response, limit: int) -> AsyncIterator[ServerSentEvent]:
    """The response's server-sent events, failing with :class:`ResponseTooLarge` once ``limit``
    characters arrive without an event ending. The answer bound counts the text of events read: one
    line without an end (or an event of endless ``data:`` lines) was held whole, to 128 MiB."""
    return EventSource(cast(httpx.Response, _OneEventBound(resp, limit))).aiter_sse()


class _OneEventBound:
    """What ``EventSource`` reads of a response (its headers and text), counting what arrives since the
    last blank line (an event's end: a line ending followed by another). Keep-alive comments (``: ping``,
    OpenRouter's ``: OPENROUTER PROCESSING``) are not the model sending something: past the read timeout
    (``MODEL_TIMEOUT``) with only those, it times out as a silent server does. They reset the socket's
    timer, so a stuck upstream behind such a proxy held ``agentbot ask`` for as long as it kept pinging."""

    def __init__(self, resp: httpx.Response, limit: int) -> None:
        self._resp, self._limit = resp, limit
        self.headers = resp.headers
        try:
            self._idle: float | None = float(resp.request.extensions["timeout"]["read"])
        except (RuntimeError, KeyError, TypeError, ValueError):  # no request, or no read timeout
            self._idle = None

    async def aiter_text(self) -> AsyncIterator[str]:
        pending, tail = 0, ""
        heard = time.monotonic()  # when something other than a comment last came
        async for text in self._resp.aiter_text():
            if text[:1] not in (":", "\n", "\r") or not _only_comments(text):
                heard = time.monotonic()
            elif self._idle is not None and time.monotonic() - heard > self._idle:
                raise httpx.ReadTimeout(
                    "only keep-alive comments for the read timeout", request=self._resp.request
                )
            last = max(text.rfind("\n\n"), text.rfind("\n\r"), text.rfind("\r\r"))
            if last >= 0:
                pending = len(text) - last - 2
            elif any(end in tail + text[:2] for end in ("\n\n", "\n\r", "\r\r")):  # split between chunks
                pending = len(text)
            else:
                pending += len(text)
            if pending > self._limit:
                raise ResponseTooLarge(
                    f"sent more than {_size(self._limit)} in one streamed event, past what its max_tokens "
                    "allows (a server ignoring max_tokens?); the rest was not read",
                    request=self._resp.request,
                )
            tail = (tail + text)[-2:] if len(text) < 2 else text[-2:]
            yield text


def _only_comments(text: str) -> bool:
    """Whether ``text`` holds nothing but SSE comment lines and line ends."""
    return all(not line or line[0] == ":" for line in text.splitlines())


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


class ResponseRefused(httpx.ReadError):
    """A body this client will not read; reading it again would end the same way."""


class ResponseTooLarge(ResponseRefused):
    """A body passed :data:`MAX_RESPONSE_BYTES` (decoded bytes, whatever the encoding)."""


def shared_tls() -> ssl.SSLContext:
    """The process's TLS context for model calls, made again only if the CA file or directory OpenSSL
    would read changes (``SSL_CERT_FILE``, ``SSL_CERT_DIR``): loading the CA bundle costs ~50 ms of CPU,
    paid by every client made (each in-process bot of the tests, a few hundred in the suite)."""
    paths = ssl.get_default_verify_paths()
    return _tls(paths.cafile, paths.capath)


@functools.lru_cache(maxsize=4)
def _tls(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()  # reads those two variables itself


class ShardedTransport(httpx.AsyncBaseTransport):
    """Spreads requests over many small connection pools, each request to the least busy one.

    httpcore's pool does work proportional to (waiting requests x connections) on every event, so
    one big pool collapses under hundreds of concurrent streams: 200 sessions x 6 calls at 200 ms
    took 44 s with one 512-connection pool, 8.7 s with httpx's default 100, and 2.2 s with 64 pools
    of 4 (bench/loop_overhead.py; ideal 1.2 s, the rest is CPU on 2 cores). It is still one client.
    """

    def __init__(
        self, shards: int = 64, per_shard: int = 4, *, proxy: str | None = None, ssl_context: Any = None
    ) -> None:
        limits = httpx.Limits(
            max_connections=per_shard, max_keepalive_connections=per_shard, keepalive_expiry=30
        )
        # One TLS context for all pools: loading the CA bundle 64 times took 2.4 s of blocked start-up.
        ssl_context = ssl_context or shared_tls()
        self._pools = [
            httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, proxy=proxy)
            for _ in range(max(1, shards))
        ]
        self._busy = [0] * len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = min(range(len(self._pools)), key=self._busy.__getitem__)
        self._busy[i] += 1
        try:
            response = await self._pools[i].handle_async_request(request)
        except BaseException:
            self._busy[i] -= 1
            raise
        layers = encoding_layers(response.headers)
        if layers:  # inflated here, under the cap: httpx's own decoder has no output limit (agent.inflate)
            del response.headers["content-encoding"]
        response.stream = _Released(response.stream, self._busy, i, layers)  # type: ignore[arg-type]
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Released(httpx.AsyncByteStream):
    """Marks the pool free again when the response body is closed (read or abandoned)."""

    def __init__(self, inner: Any, busy: list[int], index: int, encodings: list[str] | None = None) -> None:
        self._inner, self._busy, self._index, self._open = inner, busy, index, True
        self._encodings = encodings

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._encodings:
            async for piece in self._inflated(self._encodings):
                yield piece
            return
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > MAX_RESPONSE_BYTES:
                raise _too_large()
            yield chunk

    async def _inflated(self, encodings: list[str]) -> AsyncIterator[bytes]:
        """The body inflated with :class:`~agent.inflate.Inflater`, the decoded bytes counted against
        :data:`MAX_RESPONSE_BYTES` (a raw count let 1 MiB of gzip become 1 GiB in memory)."""
        if len(encodings) > 1 or encodings[0] not in READABLE:
            raise ResponseRefused(
                f"sent a body encoded {', '.join(encodings)}, which this client does not read (it asks "
                f"for {ACCEPT_ENCODING} only; stacked encodings are a common decompression bomb)"
            )
        inflater = Inflater(encodings[0])
        raw = made = 0
        async for chunk in self._inner:
            raw += len(chunk)
            try:
                piece = inflater.feed(chunk, MAX_RESPONSE_BYTES + 1 - made)
            except zlib.error as e:
                raise ResponseRefused(f"sent a corrupt {encodings[0]} body ({e})") from None
            made += len(piece)
            if made > MAX_RESPONSE_BYTES or raw > MAX_RESPONSE_BYTES:
                raise _too_large()
            if piece:
                yield piece

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._open:
                self._open = False
                self._busy[self._index] -= 1


def _too_large() -> ResponseTooLarge:
    return ResponseTooLarge(
        f"sent more than {MAX_RESPONSE_BYTES // 2**20} MiB in one answer without finishing it "
        "(a server ignoring max_tokens?); the rest was not read"
    )


class _CookieJar(CookieJar):
    """The standard jar, which skips responses that set no cookie.

    httpx hands every response to its jar, and the jar first copies all the response's headers into an
    ``email.message.Message`` to look for ``Set-Cookie``: about 8% of a streamed model call's CPU (a
    cProfile of 2,000 calls), for model APIs that almost never set one. Responses that do set cookies
    (a load balancer's affinity cookie) are kept exactly as before."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        headers = getattr(getattr(response, "response", None), "headers", None)  # httpx's adapter
        if (
            isinstance(headers, httpx.Headers)
            and "set-cookie" not in headers
            and "set-cookie2" not in headers
        ):
            return
        super().extract_cookies(response, request)


def endpoint_url(base_url: str, path: str) -> str:
    """``path`` (``/chat/completions``, ``/models?limit=10``) added to ``base_url``'s path, before its
    query: Azure OpenAI's base URL carries ``?api-version=...``, and ``base_url + path`` sent every call
    to ``...?api-version=2024-10-21/chat/completions``, a query Azure refuses, at a path it has no API
    at. A base URL without a query is joined as it always was."""
    parts = urlsplit(base_url)
    if not parts.query:
        return base_url.rstrip("/") + path
    more_path, _, more_query = path.partition("?")
    query = f"{parts.query}&{more_query}" if more_query else parts.query
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + more_path, query=query))


def proxy_mounts() -> dict[str, httpx.AsyncBaseTransport | None]:
    """``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY``, read as httpx itself reads them:
    a client given its own transport reads none of them, so behind a company proxy that allows no direct
    way out every model call "could not be reached (ConnectError)". Loopback is never proxied: a local
    server (Ollama, llama.cpp) reached from a shell that exports a proxy for other programs kept working
    without ``NO_PROXY=localhost``, and still does. A proxy of another scheme (socks5://) is left out."""
    try:  # httpx's own reading, so NO_PROXY means what it means to every httpx client (private, pinned)
        from httpx._utils import get_environment_proxies
    except ImportError:  # a later httpx that moved it: direct, as before proxies were read
        return {}
    found = get_environment_proxies()
    if not any(found.values()):
        return {}
    context = shared_tls()
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {
        pattern: None if url is None else ShardedTransport(proxy=url, ssl_context=context)
        for pattern, url in found.items()
        if url is None or url.startswith(("http://", "https://"))
    }
    return mounts | dict.fromkeys(LOOPBACK)


def make_client(timeout: httpx.Timeout | float = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """The process's shared client; adapters take it as a parameter so tests and the bot share one pool."""
    return httpx.AsyncClient(
        timeout=timeout,
        transport=ShardedTransport(),
        mounts=proxy_mounts(),
        follow_redirects=False,
        cookies=_CookieJar(),
        headers={"Accept-Encoding": ACCEPT_ENCODING},  # not br/zstd, should those packages be installed
    )
