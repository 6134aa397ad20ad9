"""fetch_url: one web page as readable text, with its title and final URL for citations.

Every connection goes through the SSRF guard (:mod:`agent.tools.netguard`), redirects are followed by
hand (at most ``max_redirects``) so each hop is checked, the body is streamed, decoded by hand and cut
at ``max_bytes`` decoded bytes (:mod:`agent.tools.decoding`: no decompression bomb gets through), and
only HTML, text and JSON are read (a PDF is refused with a message the model can act on).
Readable text comes from trafilatura in a worker process killed at ``extract_timeout``
(:mod:`agent.tools.extract_pool`); a page too slow to clean up comes back as plain text instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import http.cookiejar
import re
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from typing import Annotated

import httpcore
import httpx
import structlog
from pydantic import Field

from agent.tools import domains, registry
from agent.tools.decoding import ACCEPT_ENCODING, read_decoded
from agent.tools.extract_pool import ExtractionBusy, ExtractionFailed, ExtractorPool
from agent.tools.netguard import DnsResolver, GuardedTransport, LazyClient, NetGuard, Resolver
from agent.tools.registry import Tool, ToolContext, ToolOutput, ToolRefused, TransientToolError, tool

_REDIRECTS = {301, 302, 303, 307, 308}
_HTML = ("text/html", "application/xhtml+xml")
_UNTYPED = ("application/octet-stream", "binary/octet-stream")
"""What file stores (S3) label a file uploaded without a type: a CSV there was refused as unreadable."""
_TEXT_LIKE = ("text/", "application/json", "application/ld+json", "application/xml", "application/rss+xml")


log = structlog.get_logger(__name__)

LOOPBACK_OPEN = (
    "FETCH_ALLOW_LOOPBACK=1: fetch_url and the MCP servers a Discord server adds may reach this host's own "
    "services (127.0.0.1, ::1); a test setting, never for a bot members use"
)


@dataclass(frozen=True, slots=True)
class FetchSettings:
    timeout: float = 20.0
    """Seconds for the whole fetch, redirects included."""
    max_bytes: int = 2_000_000
    """Bytes read from a body; the rest is never downloaded."""
    max_chars: int = 12_000
    """Characters of text returned per call; ``start`` pages through the rest."""
    reader_chars: int = 60_000
    """Characters a reader model (:mod:`agent.reader`) reads per call, when the run has one."""
    max_redirects: int = 5
    allow_loopback: bool = False
    """Tests only: let the guard accept 127.0.0.0/8 and ::1."""
    user_agent: str = "Mozilla/5.0 (compatible; agentbot/0.1; +research assistant)"
    dns_servers: str = ""
    """Name servers the guard asks (``ip[:port]``, comma-separated); empty: ``/etc/resolv.conf``'s."""
    # --- extraction (issue 14.6): in killable worker processes, off the shared thread pool ---
    extract_timeout: float = 10.0
    """Seconds to turn one body into text; at 60% of it the worker gives up on trafilatura and
    returns the page's plain text, and at 100% it is killed and the call fails. Not retried."""
    extract_workers: int = 2
    """Worker processes (pages extracted at once); each is killed at its deadline."""
    # --- fair extraction: a page's deadline starts when a worker takes it; its wait is bounded ---
    extract_wait: float = 30.0
    """Seconds a page may wait for a free extraction worker (shared fairly between servers)."""


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    title: str
    text: str
    body_truncated: bool
    plain: bool = False
    """Extraction was too slow, so the text is all of the page's text, boilerplate included."""
    late: float = 0.0
    """``FETCH_TIMEOUT`` when the body was still arriving then (what came by then was read), else 0."""


FETCHES_PER_SERVER = 4
"""Fetches one server (a tool context's ``namespace``) may have in flight; the rest wait their turn. The
client's connections (and, before lookups moved onto the loop, 16 DNS threads) are shared by every server:
20 fetches of a host that accepts and never answers (or of names whose name server never answers) took them
all for their whole timeout, and every other server's fetch_url timed out behind them, at one server's rate limit without end."""


