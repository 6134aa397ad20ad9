"""What a search service answered, read as web_search reads it: within a size bound, its status said.

A public SearxNG instance is anyone's server, so its answer is read to :data:`MAX_ANSWER_BYTES` and no
further; an error status becomes a message naming the setting to check, never "not JSON".
"""

from __future__ import annotations

from typing import Any

import httpx

from agent.retry import parse_retry_after
from agent.tools.registry import ToolRefused, TransientToolError


class SearchFailed(ToolRefused):
    """The backend answered but not with results (bad key, bot check, misconfiguration)."""


MAX_ANSWER_BYTES = 4 * 2**20
"""Most bytes of one search answer read (a results page is tens of KB; a public SearxNG instance is
anyone's server, and one that never stops answering was read whole)."""


async def send(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
    """The backend's answer, read but never past :data:`MAX_ANSWER_BYTES` decoded bytes."""
    async with client.stream(method, url, **kw) as resp:
        body = bytearray()
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                host = resp.url.host
                raise SearchFailed(f"the search service at {host} answered with more than 4 MiB; gave up")
    drop = {"content-encoding", "content-length", "transfer-encoding"}  # the body is already decoded
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in drop]
    return httpx.Response(resp.status_code, headers=headers, content=bytes(body), request=resp.request)


def json_object(resp: httpx.Response, backend: str) -> Any:
    try:
        data = resp.json()
    except (ValueError, RecursionError) as e:
        raise SearchFailed(f"{backend} answered with something that is not JSON") from e
    if not isinstance(data, dict):
        raise SearchFailed(f"{backend} answered with JSON that is not a results object")
    return data


_URL_SETTING = {"SearxNG": "SEARXNG_URL", "Brave": "BRAVE_SEARCH_URL", "Tavily": "TAVILY_SEARCH_URL"}


def raise_for_status(resp: httpx.Response, backend: str, hint: str = "") -> None:
    code = resp.status_code
    if code == 429 or code >= 500:
        raise TransientToolError(
            f"{backend} search is unavailable (HTTP {code}); try again shortly",
            retry_after=parse_retry_after(resp.headers),
        )
    if code in (401, 403):
        raise SearchFailed(f"{backend} search refused the request (HTTP {code}){hint}")
    if code >= 400:
        raise SearchFailed(f"{backend} search failed (HTTP {code})")
    if 300 <= code < 400:
        # Not followed: a key in a header would go along. It read as "answered with something that is not
        # JSON", sending the operator of an http:// SEARXNG_URL that moves to https:// to its formats.
        to = resp.headers.get("location", "")[:300] or "no address"
        setting = _URL_SETTING.get(backend, "DUCKDUCKGO_URL")
        raise SearchFailed(f"{backend} search answered HTTP {code}, a redirect to {to}: set {setting} there")
