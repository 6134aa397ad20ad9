"""web_search: one query against a configured backend, results normalised, deduplicated and cut to N.

Backends (``SEARCH_BACKEND``): ``searxng`` (a self-hosted SearxNG's JSON API), ``brave`` (Brave Search
API), ``tavily`` (Tavily API), ``duckduckgo`` (no key: DuckDuckGo's HTML endpoint, parsed with lxml
through trafilatura's parser). DuckDuckGo is the default because it needs nothing, but it is not
dependable: it is unofficial, rate-limits automated clients and answers some of them with a bot check,
which this tool reports as such. A bot serving a community should use SearxNG or an API key.

Search backends are trusted operator configuration (SearxNG often runs on localhost), so they do not go
through the fetch SSRF guard. API keys travel in headers only, and are registered with
:func:`agent.logs.register_secret` and scrubbed from every error text, so they never reach logs or the
model.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from itertools import islice
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import Field

from agent.logs import redact
from agent.models.http import ResponseRefused
from agent.tools.netguard import LazyClient
from agent.tools.registry import Tool, ToolContext, ToolOutput, ToolRefused, TransientToolError, tool
from agent.tools.safe_names import unsafe_char
from agent.tools.search_answers import SearchFailed, json_object, raise_for_status, send

log = logging.getLogger(__name__)

BackendName = Literal["searxng", "brave", "tavily", "duckduckgo"]
_DDG_BOT_CHECK = re.compile(r"anomaly-modal|anomaly\.js|challenge-form", re.I)
_TRACKING = re.compile(r"^(utm_\w+|fbclid|gclid|msclkid|mc_cid|mc_eid|ref_src|igshid)$", re.I)


@dataclass(frozen=True, slots=True)
class SearchSettings:
    backend: BackendName = "duckduckgo"
    searxng_url: str | None = None
    brave_api_key: str | None = None
    brave_url: str = "https://api.search.brave.com/res/v1/web/search"
    tavily_api_key: str | None = None
    tavily_url: str = "https://api.tavily.com/search"
    duckduckgo_url: str = "https://html.duckduckgo.com/html/"
    max_results: int = 8
    """Most results one call may return (the model asks for up to this many)."""
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str
    date: str | None = None


Backend = Callable[[httpx.AsyncClient, SearchSettings, str, int], Awaitable[list[SearchResult]]]


# ---------------------------------------------------------------- normalising


def normalise_url(url: str) -> str:
    """The key results are deduplicated on: scheme, 'www.', default port, fragment, tracking and order
    of query parameters and a trailing slash do not make a different page."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower().removeprefix("www.")
    port = parts.port
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    query = urlencode(
        sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING.match(k))
    )
    path = parts.path.rstrip("/") or ""
    return urlunsplit(("", netloc, path, query, ""))


def _clean(text: Any) -> str:
    """Plain text from a snippet that may hold tags (<strong>) and entities."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = str(text)  # a site titled "2024" comes through some engines as a number
    if not text or not isinstance(text, str):
        return ""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", text))).strip()


def _date(value: Any) -> str | None:
    """An ISO date (YYYY-MM-DD) when the backend gave a parseable one, else its own text, else None."""
    if not value or not isinstance(value, str):
        return None
    value = value.strip()
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        pass
    for fmt in ("%a, %d %b %Y %H:%M:%S %Z", "%a, %d %b %Y %H:%M:%S %z", "%B %d, %Y", "%d %b %Y"):
        try:
            return dt.datetime.strptime(value, fmt).date().isoformat()
        except ValueError:
            continue
    return value[:40]


def shown_url(url: str) -> str:
    """``url`` with whitespace, ``<>"`` and invisible or control characters percent-encoded: a result URL
    is shown as ``<url>`` in threads, and ``>`` plus a line break put a masked link in the bot's voice.
    A host that is not ASCII is shown in its ASCII form (:func:`_ascii_host`)."""
    url = _ascii_host(url.strip())
    return "".join(quote(ch) if ch.isspace() or ch in '<>"`' or unsafe_char(ch) else ch for ch in url)


def _ascii_host(url: str) -> str:
    """``url`` with a host that is not ASCII in its IDNA form, as fetch_url's sources (httpx) show it:
    a search result on "аpple.com" (a Cyrillic а) was listed in the bot's sources reading as apple.com."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a port out of range, a broken IPv6 host: dropped by the caller or shown as is
        return url
    if host.isascii():
        return url
    try:
        shown = httpx.URL(f"http://{host}/").raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError):  # fullwidth letters: IDNA 2003 maps them to ASCII
        try:
            shown = host.encode("idna").decode("ascii")
        except UnicodeError:
            shown = quote(host, safe=".-")
    user = parts.netloc.rpartition("@")[0]
    netloc = (f"{user}@" if "@" in parts.netloc else "") + shown + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


