"""fetch_url as a hostile or odd web server drives it: pages on 127.0.0.1 (loopback allowed for tests)."""

from __future__ import annotations

import asyncio
import codecs
import os

import pytest
from aiohttp import web

from agent.tools.domains import DomainPolicy
from agent.tools.fetch import FetchSettings, PageFetcher
from agent.tools.registry import ToolRefused
from tests.fakes.dns_server import serving_dns
from tests.fakes.served import served

_HTML = (
    "<html><head>{meta}<title>Loutres d’Europe</title></head><body><article>"
    "<p>Les loutres de la Baltique comptent plus de quatre cents couples nicheurs, "
    "d’après des pièges photographiques posés sur 212 sites — ≈ 3 % de plus qu’en 2021.</p>"
    "</article></body></html>"
)


_PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)) * 8


def _page(body: bytes, content_type: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type})


def _wide_pages() -> web.Application:
    meta16 = '<meta charset="utf-16">'
    routes = {
        # Notepad's "Unicode": UTF-16 LE with a byte-order mark and no charset anywhere.
        "/bom": lambda: _page(codecs.BOM_UTF16_LE + _HTML.format(meta="").encode("utf-16-le"), "text/html"),
        # The server states it; big-endian, no mark.
        "/header": lambda: _page(_HTML.format(meta="").encode("utf-16-be"), "text/html; charset=UTF-16"),
        # Only the page itself says so.
        "/meta": lambda: _page(_HTML.format(meta=meta16).encode("utf-16-le"), "text/html"),
        "/utf32": lambda: _page(_HTML.format(meta="").encode("utf-32"), "text/html"),
        # Real binary dressed up as UTF-16 HTML stays refused.
        "/binary": lambda: _page(codecs.BOM_UTF16_LE + _PNG, "text/html"),
        "/binary-declared": lambda: _page(_PNG, "text/html; charset=utf-16"),
    }
    app = web.Application()
    for path, make in routes.items():
        app.router.add_get(path, lambda _r, make=make: make())
    return app


async def test_blackbox_security_utf16_and_utf32_html_pages_are_read_and_binary_still_refused() -> None:
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, extract_workers=1))
    try:
        async with served(_wide_pages()) as base:
            for path in ("/bom", "/header", "/meta", "/utf32"):
                page = await fetcher.fetch(base + path)
                assert page.title == "Loutres d’Europe", path
                assert "quatre cents couples nicheurs" in page.text, path
                assert "≈ 3 % de plus" in page.text, path
            for path in ("/binary", "/binary-declared"):
                with pytest.raises(ToolRefused, match="binary data"):
                    await fetcher.fetch(base + path)
    finally:
        await fetcher.aclose()


async def test_blackbox_security_blocked_ip_is_refused_however_the_address_is_spelled() -> None:
    # An admin's block of 127.0.0.1 (here the page's own address) was matched on the spelling only:
    # 2130706433, 0x7f000001, 127.1 and [::ffff:127.0.0.1] reached the blocked address.
    app = web.Application()
    app.router.add_get(
        "/", lambda _r: _page(b"<html><title>Internal</title><p>secret</p></html>", "text/html")
    )
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, extract_workers=1))
    policy = DomainPolicy.of(block=["127.0.0.1"])
    try:
        async with served(app) as base:
            port = base.rsplit(":", 1)[1]
            for host in ("2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]", "127.0.0.1"):
                with pytest.raises(ToolRefused, match=r"admins blocked 127\.0\.0\.1"):
                    await fetcher.fetch(f"http://{host}:{port}/", policy)
    finally:
        await fetcher.aclose()


async def test_blackbox_security_hosts_whose_dns_never_answers_do_not_starve_the_bot() -> None:
    # Names whose name server never answers held the default pool's threads for the resolver's whole
    # timeout: eight such fetches made every other asyncio.to_thread of the bot (files, memory) wait.
    # Lookups now hold no thread at all (netguard.DnsResolver).
    default_pool = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default size
    async with serving_dns({}) as dns:
        settings = FetchSettings(timeout=30, extract_workers=1, dns_servers=f"127.0.0.1:{dns.port}")
        fetcher = PageFetcher(settings)
        fetches = [
            asyncio.create_task(fetcher.fetch(f"http://a{i}.hang.test/")) for i in range(default_pool + 2)
        ]
        try:
            await dns.wait_asked(default_pool + 2)  # every lookup is waiting for its answer
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "done"), 10) == "done"
        finally:
            for t in fetches:
                t.cancel()
            await asyncio.gather(*fetches, return_exceptions=True)
            await fetcher.aclose()
