"""The page-extraction workers shared between servers: a page's deadline counts from when a worker
takes it, its wait is bounded with its own error, and a busy server cannot queue another behind all its
pages. Deterministic: a held slot stands for a server's slow page, and the event loop's clock is moved
forward instead of waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from agent.messages import ToolCall
from agent.tools.extract_pool import ExtractionBusy, ExtractorPool
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.registry import ToolContext, ToolRegistry
from tests.fakes.web_server import FakeWeb

PAGE = b"<html><head><title>t</title></head><body><p>the page text</p></body></html>"
REQUEST = {"charset": "utf-8", "kind": "html", "url": "http://t/"}


@pytest.fixture
async def advance(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Move the running loop's clock forward: timers due by then fire on its next turn."""
    loop = asyncio.get_running_loop()
    real, offset = loop.time, [0.0]
    monkeypatch.setattr(loop, "time", lambda: real() + offset[0])

    def forward(seconds: float) -> None:
        offset[0] += seconds

    return forward


async def until(check: Callable[[], bool]) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


async def test_extraction_deadline_counts_from_when_a_worker_takes_the_page(
    advance: Callable[[float], None],
) -> None:
    pool = ExtractorPool(1, max_wait=600)
    try:
        await pool.slots.acquire("busy server", 1)  # its slow page holds the only worker
        page = asyncio.create_task(pool.extract(REQUEST, PAGE, 10, key="other", soft_after=6))
        await until(lambda: pool.slots.waiting("other") == 1)
        advance(60)  # the page waits far longer than its 10 s deadline
        for _ in range(5):
            await asyncio.sleep(0)
        assert not page.done()  # measured from the request, it failed here while still queued
        pool.slots.release("busy server")
        answer = await page
    finally:
        pool.close()
    assert "the page text" in answer["text"] and not answer["fallback"]


async def test_extraction_wait_is_bounded_with_its_own_error(advance: Callable[[float], None]) -> None:
    pool = ExtractorPool(1, max_wait=30)
    try:
        await pool.slots.acquire("busy server", 1)
        page = asyncio.create_task(pool.extract(REQUEST, PAGE, 10, key="other"))
        await until(lambda: pool.slots.waiting("other") == 1)
        advance(31)
        with pytest.raises(ExtractionBusy, match="no extraction worker came free within 30 s"):
            await page
        assert pool.slots.waiting() == 0 and pool.slots.running == 1  # the waiter left no trace
        pool.slots.release("busy server")
        assert pool.slots.running == 0
    finally:
        pool.close()


async def test_a_busy_servers_pages_do_not_queue_another_server_behind_them(web: FakeWeb) -> None:
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=10, extract_workers=1))
    registry = ToolRegistry(fetch_tools(fetcher))
    done: list[str] = []

    async def fetch(server: str, n: int) -> None:
        call = ToolCall(f"c{n}", "fetch_url", json.dumps({"url": web.url("/article")}))
        outcome = await registry.execute(call, ToolContext(session_id=f"s{n}", namespace=server))
        assert not outcome.is_error, outcome.output
        done.append(server)

    slots = fetcher.extractor.slots
    try:
        await slots.acquire("server:A", 1)  # server A's slow page holds the only worker
        tasks = [asyncio.create_task(fetch("A", n)) for n in range(3)]
        await until(lambda: slots.waiting() == 3)
        tasks.append(asyncio.create_task(fetch("B", 9)))
        await until(lambda: slots.waiting() == 4)
        slots.release("server:A")
        await asyncio.gather(*tasks)
    finally:
        await fetcher.aclose()
    assert done == ["B", "A", "A", "A"]  # first come, first served, B waited for all of A's pages
