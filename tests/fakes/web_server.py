"""Local web for the research tools: fake search backends and scripted pages on 127.0.0.1 (real HTTP).

    async with FakeWeb() as web:
        settings = SearchSettings(backend="brave", brave_api_key=web.BRAVE_KEY, brave_url=web.url("/brave/res/v1/web/search"))

Search backends answer in each service's real response shape (SearxNG JSON, Brave ``web.results``,
Tavily ``results``, DuckDuckGo's HTML page with ``uddg`` redirect links and an ad). Pages cover what
fetch_url must handle: an article, plain text, JSON, a PDF, an image, a body far larger than the cap
(the server counts what it actually sent), redirect chains, redirects to forbidden addresses, and 404,
503 and slow answers. Hostile pages too: a decompression bomb (``/bomb``: 1 GiB of zeros in 233 bytes
as ``gzip, gzip, gzip``), a flat table trafilatura needs seconds for (``/table``), a redirect to a URL
httpx cannot parse and a made-up charset. Every request is recorded in ``web.requests``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ARTICLE = """<!doctype html>
<html><head><title>Otters of the Baltic — Field Notes</title>
<meta name="description" content="A field report"></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a> | <a href="/shop">Shop</a></nav>
<article>
<h1>Otters of the Baltic</h1>
<p>The Eurasian otter returned to the Baltic coast in the 1990s after decades of decline caused by
pollution and hunting. Surveys in 2023 counted more than four hundred breeding pairs along the Polish
and Lithuanian shores.</p>
<p>Researchers attribute the recovery to cleaner rivers, the ban on PCB compounds and protected
corridors between wetlands. Otters are now seen regularly in harbours, where they hunt eelpout.</p>
<p>The survey team used camera traps and spraint counts at 212 sites between March and October.</p>
</article>
<footer>Copyright 2024 Coastal Wildlife Trust. Cookie settings. Privacy policy.</footer>
</body></html>"""

SEARXNG_RESULTS = {
    "query": "baltic otters",
    "number_of_results": 0,
    "results": [
        {
            "url": "https://www.example.org/otters?utm_source=searx",
            "title": "Otters of the <b>Baltic</b>",
            "content": "The Eurasian otter returned to the Baltic coast &amp; rivers.",
            "engine": "duckduckgo",
            "publishedDate": "2024-03-05T10:00:00",
            "score": 3.0,
        },
        {
            "url": "https://example.org/otters/",
            "title": "Otters of the Baltic (duplicate)",
            "content": "Same page through another engine.",
            "engine": "bing",
            "publishedDate": None,
        },
        {
            "url": "https://wildlife.example.net/baltic",
            "title": "Baltic wildlife survey",
            "content": "Four hundred breeding pairs counted in 2023.",
            "engine": "google",
            "publishedDate": "2023-11-20T00:00:00Z",
        },
    ],
    "answers": [],
    "infoboxes": [],
    "suggestions": [],
}

BRAVE_RESULTS = {
    "type": "search",
    "query": {"original": "baltic otters"},
    "web": {
        "type": "search",
        "results": [
            {
                "title": "Otters of the Baltic",
                "url": "https://example.org/otters",
                "description": "The <strong>Eurasian otter</strong> returned to the Baltic coast.",
                "page_age": "2024-03-05T10:00:00",
                "age": "March 5, 2024",
                "language": "en",
            },
            {
                "title": "Otter - Wikipedia",
                "url": "https://en.wikipedia.example/wiki/Otter#Baltic",
                "description": "Otters are carnivorous mammals.",
                "age": "2 days ago",
            },
            {
                "title": "Otters again",
                "url": "http://www.example.org/otters",
                "description": "duplicate over http with www",
            },
        ],
    },
}

TAVILY_RESULTS = {
    "query": "baltic otters",
    "answer": None,
    "results": [
        {
            "title": "Baltic otter recovery",
            "url": "https://news.example.com/otters-recover",
            "content": "Otter numbers on the Baltic coast have risen sharply.",
            "score": 0.93,
            "published_date": "Tue, 05 Mar 2024 10:00:00 GMT",
        },
        {
            "title": "Otter facts",
            "url": "https://facts.example.com/otter",
            "content": "Eurasian otters eat fish.",
            "score": 0.71,
        },
    ],
    "response_time": 1.2,
}

DDG_PAGE = """<!DOCTYPE html><html><head><title>baltic otters at DuckDuckGo</title></head><body>
<div class="serp__results"><div id="links" class="results">
<div class="result results_links results_links_deep result--ad">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a"
      href="https://duckduckgo.com/y.js?ad_domain=shop.example&amp;u3=x">Buy otter plush</a></h2>
    <a class="result__snippet" href="https://duckduckgo.com/y.js?u3=x">Cute otters, free shipping.</a>
  </div>
