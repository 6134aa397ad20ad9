"""fetch_url against hostile pages (issue 14.5, 14.6, 14.11): bombs, slow extraction, broken redirects.

Memory is measured as the process's peak resident size (VmHWM, reset through /proc/self/clear_refs),
so a short spike counts as much as a lasting one.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from agent.messages import ToolCall
from agent.tools.extract_pool import ExtractionFailed, ExtractorPool
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.registry import ToolContext, ToolOutcome, ToolRefused, ToolRegistry
from tests.fakes.web_server import FakeWeb, flat_table, gzip_bomb

MB = 1024 * 1024


@pytest.fixture
async def fetcher() -> AsyncIterator[PageFetcher]:
    f = PageFetcher(FetchSettings(allow_loopback=True, timeout=10, max_bytes=200_000, max_chars=2_000))
    yield f
    await f.aclose()


async def fetch_tool(fetcher: PageFetcher, **args: object) -> ToolOutcome:
    registry = ToolRegistry(fetch_tools(fetcher))
    return await registry.execute(ToolCall("c", "fetch_url", json.dumps(args)), ToolContext(session_id="s"))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


def _reset_peak() -> int:
    """Reset the peak-RSS mark and return the resident size now, in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    return _status_kb("VmRSS") * 1024


def _peak_growth(baseline: int) -> int:
    return _status_kb("VmHWM") * 1024 - baseline


