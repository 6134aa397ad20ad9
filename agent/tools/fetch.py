"""fetch_url: one web page as readable text, with its title and final URL for citations.

Every connection goes through the SSRF guard (:mod:`agent.tools.netguard`), redirects are followed by
hand (at most ``max_redirects``) so each hop is checked, the body is streamed and cut at ``max_bytes``,
and only HTML, text and JSON are read (a PDF is refused with a message the model can act on).
Readable text comes from trafilatura (in a thread: it is CPU work).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass
from typing import Annotated

import httpcore
import httpx
import trafilatura
from pydantic import Field

from agent.tools import domains
from agent.tools.netguard import GuardedTransport, LazyClient, NetGuard, Resolver
from agent.tools.registry import Tool, ToolContext, ToolOutput, ToolRefused, TransientToolError, tool

_REDIRECTS = {301, 302, 303, 307, 308}
_HTML = ("text/html", "application/xhtml+xml")
_TEXT_LIKE = ("text/", "application/json", "application/ld+json", "application/xml", "application/rss+xml")


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


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    title: str
    text: str
    content_type: str
    body_truncated: bool


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
        self.guard = NetGuard(allow_loopback=settings.allow_loopback, resolver=resolver)
        self._client = LazyClient(
            lambda: httpx.AsyncClient(
                transport=GuardedTransport(self.guard, inner=backend),
                timeout=httpx.Timeout(settings.timeout, connect=min(5.0, settings.timeout)),
                follow_redirects=False,
                trust_env=False,
                headers={
                    "User-Agent": settings.user_agent,
                    "Accept": "text/html,text/plain,application/json;q=0.9,*/*;q=0.5",
                },
            )
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, policy: domains.DomainPolicy | None = None) -> Page:
        """``policy``: the server's domain rules, checked on every hop like the SSRF guard."""
        try:
            target = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError) as e:
            raise ToolRefused(f"not a valid URL: {url!r} ({e})") from e
        try:
            async with asyncio.timeout(self.settings.timeout):
                return await self._fetch(target, policy)
        except TimeoutError as e:
            raise TransientToolError(f"fetching {url} took longer than {self.settings.timeout:g} s") from e

    async def _fetch(self, url: httpx.URL, policy: domains.DomainPolicy | None = None) -> Page:
        client = self._client.get()
        for hop in range(self.settings.max_redirects + 1):
            self.guard.check_url(url)
            if policy:
                policy.check(url)
            try:
                async with client.stream("GET", url) as resp:
                    if resp.status_code in _REDIRECTS and "location" in resp.headers:
                        if hop == self.settings.max_redirects:
                            break
                        url = resp.url.join(resp.headers["location"])
                        continue
                    _check_status(resp)
                    kind = _content_kind(resp.headers.get("content-type", ""), str(resp.url))
                    body, truncated = await _read_capped(resp, self.settings.max_bytes)
                    charset = resp.charset_encoding
                    final = str(resp.url)
            except httpx.TimeoutException as e:
                raise TransientToolError(f"timed out fetching {url}") from e
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                raise TransientToolError(f"could not fetch {url}: {type(e).__name__}: {e}") from e
            except httpx.HTTPError as e:
                raise ToolRefused(f"could not fetch {url}: {type(e).__name__}: {e}") from e
            title, text = await asyncio.to_thread(_extract, body, charset, kind, final)
            return Page(final, title, text, kind, truncated)
        raise ToolRefused(f"too many redirects: gave up after {self.settings.max_redirects} (last: {url})")


def _check_status(resp: httpx.Response) -> None:
    code = resp.status_code
    if code == 429 or code >= 500:
        raise TransientToolError(f"HTTP {code} {resp.reason_phrase} from {resp.url.host}")
    if code >= 400:
        raise ToolRefused(f"HTTP {code} {resp.reason_phrase} for {resp.url}")
    if code >= 300:
        raise ToolRefused(f"HTTP {code} without a usable Location header for {resp.url}")


def _content_kind(content_type: str, url: str) -> str:
    """'html', 'json' or 'text'; refuses PDFs and binary types with a message the model can act on."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/pdf" or (not ctype and url.lower().endswith(".pdf")):
        raise ToolRefused(
            f"{url} is a PDF; fetch_url reads only HTML, text and JSON. Look for an HTML version "
            "(an abstract page, a blog post or the publisher's page) instead."
        )
    if ctype in _HTML or not ctype:
        return "html"
    if ctype.endswith("json") or ctype.endswith("+json"):
        return "json"
    if ctype.startswith(_TEXT_LIKE) or ctype.endswith("+xml"):
        return "text"
    raise ToolRefused(f"{url} is {ctype}, which fetch_url cannot read (it reads HTML, text and JSON)")


async def _read_capped(resp: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes, then stop: the rest of a huge body is never downloaded."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _extract(body: bytes, charset: str | None, kind: str, url: str) -> tuple[str, str]:
    if kind != "html":
        text = body.decode(charset or "utf-8", errors="replace")
        if kind == "json":
            with contextlib.suppress(ValueError):
                text = json.dumps(json.loads(text), indent=1, ensure_ascii=False)
        return "", text.strip()
    if b"\0" in body[:1024]:
        raise ToolRefused(f"{url} sent binary data without a content type")
    text = trafilatura.extract(
        body, url=url, include_comments=False, include_tables=True, favor_recall=True, deduplicate=True
    )
    meta = trafilatura.extract_metadata(body)
    title = (meta.title if meta and meta.title else "") or _title_tag(body)
    if not text:
        text = trafilatura.html2txt(body) or ""
    return title.strip(), text.strip()


def _title_tag(body: bytes) -> str:
    m = re.search(rb"<title[^>]*>(.*?)</title>", body[:200_000], re.I | re.S)
    return m.group(1).decode("utf-8", errors="replace").strip() if m else ""


def render_page(page: Page, start: int, max_chars: int) -> str:
    """The page as the model sees it: a header, then one window of the text."""
    total = len(page.text)
    start = min(max(start, 0), total)
    window = page.text[start : start + max_chars]
    lines = [f"Title: {page.title or '(none)'}", f"URL: {page.url}"]
    end = start + len(window)
    if start or end < total:
        more = f"; call fetch_url again with start={end} for more" if end < total else ""
        lines.append(f"[characters {start}-{end} of {total}{more}]")
    if page.body_truncated:
        lines.append("[the page was larger than the download limit; only its beginning was read]")
    lines += ["", window or "(no readable text on this page)"]
    return "\n".join(lines)


def fetch_tools(fetcher: PageFetcher) -> list[Tool]:
    settings = fetcher.settings

    @tool(timeout=settings.timeout + 15, max_attempts=2, max_output=settings.max_chars + 1000)
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
        page = await fetcher.fetch(url, ctx.services.get(domains.SERVICE))
        text = render_page(page, start, settings.max_chars)
        full = None
        if not raw and len(page.text) - start > settings.max_chars:
            full = render_page(page, start, max(settings.reader_chars, settings.max_chars))
        return ToolOutput(text, sources=[page.url], full_text=full)

    return [fetch_url]