</div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a"
      href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fotters%3Fa%3D1%26b%3D2&amp;rut=abc">Otters of the <b>Baltic</b></a></h2>
    <div class="result__extras"><div class="result__extras__url">
      <a class="result__url" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fotters">example.org/otters</a>
      <span>&nbsp; &nbsp; 2024-03-05T00:00:00.0000000</span>
    </div></div>
    <a class="result__snippet" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fotters">The Eurasian <b>otter</b> returned to the Baltic coast.</a>
  </div>
</div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://wildlife.example.net/baltic">Baltic wildlife survey</a></h2>
    <a class="result__snippet" href="https://wildlife.example.net/baltic">Four hundred breeding pairs.</a>
  </div>
</div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a"
      href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fotters%3Fb%3D2%26a%3D1%26utm_campaign%3Dx&amp;rut=def">Otters (same page)</a></h2>
    <a class="result__snippet" href="#">Duplicate with reordered parameters.</a>
  </div>
</div>
</div></div></body></html>"""

DDG_BOT_CHECK = """<!DOCTYPE html><html><body><form id="challenge-form" action="//duckduckgo.com/anomaly.js">
<div class="anomaly-modal__title">Unfortunately, bots use DuckDuckGo too.</div></form></body></html>"""


@functools.cache
def gzip_bomb(mib: int, layers: int, unit: bytes = b"\0") -> bytes:
    """``mib`` MiB of ``unit`` repeated, gzipped ``layers`` times; built in ~0.3 s for 1 GiB.

    The inner layer repeats one full-flushed deflate block of 1 MiB (a valid stream: each block stands
    alone), so the GiB is never compressed; its CRC is computed over the MiB ``mib`` times.
    """
    block = (unit * (2**20 // len(unit) + 1))[: 2**20]
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = squeeze.compress(block) + squeeze.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    end = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush(zlib.Z_FINISH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    data = header + piece * mib + end + struct.pack("<II", crc, (mib * 2**20) & 0xFFFFFFFF)
    for _ in range(layers - 1):
        squeeze = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        data = squeeze.compress(data) + squeeze.flush()
    return data


@functools.cache
def flat_table(kb: int) -> bytes:
    """One table row of ``kb`` KB of ``<td>`` cells: trafilatura is quadratic on it (400 KB: ~3 s)."""
    cells = "".join(f"<td>cell {i}</td>" for i in range(kb * 1024 // 17))
    return f"<html><head><title>Flat table</title></head><body><table><tr>{cells}</tr></table></body></html>".encode()


def _static(make: Any) -> Any:
    """An async handler answering every request with ``make()`` (aiohttp wants coroutine handlers)."""

    async def handler(_: web.Request) -> web.StreamResponse:
        return make()

    return handler


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeWeb:
    BRAVE_KEY: str = "BSA-test-key-0123456789abcdef"
    TAVILY_KEY: str = "tvly-test-key-0123456789abcdef"
    requests: list[Recorded] = field(default_factory=list)
    big_bytes_sent: int = 0
    host: str = "127.0.0.1"
    _runner: web.AppRunner | None = None
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def __aenter__(self) -> FakeWeb:
        app = web.Application()
        app.middlewares.append(self._record)
        r = app.router
        r.add_get("/searxng/search", self.searxng)
        r.add_get("/searxng-locked/search", _static(lambda: web.Response(status=403, text="403 Forbidden")))
        r.add_get("/brave/res/v1/web/search", self.brave)
        r.add_post("/tavily/search", self.tavily)
        r.add_post("/ddg/html/", self.ddg)
        r.add_get(
            "/article", _static(lambda: web.Response(text=ARTICLE, content_type="text/html", charset="utf-8"))
        )
        r.add_get(
            "/plain", _static(lambda: web.Response(text="line one\nline two\n", content_type="text/plain"))
        )
        r.add_get(
            "/data.json", _static(lambda: web.json_response({"otters": 412, "years": [2021, 2022, 2023]}))
        )
        r.add_get(
            "/paper.pdf",
            _static(lambda: web.Response(body=b"%PDF-1.7\n%...", content_type="application/pdf")),
        )
        r.add_get(
            "/image",
            _static(lambda: web.Response(body=b"\x89PNG\r\n\x1a\n" + bytes(100), content_type="image/png")),
        )
        r.add_get("/long", self.long_page)
        r.add_get("/big", self.big)
        r.add_get("/redirect/{n}", self.redirect_chain)
        r.add_get("/redirect-to", self.redirect_to)
        r.add_get("/raw-redirect", self.raw_redirect)
        r.add_get("/status/{code}", self.status)
        r.add_get("/slow", self.slow)
        r.add_get("/bomb", self.bomb)
        r.add_get("/gzip-article", self.gzip_article)
        r.add_get("/table", self.table)
        r.add_get(
            "/bogus-charset",
            _static(
                lambda: web.Response(body=b"hello", headers={"Content-Type": "text/plain; charset=bogus"})
            ),
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        return await handler(request)

    # ------------------------------------------------------------ search backends

    async def searxng(self, request: web.Request) -> web.Response:
        if request.query.get("format") != "json":
            return web.Response(status=403, text="403 Forbidden")
        return web.json_response({**SEARXNG_RESULTS, "query": request.query.get("q", "")})

    async def brave(self, request: web.Request) -> web.Response:
        token = request.headers.get("X-Subscription-Token", "")
        if token != self.BRAVE_KEY:
            # Real APIs sometimes echo what they got: the tool must not pass that on.
            return web.json_response(
                {
                    "type": "ErrorResponse",
                    "error": {"code": "SUBSCRIPTION_TOKEN_INVALID", "detail": f"bad token {token}"},
                },
                status=401,
            )
        if request.query.get("q") == "overload":
            return web.json_response({"error": f"rate limited for {token}"}, status=429)
        return web.json_response(BRAVE_RESULTS)

    async def tavily(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.TAVILY_KEY}":
            return web.json_response(
                {"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=401
            )
        body = json.loads(await request.read())
        return web.json_response({**TAVILY_RESULTS, "query": body.get("query")})

    async def ddg(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("q") == "botcheck":
            return web.Response(status=202, text=DDG_BOT_CHECK, content_type="text/html")
        if form.get("q") == "nothing":
            return web.Response(
                text='<html><body><div class="no-results">No results.</div></body></html>',
                content_type="text/html",
            )
        return web.Response(text=DDG_PAGE, content_type="text/html")

    # ------------------------------------------------------------ pages

    async def long_page(self, request: web.Request) -> web.Response:
        paras = "".join(
            f"<p>Paragraph {i}: " + "otters swim in cold water. " * 8 + "</p>" for i in range(200)
        )
        return web.Response(
            text=f"<html><head><title>Long</title></head><body><article>{paras}</article></body></html>",
            content_type="text/html",
        )

    async def big(self, request: web.Request) -> web.StreamResponse:
        """50 MB of HTML, streamed; counts what actually left the server."""
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        resp.content_length = 50 * 1024 * 1024
        await resp.prepare(request)
        chunk = b"<p>" + b"x" * (64 * 1024 - 7) + b"</p>\n"
        try:
            await resp.write(b"<html><head><title>Big</title></head><body>")
            for _ in range(50 * 16):
                await resp.write(chunk)
                self.big_bytes_sent += len(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def redirect_chain(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        target = "/article" if n <= 0 else f"/redirect/{n - 1}"
        raise web.HTTPFound(target)

    async def redirect_to(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def raw_redirect(self, request: web.Request) -> web.Response:
        """A Location header exactly as given (aiohttp's HTTPFound would normalise or reject it)."""
        return web.Response(status=302, headers={"Location": request.query["url"]})

    async def status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code}")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late", content_type="text/plain")

    async def bomb(self, request: web.Request) -> web.Response:
        """``?layers=3&mib=1024&fill=zero|html&enc=...``: the body, and the Content-Encoding it claims."""
        layers = int(request.query.get("layers", "3"))
        unit = b"<p>otters swim</p>\n" if request.query.get("fill") == "html" else b"\0"
        body = gzip_bomb(int(request.query.get("mib", "1024")), layers, unit)
        encoding = request.query.get("enc") or ", ".join(["gzip"] * layers)
        return web.Response(body=body, headers={"Content-Type": "text/html", "Content-Encoding": encoding})

    async def gzip_article(self, request: web.Request) -> web.Response:
        body = zlib.compress(ARTICLE.encode(), wbits=zlib.MAX_WBITS | 16)
        return web.Response(body=body, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})

    async def table(self, request: web.Request) -> web.Response:
        body = flat_table(int(request.query.get("kb", "1024")))
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)