class _PerServer:
    """One semaphore per server while it has fetches waiting or running; none kept for an idle one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[Hashable, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, server: Hashable | None) -> AsyncIterator[None]:
        if server is None:  # the terminal: one user
            yield
            return
        sem, users = self._slots.setdefault(server, (asyncio.Semaphore(self.limit), [0]))
        users[0] += 1
        try:
            async with sem:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._slots[server]


class PageFetcher:
    """Fetches and extracts pages through a guarded client of its own (never a shared one)."""

    def __init__(
        self,
        settings: FetchSettings,
        *,
        resolver: Resolver | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.settings = settings
        if settings.allow_loopback:  # a security mode is never weakened without a word
            log.warning("ssrf_guard_weakened", reason=LOOPBACK_OPEN)
        # 1 GiB plus 20x the body: a 2 MB table peaked at 200 MB in trafilatura.
        memory_mb = 1024 + 20 * settings.max_bytes // 2**20
        self.extractor = ExtractorPool(
            settings.extract_workers, memory_mb=memory_mb, max_wait=settings.extract_wait
        )
        # A lookup ends with the connect timeout: no thread is held while it waits (netguard.DnsResolver).
        lookups = resolver or DnsResolver(settings.dns_servers, lifetime=min(5.0, settings.timeout))
        self.guard = NetGuard(allow_loopback=settings.allow_loopback, resolver=lookups)
        self.per_server = _PerServer(FETCHES_PER_SERVER)
        self._client = LazyClient(
            lambda: httpx.AsyncClient(
                # No pool-wide cap: a connection being made (its lookup included) holds a pool slot, so
                # 20 let five hostile servers' hanging names (4 each) stall every other server's fetches.
                # Fetches in flight are bounded by FETCHES_PER_SERVER per server and by the run slots.
                transport=GuardedTransport(self.guard, inner=backend, max_connections=None),
                timeout=httpx.Timeout(settings.timeout, connect=min(5.0, settings.timeout)),
                follow_redirects=False,
                trust_env=False,
                cookies=_no_cookies(),  # each fetch carries its own (see _download)
                headers={
                    "User-Agent": settings.user_agent,
                    "Accept": "text/html,text/plain,application/json;q=0.9,*/*;q=0.5",
                    "Accept-Encoding": ACCEPT_ENCODING,
                },
            )
        )

    async def aclose(self) -> None:
        self.extractor.close()
        await self._client.aclose()

    async def fetch(
        self, url: str, policy: domains.DomainPolicy | None = None, *, key: Hashable = ""
    ) -> Page:
        """``policy``: the server's domain rules, checked on every hop like the SSRF guard. ``key``: the
        server asking, so the extraction workers are shared fairly between servers."""
        try:
            target = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError) as e:
            raise ToolRefused(f"not a valid URL: {url!r} ({e})") from e
        deadline = asyncio.get_running_loop().time() + self.settings.timeout
        try:
            async with asyncio.timeout_at(deadline):
                body, charset, kind, final, cut = await self._download(target, policy, deadline)
        except TimeoutError as e:
            raise TransientToolError(f"fetching {url} took longer than {self.settings.timeout:g} s") from e
        return await self._extract(body, charset, kind, final, cut, key)

    async def _extract(
        self, body: bytes, charset: str | None, kind: str, url: str, cut: str, key: Hashable
    ) -> Page:
        """Text from the body in a worker process; its deadline is final (a retry would only be as slow)."""
        limit = self.settings.extract_timeout
        request = {"charset": charset, "kind": kind, "url": url}
        try:
            answer = await self.extractor.extract(request, body, limit, key=key, soft_after=limit * 0.6)
        except ExtractionBusy as e:
            raise ToolRefused(
                f"{url} was downloaded but not read: {e}. Try again later or use another source."
            ) from None
        except ExtractionFailed as e:
            raise ToolRefused(
                f"could not turn {url} into text: {e}; the page is too costly to read. Try another source."
            ) from None
        if "refused" in answer:
            raise ToolRefused(str(answer["refused"]))
        late = self.settings.timeout if cut == "late" else 0.0
        return Page(url, answer["title"], answer["text"], bool(cut), bool(answer["fallback"]), late)

    async def _download(
        self, url: httpx.URL, policy: domains.DomainPolicy | None = None, deadline: float | None = None
    ) -> tuple[bytes, str | None, str, str, str]:
        """The body (with its charset, kind, final URL and why it was cut, see ``read_decoded``). A body
        still arriving near ``deadline`` is kept as far as it came: a page dripping a few bytes a second
        failed at FETCH_TIMEOUT, was fetched again and failed again, holding the run twice as long."""
        client = self._client.get()
        jar = httpx.Cookies()  # this fetch's own: a cookie check between redirects still passes
        for hop in range(self.settings.max_redirects + 1):
            self.guard.check_url(url)
            if policy:
                policy.check(url)
            try:
                async with client.stream("GET", url, headers=_cookie_header(jar, url)) as resp:
                    jar.extract_cookies(resp)
                    if resp.status_code in _REDIRECTS and "location" in resp.headers:
                        if hop == self.settings.max_redirects:
                            break
                        url = resp.url.join(resp.headers["location"])
                        continue
                    _check_status(resp)
                    kind = _content_kind(resp.headers.get("content-type", ""), str(resp.url))
                    limit, at = self.settings.max_bytes, str(resp.url)
                    body, cut = await read_decoded(resp, limit, at, deadline)
                    _sniff(body, resp.headers.get("content-type", ""), at)
                    to = resp.url.join(_refresh_to(body) or "") if kind == "html" else resp.url
                    if (
                        to != resp.url
                        and to.scheme in ("http", "https")
                        and hop < self.settings.max_redirects
                    ):
                        url = to  # a page that only redirects (meta refresh): followed as a redirect
                        continue
                    return body, resp.charset_encoding, kind, at, cut
            except httpx.TimeoutException as e:
                raise TransientToolError(f"timed out fetching {url}") from e
            except (httpx.RemoteProtocolError, httpx.InvalidURL, httpx.ConnectError, httpx.ReadError) as e:
                # httpx resolves a redirect's Location before handing the response over: a target it
                # cannot parse raises RemoteProtocolError, or InvalidURL for ``http:127.0.0.1:80/x``.
                if isinstance(e, httpx.InvalidURL) or "location header" in str(e):
                    raise ToolRefused(
                        f"{url} redirected to an address that is not a valid URL ({e})"
                    ) from None
                raise TransientToolError(f"could not fetch {url}: {type(e).__name__}: {e}") from e
            except httpx.HTTPError as e:
                raise ToolRefused(f"could not fetch {url}: {type(e).__name__}: {e}") from e
        raise ToolRefused(f"too many redirects: gave up after {self.settings.max_redirects} (last: {url})")


def _no_cookies() -> http.cookiejar.CookieJar:
    """The shared client's jar, which keeps nothing. It kept every cookie of every page for the life of
    the process, for every server: a page on evil.blog.test set 300 cookies for all of blog.test, and
    each later fetch of any *.blog.test blog, by anyone, was sent 15 KB of them and refused (HTTP 400);
    two servers' fetches of one site shared its session."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _cookie_header(jar: httpx.Cookies, url: httpx.URL) -> dict[str, str]:
    """The Cookie header ``jar`` (one fetch's cookies) sends to ``url``, if any."""
    probe = httpx.Request("GET", url)
    jar.set_cookie_header(probe)
    return {"Cookie": probe.headers["Cookie"]} if "Cookie" in probe.headers else {}


