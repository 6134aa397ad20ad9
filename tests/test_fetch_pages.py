"""fetch_url against scripted pages on 127.0.0.1 (loopback allowed through the test setting)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from agent.messages import ToolCall
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.registry import ToolContext, ToolOutcome, ToolRefused, ToolRegistry, TransientToolError
from tests.fakes.web_server import FakeWeb


@pytest.fixture
async def fetcher() -> AsyncIterator[PageFetcher]:
    f = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, max_bytes=200_000, max_chars=2_000))
    yield f
    await f.aclose()


async def fetch_tool(fetcher: PageFetcher, **args: object) -> ToolOutcome:
    registry = ToolRegistry(fetch_tools(fetcher))
    return await registry.execute(ToolCall("c", "fetch_url", json.dumps(args)), ToolContext(session_id="s"))


async def test_fetch_article_gives_title_main_text_and_source(web: FakeWeb, fetcher: PageFetcher) -> None:
    outcome = await fetch_tool(fetcher, url=web.url("/article"))
    assert not outcome.is_error
    assert outcome.sources == [web.url("/article")]
    text = outcome.output
    assert text.startswith(f"Title: Otters of the Baltic\nURL: {web.url('/article')}\n")
    assert "more than four hundred breeding pairs" in text
    assert "camera traps and spraint counts at 212 sites" in text
    assert "Cookie settings" not in text  # boilerplate dropped
    assert "Shop" not in text


async def test_fetch_plain_text_and_json_are_returned_as_text(web: FakeWeb, fetcher: PageFetcher) -> None:
    plain = await fetcher.fetch(web.url("/plain"))
    assert plain.text == "line one\nline two"
    data = await fetcher.fetch(web.url("/data.json"))
    assert json.loads(data.text) == {"otters": 412, "years": [2021, 2022, 2023]}


async def test_fetch_pdf_is_refused_with_advice(web: FakeWeb, fetcher: PageFetcher) -> None:
    outcome = await fetch_tool(fetcher, url=web.url("/paper.pdf"))
    assert outcome.is_error
    assert "is a PDF; fetch_url reads only HTML, text and JSON" in outcome.output
    assert web.hits("/paper.pdf") == 1  # refused, not retried


async def test_fetch_binary_content_type_is_refused(web: FakeWeb, fetcher: PageFetcher) -> None:
    with pytest.raises(ToolRefused, match="is image/png, which fetch_url cannot read"):
        await fetcher.fetch(web.url("/image"))


async def test_fetch_stops_downloading_a_huge_body_at_the_cap(web: FakeWeb, fetcher: PageFetcher) -> None:
    page = await fetcher.fetch(web.url("/big"))
    assert page.body_truncated
    assert page.title == "Big"
    # 50 MB were on offer; the server could send only the cap plus what socket buffers held.
    assert web.big_bytes_sent < 16 * 1024 * 1024


async def test_fetch_long_page_is_windowed_and_continues_from_start(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    first = await fetch_tool(fetcher, url=web.url("/long"))
    assert "[characters 0-2000 of" in first.output
    assert "call fetch_url again with start=2000 for more" in first.output
    assert "Paragraph 0:" in first.output
    assert "Paragraph 150:" not in first.output
    later = await fetch_tool(fetcher, url=web.url("/long"), start=40_000)
    assert "[characters 40000-42000 of" in later.output
    assert "Paragraph 0:" not in later.output


async def test_fetch_follows_up_to_five_redirects_and_cites_the_final_url(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    outcome = await fetch_tool(fetcher, url=web.url("/redirect/4"))  # 4, 3, 2, 1, 0, then the article
    assert not outcome.is_error, outcome.output
    assert outcome.sources == [web.url("/article")]
    assert f"URL: {web.url('/article')}" in outcome.output


async def test_fetch_gives_up_after_too_many_redirects(web: FakeWeb, fetcher: PageFetcher) -> None:
    with pytest.raises(ToolRefused, match="too many redirects: gave up after 5"):
        await fetcher.fetch(web.url("/redirect/5"))  # six redirects
    assert web.hits("/article") == 0


async def test_fetch_404_is_reported_once_not_retried(web: FakeWeb, fetcher: PageFetcher) -> None:
    outcome = await fetch_tool(fetcher, url=web.url("/status/404"))
    assert outcome.is_error
    assert "HTTP 404 Not Found" in outcome.output
    assert web.hits("/status/404") == 1


async def test_fetch_server_errors_are_transient_and_retried(web: FakeWeb, fetcher: PageFetcher) -> None:
    with pytest.raises(TransientToolError, match="HTTP 503"):
        await fetcher.fetch(web.url("/status/503"))
    outcome = await fetch_tool(fetcher, url=web.url("/status/503"))
    assert outcome.is_error
    assert web.hits("/status/503") == 3  # one direct call, then the tool's two attempts


async def test_fetch_slow_server_times_out_as_transient(web: FakeWeb) -> None:
    quick = PageFetcher(FetchSettings(allow_loopback=True, timeout=1))
    try:
        with pytest.raises(TransientToolError, match=r"took longer than 1 s|timed out"):
            await quick.fetch(web.url("/slow?s=1.5"))
    finally:
        await quick.aclose()


async def test_fetch_rejects_what_is_not_a_web_url(fetcher: PageFetcher) -> None:
    for url, message in (
        ("file:///etc/passwd", "only http and https URLs"),
        ("ftp://example.org/x", "only http and https URLs"),
        ("not a url", "only http and https URLs|not a valid URL"),
    ):
        with pytest.raises(ToolRefused, match=message):
            await fetcher.fetch(url)