async def test_fetch_security_stacked_gzip_bomb_is_refused_within_50mb(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    assert len(gzip_bomb(1024, 3)) < 300  # the red team's bomb: 1 GiB of zeros in three gzip layers
    await fetch_tool(fetcher, url=web.url("/article"))  # client, pool and worker warmed up first
    baseline = _reset_peak()
    outcome = await fetch_tool(fetcher, url=web.url("/bomb?layers=3&mib=1024"))
    growth = _peak_growth(baseline)
    assert growth < 50 * MB, f"the process grew by {growth / MB:.0f} MB"
    assert outcome.is_error
    assert "compressed 3 times (gzip, gzip, gzip)" in outcome.output
    assert "refuses stacked encodings" in outcome.output
    assert web.hits("/bomb") == 1  # refused, not retried


async def test_fetch_security_one_gzip_layer_is_cut_at_the_cap_while_inflating(web: FakeWeb) -> None:
    small = PageFetcher(FetchSettings(allow_loopback=True, timeout=10, max_bytes=20_000))
    try:
        await small.fetch(web.url("/article"))
        gzip_bomb(1024, 1, b"<p>otters swim</p>\n")  # built before the measurement: it is the server's memory
        baseline = _reset_peak()
        page = await small.fetch(web.url("/bomb?layers=1&mib=1024&fill=html"))
        growth = _peak_growth(baseline)
    finally:
        await small.aclose()
    assert page.body_truncated  # 1 GiB of HTML on offer, 20 KB read, like any long page
    assert "otters swim" in page.text
    assert growth < 50 * MB, f"the process grew by {growth / MB:.0f} MB"


async def test_fetch_unknown_or_unoffered_encodings_are_refused(web: FakeWeb, fetcher: PageFetcher) -> None:
    for enc, message in (
        ("br", "'br' encoding"),
        ("compress", "'compress' encoding"),
        ("gzip, br", "stacked"),
    ):
        with pytest.raises(ToolRefused, match=message):
            await fetcher.fetch(web.url(f"/bomb?layers=1&mib=1&enc={enc}"))


async def test_fetch_gzip_page_reads_like_a_plain_one(web: FakeWeb, fetcher: PageFetcher) -> None:
    page = await fetcher.fetch(web.url("/gzip-article"))
    assert page.title == "Otters of the Baltic"
    assert "camera traps and spraint counts at 212 sites" in page.text
    assert web.requests[-1].headers["Accept-Encoding"] == "gzip, deflate"  # never br or zstd


async def test_fetch_security_slow_extraction_does_not_starve_the_default_pool(web: FakeWeb) -> None:
    """Twice as many pathological pages as the default pool has threads, all at once."""
    settings = FetchSettings(
        allow_loopback=True, timeout=10, extract_timeout=2, extract_wait=3, max_bytes=2_000_000
    )
    slow = PageFetcher(settings)
    pages = 2 * min(32, (os.cpu_count() or 1) + 4)
    flat_table(1024)  # built once, before the clock starts
    try:
        started = time.monotonic()
        fetches = [asyncio.create_task(fetch_tool(slow, url=web.url("/table?kb=1024"))) for _ in range(pages)]
        await asyncio.sleep(1.0)  # downloads done, workers deep in trafilatura
        waits = []
        for _ in range(3):
            t0 = time.monotonic()
            await asyncio.to_thread(sum, range(1000))
            waits.append(time.monotonic() - t0)
            await asyncio.sleep(0.3)
        outcomes = await asyncio.gather(*fetches)
        took = time.monotonic() - started
    finally:
        await slow.aclose()
    # The requirement: other work waits under a second (it waited 257 s before).
    assert max(waits) < 1.0, waits
    # Every call ends by its own deadlines: a bounded wait for a worker, then extract_timeout, no retry.
    assert took < settings.timeout + settings.extract_wait + settings.extract_timeout, took
    for o in outcomes:
        if "was downloaded but not read" in o.output:
            assert "no extraction worker came free within 3 s" in o.output
        elif o.is_error:
            assert "could not turn" in o.output and "into text: no answer within 2 s" in o.output
        else:
            assert "[the page was too slow to clean up: this is all of its text" in o.output
            assert "cell 1" in o.output
    assert web.hits("/table") == pages  # no call was retried


async def test_fetch_security_slow_page_comes_back_as_plain_text_once_not_retried(web: FakeWeb) -> None:
    # Clean-up gives way to plain text at 60% of the deadline (6 s): trafilatura alone needs 12 s or more
    # for this page, and the plain text keeps 4 s even on a loaded machine (at 6 s it missed at load 15).
    slow = PageFetcher(
        FetchSettings(allow_loopback=True, timeout=10, extract_timeout=10, max_bytes=2_000_000)
    )
    try:
        outcome = await fetch_tool(slow, url=web.url("/table?kb=1024"))
    finally:
        await slow.aclose()
    assert not outcome.is_error, outcome.output
    assert "Title: Flat table" in outcome.output
    assert "[the page was too slow to clean up: this is all of its text" in outcome.output
    assert "cell 0 cell 1 cell 2" in outcome.output
    assert web.hits("/table") == 1


async def test_fetch_extraction_worker_is_killed_at_its_deadline_and_replaced() -> None:
    pool = ExtractorPool(1)
    request = {
        "charset": "utf-8",
        "kind": "html",
        "url": "http://t/",
        "soft_deadline_at": time.monotonic() + 60,
    }
    try:
        started = time.monotonic()
        with pytest.raises(ExtractionFailed, match="no answer within 1 s"):
            await pool.extract(request, flat_table(1024), 1.0)
        assert time.monotonic() - started < 5
        answer = await pool.extract(request, b"<html><title>t</title><body><p>after</p></body></html>", 30)
        assert "after" in answer["text"]
    finally:
        pool.close()


async def test_fetch_security_extraction_worker_memory_is_capped() -> None:
    """A page that needs more memory than the worker may take fails on its own; the worker goes on."""
    pool = ExtractorPool(1, memory_mb=180)
    request = {"charset": None, "kind": "html", "url": "http://t/", "soft_deadline_at": time.monotonic() + 60}
    try:
        answer = await pool.extract(request, flat_table(2048), 60)
        assert answer == {"refused": "http://t/ needs more memory to read than allowed"}
        after = await pool.extract(request, b"<html><body><p>still here</p></body></html>", 30)
        assert "still here" in after["text"]
    finally:
        pool.close()


async def test_fetch_security_redirect_to_unparseable_url_is_a_clear_error(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    for target, why in (
        ("http://127.0.0.1:80x/", "Invalid port: '80x'"),
        ("http://[::1/admin", "Invalid port"),
        ("http:127.0.0.1:8080/admin", "path must be empty or begin with '/'"),
    ):
        outcome = await fetch_tool(fetcher, url=web.url("/raw-redirect?url=") + quote(target))
        assert outcome.is_error
        assert "redirected to an address that is not a valid URL" in outcome.output, outcome.output
        assert why in outcome.output
    assert web.hits("/raw-redirect") == 3  # refused, not retried


async def test_fetch_security_bogus_charset_is_a_clear_error(web: FakeWeb, fetcher: PageFetcher) -> None:
    outcome = await fetch_tool(fetcher, url=web.url("/bogus-charset"))
    assert outcome.is_error
    assert "declares the character set 'bogus', which is not a known text encoding" in outcome.output