MAX_RAW = 100
"""Results read from one answer (the tool shows at most 20): a backend's 25,000 results (within its 4 MiB)
were each cleaned, normalised and de-duplicated on the event loop, 0.65 s a search (DuckDuckGo's, 0.85 s)."""
MAX_URL = 2048
MAX_TITLE = 200
"""A result's URL longer than MAX_URL is dropped and its title cut at MAX_TITLE: one result with a 100 KB
title (or URL) from a backend filled the whole web_search output, and the model saw no other result."""


def dedupe(results: list[SearchResult], limit: int) -> list[SearchResult]:
    first: dict[str, SearchResult] = {}
    for r in results:
        if r.url.startswith(("http://", "https://")) and len(r.url) <= MAX_URL:
            try:
                key = normalise_url(r.url)
            except ValueError:  # a port out of range, a broken IPv6 host: not a page to read
                continue
            first.setdefault(key, replace(r, url=shown_url(r.url)))
            if len(first) >= limit:
                break
    return list(first.values())[:limit]


# ---------------------------------------------------------------- backends


def _results(items: Any, snippet: str, *dates: str) -> list[SearchResult]:
    """Results from a JSON API's list of result objects: title, url, the ``snippet`` key, and the
    first of the ``dates`` keys that holds a date."""
    return [
        SearchResult(
            _clean(r.get("title")),
            str(r.get("url", "")),
            _clean(r.get(snippet)),
            next(filter(None, (_date(r.get(d)) for d in dates)), None),
        )
        for r in islice(items or (), MAX_RAW)
        if isinstance(r, dict)
    ]


async def search_searxng(
    client: httpx.AsyncClient, s: SearchSettings, query: str, n: int
) -> list[SearchResult]:
    if not s.searxng_url:
        raise SearchFailed("SEARCH_BACKEND is searxng but SEARXNG_URL is not set")
    url = s.searxng_url.rstrip("/") + "/search"
    resp = await send(
        client, "GET", url, params={"q": query, "format": "json", "pageno": 1}, timeout=s.timeout
    )
    raise_for_status(resp, "SearxNG", ": enable the json format under search.formats in its settings.yml")
    return _results(json_object(resp, "SearxNG").get("results"), "content", "publishedDate")


async def search_brave(
    client: httpx.AsyncClient, s: SearchSettings, query: str, n: int
) -> list[SearchResult]:
    if not s.brave_api_key:
        raise SearchFailed("SEARCH_BACKEND is brave but BRAVE_API_KEY is not set")
    resp = await send(
        client,
        "GET",
        s.brave_url,
        params={"q": query, "count": min(20, max(n * 2, n))},
        headers={"X-Subscription-Token": s.brave_api_key, "Accept": "application/json"},
        timeout=s.timeout,
    )
    raise_for_status(resp, "Brave", ": check BRAVE_API_KEY")
    return _results(
        (json_object(resp, "Brave").get("web") or {}).get("results"), "description", "page_age", "age"
    )


async def search_tavily(
    client: httpx.AsyncClient, s: SearchSettings, query: str, n: int
) -> list[SearchResult]:
    if not s.tavily_api_key:
        raise SearchFailed("SEARCH_BACKEND is tavily but TAVILY_API_KEY is not set")
    resp = await send(
        client,
        "POST",
        s.tavily_url,
        json={"query": query, "max_results": min(20, max(n * 2, n)), "search_depth": "basic"},
        headers={"Authorization": f"Bearer {s.tavily_api_key}"},
        timeout=s.timeout,
    )
    raise_for_status(resp, "Tavily", ": check TAVILY_API_KEY")
    return _results(json_object(resp, "Tavily").get("results"), "content", "published_date")


def _ddg_target(href: str) -> str:
    """DuckDuckGo wraps result links as //duckduckgo.com/l/?uddg=<the real URL>."""
    if href.startswith("//"):
        href = "https:" + href
    parts = urlsplit(href)
    if parts.path.startswith("/l/") and "uddg" in (qs := parse_qs(parts.query)):
        return qs["uddg"][0]
    return href


def parse_duckduckgo(page: str) -> list[SearchResult]:
    from trafilatura.utils import load_html  # here: importing trafilatura is 85 ms of every CLI start

    tree = load_html(page)
    if tree is None:
        return []
    results = []
    for div in tree.xpath('//div[contains(concat(" ", normalize-space(@class), " "), " result ")]'):
        if len(results) >= MAX_RAW:
            break
        classes = div.get("class", "")
        if "result--ad" in classes:
            continue
        links = div.xpath('.//a[contains(@class, "result__a")]')
        if not links:
            continue
        url = _ddg_target(links[0].get("href", ""))
        if urlsplit(url).hostname in ("duckduckgo.com", "www.duckduckgo.com"):
            continue  # an ad or an internal link
        snippet = div.xpath('.//*[contains(@class, "result__snippet")]')
        extras = div.xpath('.//div[contains(@class, "result__extras__url")]/span[last()]')
        date = _date(extras[0].text_content().strip()) if extras else None
        results.append(
            SearchResult(
                _clean(links[0].text_content()),
                url,
                _clean(snippet[0].text_content() if snippet else ""),
                date,
            )
        )
    return results


