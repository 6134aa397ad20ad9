"""One pooled httpx client for every model call (the retry policy is agent.retry).

Pool limits matter more than anything else for many concurrent sessions: with httpx's default of
100 connections, 200 concurrent sessions queue behind each other (measured in bench/loop_overhead.py),
so the default pool is sized for a few hundred concurrent streams.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar
from typing import Any

import httpcore
import httpx

from agent.inflate import ACCEPT_ENCODING, READABLE, Inflater, encoding_layers
from agent.models.base import ModelError, ModelUnavailableError
from agent.models.net import AsyncioBackend


def timeouts(read: float = 120.0) -> httpx.Timeout:
    """The client's timeouts; ``read`` (``MODEL_TIMEOUT``) is how long a model may send nothing."""
    return httpx.Timeout(connect=10.0, read=read, write=30.0, pool=60.0)


DEFAULT_TIMEOUT = timeouts()
MAX_RESPONSE_BYTES = 128 * 2**20
"""Most bytes of one response body: a server that streamed without end (ignoring ``max_tokens``, or
hostile) took ``agentbot ask`` to 1 GB in 18 s, and the bot, whose turn may last 15 minutes, would have
run out of memory for every server. Past every real answer (a 100k-token reasoning stream is about
25 MB of events) and the largest attachment this client downloads (``ATTACHMENT_MAX_MB`` <= 100)."""


class ResponseRefused(httpx.ReadError):
    """A body this client will not read; reading it again would end the same way."""


class ResponseTooLarge(ResponseRefused):
    """A body passed :data:`MAX_RESPONSE_BYTES` (decoded bytes, whatever the encoding)."""


class ShardedTransport(httpx.AsyncBaseTransport):
    """Spreads requests over many small connection pools, each request to the least busy one.

    httpcore's pool does work proportional to (waiting requests x connections) on every event, so
    one big pool collapses under hundreds of concurrent streams: 200 sessions x 6 calls at 200 ms
    took 44 s with one 512-connection pool, 8.7 s with httpx's default 100, and 2.2 s with 64 pools
    of 4 (bench/loop_overhead.py; ideal 1.2 s, the rest is CPU on 2 cores). It is still one client.
    """

    def __init__(self, shards: int = 64, per_shard: int = 4) -> None:
        limits = httpx.Limits(
            max_connections=per_shard, max_keepalive_connections=per_shard, keepalive_expiry=30
        )
        # One TLS context for all pools: loading the CA bundle 64 times took 2.4 s of blocked start-up.
        ssl_context = httpx.create_ssl_context()
        self._pools = [_transport(ssl_context, limits) for _ in range(max(1, shards))]
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


def _transport(ssl_context: Any, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's own transport, its httpcore pool on :class:`~agent.models.net.AsyncioBackend` (httpcore's
    public ``network_backend`` parameter, which httpx does not pass on): the pool is made as httpx makes
    it (no proxy: an explicit transport never uses the environment's), with that one argument added."""
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport


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


def make_client(timeout: httpx.Timeout | float = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """The process's shared client; adapters take it as a parameter so tests and the bot share one pool."""
    return httpx.AsyncClient(
        timeout=timeout,
        transport=ShardedTransport(),
        follow_redirects=False,
        cookies=_CookieJar(),
        headers={"Accept-Encoding": ACCEPT_ENCODING},  # not br/zstd, should those packages be installed
    )


def transport_error(e: httpx.HTTPError, *, name: str, base_url: str, provider: str) -> ModelError:
    """A timeout or connection failure, said plainly, and retryable."""
    if isinstance(e, httpx.ReadTimeout):
        waited = _read_timeout(e)
        return ModelError(
            f"{name} at {base_url} timed out: nothing for {waited} (ReadTimeout); a model still loading, or a "
            "long prompt on a slow machine, needs a larger MODEL_TIMEOUT; else check that the server runs",
            provider=provider,
            model=name,
            retryable=True,
        )
    setting = (
        f"{provider.upper()}_BASE_URL" if provider in ("openai", "anthropic", "gemini") else "the base URL"
    )
    if isinstance(e, ResponseRefused):
        return ModelUnavailableError(f"{name} at {base_url} {e}", provider=provider, model=name)
    if (tls := tls_problem(e, setting)) is not None:  # no retry mends these: fall back at once
        return ModelUnavailableError(f"{name} at {base_url} {tls}", provider=provider, model=name)
    if isinstance(e, httpx.TimeoutException):
        kind = "timed out"
    elif isinstance(e, httpx.ReadError | httpx.RemoteProtocolError):  # connected, then cut mid-answer
        kind = f"dropped the connection mid-answer ({type(e).__name__})"
    else:
        kind = f"could not be reached ({type(e).__name__})"
    return ModelError(
        f"{name} at {base_url} {kind}: check {setting} and that the server runs",
        provider=provider,
        model=name,
        retryable=True,
    )


def tls_problem(e: BaseException, setting: str) -> str | None:
    """An https:// URL's failure said with what to change ("could not be reached: check that the server
    runs" sent operators to a server that ran): https to a plain-HTTP server (Ollama, llama.cpp and vLLM
    serve http://), or a certificate this machine does not trust (a self-signed or company CA)."""
    said = str(e)
    if "WRONG_VERSION_NUMBER" in said or "record layer failure" in said:
        return f"answered plain HTTP to https://: write http:// in {setting}"
    if "CERTIFICATE_VERIFY_FAILED" in said:
        why = said.partition("certificate verify failed:")[2].partition("(_ssl")[0].strip() or "not trusted"
        return (
            f"has a TLS certificate this machine does not trust ({why}): point the environment variable "
            f"SSL_CERT_FILE (not .env) at the CA bundle that signed it, or check {setting}"
        )
    return None


def _read_timeout(e: httpx.ReadTimeout) -> str:
    try:
        return f"{e.request.extensions['timeout']['read']:g} s"
    except (RuntimeError, KeyError, TypeError, ValueError):
        return "the read timeout"
