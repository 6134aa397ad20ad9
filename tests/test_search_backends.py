"""web_search against local fakes of SearxNG, Brave, Tavily and DuckDuckGo (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from agent.config import ConfigError
from agent.messages import ToolCall
from agent.tools.netguard import LazyClient
from agent.tools.registry import ToolContext, ToolRegistry, TransientToolError
from agent.tools.research import ResearchToolSettings
from agent.tools.web_search import SearchFailed, SearchSettings, normalise_url, run_search, search_tools
from tests.fakes.web_server import FakeWeb


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


def settings_for(web: FakeWeb, backend: str) -> SearchSettings:
    return SearchSettings(
        backend=backend,  # type: ignore[arg-type]
        searxng_url=web.url("/searxng"),
        brave_api_key=web.BRAVE_KEY,
        brave_url=web.url("/brave/res/v1/web/search"),
        tavily_api_key=web.TAVILY_KEY,
        tavily_url=web.url("/tavily/search"),
        duckduckgo_url=web.url("/ddg/html/"),
        timeout=5,
    )


async def call(tools_settings: SearchSettings, args: dict[str, object], http: httpx.AsyncClient):
    registry = ToolRegistry(search_tools(tools_settings, LazyClient(lambda: http)))
    ctx = ToolContext(session_id="s", namespace="g1", services={"http": http})
    return await registry.execute(ToolCall("c1", "web_search", json.dumps(args)), ctx)


async def test_search_searxng_results_are_normalised_and_deduplicated(
    web: FakeWeb, client: httpx.AsyncClient
) -> None:
    results = await run_search(client, settings_for(web, "searxng"), "baltic otters", 10)
    assert [r.url for r in results] == [
        "https://www.example.org/otters?utm_source=searx",
        "https://wildlife.example.net/baltic",
    ]
    first = results[0]
    assert first.title == "Otters of the Baltic"  # tags stripped
    assert first.snippet == "The Eurasian otter returned to the Baltic coast & rivers."  # entities decoded
    assert first.date == "2024-03-05"
    assert results[1].date == "2023-11-20"
    sent = web.requests[-1]
    assert sent.query == {"q": "baltic otters", "format": "json", "pageno": "1"}


async def test_search_searxng_without_json_format_explains_the_fix(
    web: FakeWeb, client: httpx.AsyncClient
) -> None:
    s = replace(settings_for(web, "searxng"), searxng_url=web.url("/searxng-locked"))
    with pytest.raises(SearchFailed, match=r"HTTP 403.*enable the json format under search\.formats"):
        await run_search(client, s, "q", 5)


async def test_search_brave_uses_header_key_and_dedupes_www_and_http(
    web: FakeWeb, client: httpx.AsyncClient
) -> None:
    results = await run_search(client, settings_for(web, "brave"), "baltic otters", 10)
    assert [r.url for r in results] == [
        "https://example.org/otters",
        "https://en.wikipedia.example/wiki/Otter#Baltic",
    ]
    assert results[0].snippet == "The Eurasian otter returned to the Baltic coast."
    assert results[0].date == "2024-03-05"
    assert results[1].date == "2 days ago"  # a relative age is kept as the backend's own words
    sent = web.requests[-1]
    assert sent.headers["X-Subscription-Token"] == web.BRAVE_KEY
    assert web.BRAVE_KEY not in json.dumps(sent.query)


async def test_search_tavily_posts_bearer_key_and_parses_dates(
    web: FakeWeb, client: httpx.AsyncClient
) -> None:
    results = await run_search(client, settings_for(web, "tavily"), "baltic otters", 10)
    assert [r.title for r in results] == ["Baltic otter recovery", "Otter facts"]
    assert results[0].date == "2024-03-05"
    assert results[1].date is None
    sent = web.requests[-1]
    assert sent.headers["Authorization"] == f"Bearer {web.TAVILY_KEY}"
    assert json.loads(sent.body)["query"] == "baltic otters"


async def test_search_duckduckgo_html_skips_ads_unwraps_links_and_dedupes(
    web: FakeWeb, client: httpx.AsyncClient
) -> None:
    results = await run_search(client, settings_for(web, "duckduckgo"), "baltic otters", 10)
    assert [r.url for r in results] == [
        "https://example.org/otters?a=1&b=2",
        "https://wildlife.example.net/baltic",
    ]
    assert results[0].title == "Otters of the Baltic"
    assert results[0].snippet == "The Eurasian otter returned to the Baltic coast."
    assert results[0].date == "2024-03-05"
    assert web.requests[-1].body == b"q=baltic+otters&b="


async def test_search_duckduckgo_bot_check_is_reported_not_parsed_as_empty(
    web: FakeWeb, client: httpx.AsyncClient
) -> None:
    with pytest.raises(SearchFailed, match="bot check"):
        await run_search(client, settings_for(web, "duckduckgo"), "botcheck", 5)


async def test_search_tool_returns_top_n_with_sources(web: FakeWeb, client: httpx.AsyncClient) -> None:
    outcome = await call(
        settings_for(web, "duckduckgo"), {"query": "baltic otters", "max_results": 1}, client
    )
    assert not outcome.is_error
    assert outcome.sources == ["https://example.org/otters?a=1&b=2"]
    assert outcome.output.startswith(
        "1. Otters of the Baltic\n   https://example.org/otters?a=1&b=2\n   (2024-03-05) The Eurasian"
    )
    assert "2." not in outcome.output


async def test_search_tool_says_so_when_nothing_is_found(web: FakeWeb, client: httpx.AsyncClient) -> None:
    outcome = await call(settings_for(web, "duckduckgo"), {"query": "nothing"}, client)
    assert not outcome.is_error
    assert outcome.output.startswith("No results for 'nothing'")
    assert outcome.sources == []


async def test_search_tool_caps_max_results_at_the_configured_limit(
    web: FakeWeb, client: httpx.AsyncClient
) -> None:
    s = replace(settings_for(web, "brave"), max_results=1)
    outcome = await call(s, {"query": "baltic otters", "max_results": 10}, client)
    assert len(outcome.sources) == 1


async def test_search_keys_never_reach_errors_outputs_or_logs(
    web: FakeWeb, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "BSA-wrong-key-but-still-secret-42"
    s = replace(settings_for(web, "brave"), brave_api_key=wrong_key)
    outcome = await call(s, {"query": "baltic otters"}, client)
    assert outcome.is_error
    assert "refused the request (HTTP 401)" in outcome.output
    assert "BRAVE_API_KEY" in outcome.output
    # The fake echoed the key in its error body; none of it may surface.
    assert wrong_key not in outcome.output
    assert wrong_key not in caplog.text
    with pytest.raises(TransientToolError) as info:
        await run_search(client, settings_for(web, "brave"), "overload", 5)
    assert web.BRAVE_KEY not in str(info.value)
    assert web.BRAVE_KEY not in caplog.text


async def test_search_rate_limited_backend_is_transient(web: FakeWeb, client: httpx.AsyncClient) -> None:
    with pytest.raises(TransientToolError, match="HTTP 429"):
        await run_search(client, settings_for(web, "brave"), "overload", 5)


async def test_search_unreachable_backend_is_transient(client: httpx.AsyncClient) -> None:
    async with FakeWeb() as gone:
        url = gone.url("/searxng")
    s = SearchSettings(backend="searxng", searxng_url=url, timeout=2)
    with pytest.raises(TransientToolError, match="searxng search failed: ConnectError"):
        await run_search(client, s, "q", 5)


def test_search_url_normalisation_ignores_noise_but_not_content() -> None:
    same = [
        "https://www.Example.org/a/?b=2&a=1&utm_source=x#top",
        "http://example.org:80/a?a=1&b=2",
        "https://example.org:443/a/?a=1&b=2&fbclid=zz",
    ]
    assert len({normalise_url(u) for u in same}) == 1
    assert normalise_url("https://example.org/a?a=1") != normalise_url("https://example.org/a?a=2")
    assert normalise_url("https://example.org/a") != normalise_url("https://example.org/b")


def test_search_settings_from_env_pick_backend_and_reject_bad_values() -> None:
    assert ResearchToolSettings.from_env({}).search.backend == "duckduckgo"
    auto = ResearchToolSettings.from_env({"BRAVE_API_KEY": "k" * 20})
    assert auto.search.backend == "brave"
    s = ResearchToolSettings.from_env(
        {"SEARCH_BACKEND": "searxng", "SEARXNG_URL": "http://localhost:8888", "SEARCH_MAX_RESULTS": "3"}
    )
    assert (s.search.backend, s.search.searxng_url, s.search.max_results) == (
        "searxng",
        "http://localhost:8888",
        3,
    )
    with pytest.raises(
        ConfigError,
        match="SEARCH_BACKEND='bing': Input should be 'searxng', 'brave', 'tavily' or 'duckduckgo'",
    ):
        ResearchToolSettings.from_env({"SEARCH_BACKEND": "bing"})
    with pytest.raises(ConfigError, match="needs TAVILY_API_KEY"):
        ResearchToolSettings.from_env({"SEARCH_BACKEND": "tavily"})
    with pytest.raises(
        ConfigError, match="SEARCH_MAX_RESULTS='50': Input should be less than or equal to 20"
    ):
        ResearchToolSettings.from_env({"SEARCH_MAX_RESULTS": "50"})


def test_settings_from_an_empty_environment_are_the_documented_defaults() -> None:
    # Regression: slotted dataclasses' class attributes are descriptors, which once reached httpx as
    # the User-Agent and the DuckDuckGo URL, so fetch_url and the default search failed in the bot.
    from agent.tools.fetch import FetchSettings

    s = ResearchToolSettings.from_env({})
    assert s.search.duckduckgo_url == SearchSettings().duckduckgo_url
    assert (
        s.search.brave_url == SearchSettings().brave_url
        and s.search.tavily_url == SearchSettings().tavily_url
    )
    assert isinstance(s.search.duckduckgo_url, str) and s.search.duckduckgo_url.startswith("https://")
    assert s.fetch.user_agent == FetchSettings().user_agent and "agentbot" in s.fetch.user_agent