async def search_duckduckgo(
    client: httpx.AsyncClient, s: SearchSettings, query: str, n: int
) -> list[SearchResult]:
    resp = await send(
        client,
        "POST",
        s.duckduckgo_url,
        data={"q": query, "b": ""},
        headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
        timeout=s.timeout,
    )
    if resp.status_code == 202 or _DDG_BOT_CHECK.search(resp.text[:50_000]):
        raise SearchFailed(
            "DuckDuckGo answered with a bot check instead of results, so web search is unavailable for now. "
            "Try fetch_url on a site you know covers the topic. (Operators: set SEARCH_BACKEND to searxng, "
            "brave or tavily for dependable search.)"
        )
    raise_for_status(resp, "DuckDuckGo")
    return parse_duckduckgo(resp.text)


BACKENDS: dict[str, Backend] = {
    "searxng": search_searxng,
    "brave": search_brave,
    "tavily": search_tavily,
    "duckduckgo": search_duckduckgo,
}


async def run_search(
    client: httpx.AsyncClient, settings: SearchSettings, query: str, n: int
) -> list[SearchResult]:
    """Search, normalise, dedupe, cut to ``n``. Errors carry no secret (keys are scrubbed)."""
    backend = BACKENDS[settings.backend]
    try:
        raw = await backend(client, settings, query, n)
    except (ToolRefused, TransientToolError) as e:
        said = _scrub(str(e), settings)
        log.warning("web search failed: backend=%s error=%s", settings.backend, said)
        if isinstance(e, TransientToolError):
            raise TransientToolError(said, retry_after=e.retry_after) from None
        raise type(e)(said) from None
    except httpx.TimeoutException:
        raise TransientToolError(
            f"{settings.backend} search timed out after {settings.timeout:g} s"
        ) from None
    except ResponseRefused as e:  # a bomb or an endless body: asking again gets the same
        raise SearchFailed(_scrub(f"{settings.backend} search failed: {e}", settings)) from None
    except httpx.HTTPError as e:
        msg = _scrub(f"{settings.backend} search failed: {type(e).__name__}: {e}", settings)
        log.warning("web search failed: %s", msg)
        raise TransientToolError(msg) from None
    return dedupe(raw, n)


def _scrub(text: str, settings: SearchSettings) -> str:
    for secret in filter(None, (settings.brave_api_key, settings.tavily_api_key)):
        text = text.replace(secret, "***")
    return redact(text)


def render_results(query: str, results: list[SearchResult]) -> str:
    if not results:
        return f"No results for {query!r}. Try other words, or a broader query."
    lines = []
    for i, r in enumerate(results, 1):
        title = r.title if len(r.title) <= MAX_TITLE else f"{r.title[:MAX_TITLE]}…"
        lines.append(f"{i}. {title or '(untitled)'}")
        lines.append(f"   {r.url}")
        snippet = f"({r.date}) {r.snippet}" if r.date else r.snippet
        if snippet:
            lines.append(f"   {snippet[:400]}")
    return "\n".join(lines)


def search_tools(settings: SearchSettings, client: LazyClient) -> list[Tool]:
    top = max(1, settings.max_results)

    # Room for every result the operator allows (a title, a URL, 400 characters of snippet each): a
    # fixed 6,000 cut SEARCH_MAX_RESULTS=20 after 11 results, while the run listed all 20 as sources.
    @tool(timeout=settings.timeout * 2 + 5, max_output=max(6000, top * 1000))
    async def web_search(
        query: Annotated[str, Field(min_length=1, max_length=400)],
        ctx: ToolContext,
        max_results: Annotated[int, Field(ge=1, le=20)] = min(5, top),
    ) -> ToolOutput:
        """Search the web. Returns numbered results with title, URL, date when known and a snippet.

        Snippets are short: fetch_url the promising results before relying on them.

        Args:
            query: What to search for, as you would type it into a search engine.
            max_results: How many results to return.
        """
        max_results = min(max_results, top)
        shared = ctx.services.get("http")
        http = shared if isinstance(shared, httpx.AsyncClient) and not shared.is_closed else client.get()
        results = await run_search(http, settings, query.strip(), max_results)
        return ToolOutput(render_results(query, results), sources=[r.url for r in results])

    return [web_search]