def _check_status(resp: httpx.Response) -> None:
    code = resp.status_code
    if code == 429 or code >= 500:
        raise TransientToolError(f"HTTP {code} {resp.reason_phrase} from {resp.url.host}")
    if code >= 400:
        raise ToolRefused(f"HTTP {code} {resp.reason_phrase} for {resp.url}")
    if code >= 300:
        raise ToolRefused(f"HTTP {code} without a usable Location header for {resp.url}")


def _pdf(url: str, served_as: str = "") -> ToolRefused:
    return ToolRefused(
        f"{url} is a PDF{served_as}; fetch_url reads only HTML, text and JSON. Look for an HTML version "
        "(an abstract page, a blog post or the publisher's page) instead."
    )


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive"),
)


_REFRESH = re.compile(rb"<meta\s[^>]{0,500}?http-equiv\s*=\s*[\"']?refresh[^>]{0,2000}>", re.I)
"""Bounded: with ``[^>]*`` 16 KB of '<meta http-equiv=refresh ' without a '>' took 4.4 s of the event loop."""
_REFRESH_TO = re.compile(rb"content\s*=\s*[\"']\s*(\d{1,4})(?:\.\d*)?\s*[;,]\s*url\s*=\s*([^\"'>]+)", re.I)


def _refresh_to(body: bytes) -> str | None:
    """Where a ``<meta http-equiv="refresh" content="0;url=…">`` page sends its reader within 10 s:
    Google's result links, shorteners and login walls answer 200 with one, and the model read
    "Redirecting / click here", never the address. A page reloading itself later is no redirect."""
    tag = _REFRESH.search(body[:16_384])
    found = _REFRESH_TO.search(tag.group()) if tag else None
    if found is None or int(found.group(1)) > 10:
        return None
    return html.unescape(found.group(2).decode("utf-8", "replace")).strip().strip("'\"") or None


def _sniff(body: bytes, content_type: str, url: str) -> None:
    """Refuse a PDF or an image a server labels as a page: a PDF sent as text/html was refused as
    "binary data without a content type" (it had one), as text/plain its raw syntax was read as the
    page, and a PNG sent as text/plain reached the model as binary noise."""
    served_as = f" (served as {content_type.split(';', 1)[0].strip() or 'no type'})"
    if body.startswith(b"%PDF-"):
        raise _pdf(url, served_as)
    for magic, what in _MAGIC:
        if body.startswith(magic):
            raise ToolRefused(
                f"{url} is {what}{served_as}: binary data, not a page; fetch_url reads HTML, text and JSON"
            )


def _content_kind(content_type: str, url: str) -> str:
    """'html', 'json' or 'text'; refuses PDFs and binary types with a message the model can act on."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/pdf" or (not ctype and url.lower().endswith(".pdf")):
        raise _pdf(url)
    if ctype in _HTML or ctype in _UNTYPED or not ctype:
        return "html"  # untyped: sniffed (_sniff, then the worker: zero bytes, no tag at all)
    if ctype.endswith("json") or ctype.endswith("+json"):
        return "json"
    if ctype.startswith(_TEXT_LIKE) or ctype.endswith("+xml"):
        return "text"
    raise ToolRefused(f"{url} is {ctype}, which fetch_url cannot read (it reads HTML, text and JSON)")


MAX_TITLE = 300
"""Characters of a page's title shown. A page whose <title> held 100 KB filled the whole result (cut at
FETCH_MAX_CHARS + 1000): the model read neither the URL to cite nor a word of the text."""


def render_page(page: Page, start: int, max_chars: int) -> str:
    """The page as the model sees it: a header, then one window of the text."""
    window, note = registry.text_window(page.text, start, max_chars, "call fetch_url")
    title = page.title if len(page.title) <= MAX_TITLE else f"{page.title[:MAX_TITLE]}… (title cut)"
    lines = [f"Title: {title or '(none)'}", f"URL: {page.url}", *([note] if note else [])]
    if page.late:
        lines.append(f"[the page was still arriving after {page.late:g} s; only what came by then was read]")
    elif page.body_truncated:
        lines.append("[the page was larger than the download limit; only its beginning was read]")
    if page.plain:
        lines.append(
            "[the page was too slow to clean up: this is all of its text, menus and tables included]"
        )
    lines += ["", window or "(no readable text on this page)"]
    return "\n".join(lines)


def server_key(ctx: ToolContext) -> str:
    """Whose turn it is at the extraction workers: the Discord server; a DM's member; '' in
    ``agentbot ask`` (one server)."""
    if ctx.namespace:
        return f"server:{ctx.namespace}"
    return f"user:{ctx.user_id}" if ctx.user_id else ""


def fetch_tools(fetcher: PageFetcher) -> list[Tool]:
    settings = fetcher.settings

    @tool(
        timeout=settings.timeout + settings.extract_wait + settings.extract_timeout + 15,
        max_attempts=2,
        max_output=settings.max_chars + 1000,
    )
    async def fetch_url(
        ctx: ToolContext, url: str, start: Annotated[int, Field(ge=0)] = 0, raw: bool = False
    ) -> ToolOutput:
        """Fetch a web page and return its readable text, title and final URL (cite that URL).

        Reads HTML, plain text and JSON; PDFs and other binary files are refused. Only public
        internet addresses can be fetched. Long pages may come back as notes taken for your task.

        Args:
            url: The http:// or https:// address to read.
            start: Character offset to continue a long page from (given at the end of a cut result).
            raw: Return the page's own text instead of notes on it, when you need its exact wording.
        """
        key = server_key(ctx)
        async with fetcher.per_server.hold(key or None):  # the terminal: no cap
            page = await fetcher.fetch(url, ctx.services.get(domains.SERVICE), key=key)
        text = render_page(page, start, settings.max_chars)
        full = None
        if not raw and len(page.text) - start > settings.max_chars:
            full = render_page(page, start, max(settings.reader_chars, settings.max_chars))
        return ToolOutput(text, sources=[page.url], full_text=full)

    return [fetch_url]
