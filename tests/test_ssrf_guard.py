"""The SSRF guard refuses every non-public target: directly, through DNS and through redirects.

Refusals happen before any connection: a recording wrapper around the real network backend proves
that no socket was opened towards a refused address (and no traffic ever leaves loopback).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from typing import Any

import httpcore
import pytest

from agent.messages import ToolCall
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.netguard import BlockedAddress, address_problem
from agent.tools.registry import ToolContext, ToolRegistry
from tests.fakes.web_server import FakeWeb


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """The real anyio backend, noting every address a connection was attempted to."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"test tried to connect to {host}")
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def make(allow_loopback: bool, resolver: Any = None) -> tuple[PageFetcher, RecordingBackend]:
    backend = RecordingBackend()
    fetcher = PageFetcher(
        FetchSettings(allow_loopback=allow_loopback, timeout=5), resolver=resolver, backend=backend
    )
    return fetcher, backend


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("[::1]", "a loopback address"),
        ("[::ffff:127.0.0.1]", "a loopback address (wrapped in IPv6)"),
        ("10.0.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("100.64.0.1", "not a public address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("[fd00:ec2::254]", "a cloud metadata address"),
        ("169.254.10.10", "a link-local address"),
        ("[fe80::1]", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a private address"),
        ("192.0.0.192", "a cloud metadata address"),
        ("[64:ff9b::a00:1]", "a private address (wrapped in IPv6)"),
        ("[2002:a00:1::]", "a private address (wrapped in IPv6)"),
    ],
)
async def test_ssrf_direct_ip_is_refused_without_connecting(host: str, why: str) -> None:
    fetcher, backend = make(allow_loopback=False)
    try:
        with pytest.raises(BlockedAddress, match=re.escape(f"it is {why}.")):
            await fetcher.fetch(f"http://{host}:8080/latest/meta-data/")
    finally:
        await fetcher.aclose()
    assert backend.connects == []


async def test_ssrf_local_test_server_itself_is_refused_when_loopback_is_off(web: FakeWeb) -> None:
    fetcher, backend = make(allow_loopback=False)
    try:
        for url in (
            web.url("/article"),
            f"http://localhost:{web.port}/article",
            f"http://2130706433:{web.port}/article",
        ):
            with pytest.raises(BlockedAddress, match="loopback"):
                await fetcher.fetch(url)
    finally:
        await fetcher.aclose()
    assert backend.connects == []
    assert web.hits("/article") == 0


async def test_ssrf_dns_name_resolving_to_loopback_is_refused(web: FakeWeb) -> None:
    fetcher, backend = make(allow_loopback=False)
    try:
        with pytest.raises(
            BlockedAddress, match=r"localhost \(which resolves to (127\.0\.0\.1|::1)\): it is a loopback"
        ):
            await fetcher.fetch(f"http://localhost:{web.port}/article")
    finally:
        await fetcher.aclose()
    assert backend.connects == []


async def test_ssrf_name_with_any_private_address_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return {"mixed.example": ["93.184.216.34", "10.1.2.3"]}.get(host, [])

    fetcher, backend = make(allow_loopback=False, resolver=resolver)
    try:
        with pytest.raises(
            BlockedAddress, match=r"mixed.example \(which resolves to 10.1.2.3\): it is a private"
        ):
            await fetcher.fetch("https://mixed.example/")
    finally:
        await fetcher.aclose()
    assert backend.connects == []


async def test_ssrf_metadata_host_names_are_refused_before_resolution() -> None:
    looked_up: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["169.254.169.254"]

    fetcher, backend = make(allow_loopback=False, resolver=resolver)
    try:
        for url in (
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
        ):
            with pytest.raises(BlockedAddress, match="cloud metadata endpoint"):
                await fetcher.fetch(url)
    finally:
        await fetcher.aclose()
    assert looked_up == []
    assert backend.connects == []


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://10.0.0.1/admin",
        "http://[::ffff:10.0.0.1]/",
        "http://[fd00:ec2::254]/latest/",
    ],
)
async def test_ssrf_redirect_from_allowed_server_to_private_address_is_refused(
    web: FakeWeb, target: str
) -> None:
    fetcher, backend = make(allow_loopback=True)
    try:
        registry = ToolRegistry(fetch_tools(fetcher))
        start = web.url("/redirect-to?url=" + target.replace("&", "%26"))
        outcome = await registry.execute(
            ToolCall("c", "fetch_url", json.dumps({"url": start})), ToolContext()
        )
    finally:
        await fetcher.aclose()
    assert outcome.is_error
    assert "refused to connect to" in outcome.output
    assert "Only public internet addresses can be fetched" in outcome.output
    # The first hop reached the test server; nothing went anywhere else.
    assert [h for h, _ in backend.connects] == ["127.0.0.1"]
    assert web.hits("/redirect-to") == 1


async def test_ssrf_connection_is_pinned_to_the_checked_address(web: FakeWeb) -> None:
    """A name only our resolver knows still reaches the server: the connection used the checked IP,
    and the Host header kept the name (so TLS and virtual hosts still see the real host)."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "pinned.test" else []

    fetcher, backend = make(allow_loopback=True, resolver=resolver)
    try:
        page = await fetcher.fetch(f"http://pinned.test:{web.port}/plain")
    finally:
        await fetcher.aclose()
    assert page.text.startswith("line one")
    assert backend.connects == [("127.0.0.1", web.port)]
    assert web.requests[-1].headers["Host"] == f"pinned.test:{web.port}"


def test_ssrf_public_addresses_pass_and_loopback_only_with_the_setting() -> None:
    assert address_problem(ipaddress.ip_address("93.184.216.34")) is None
    assert address_problem(ipaddress.ip_address("2606:4700::1111")) is None
    assert address_problem(ipaddress.ip_address("127.0.0.1")) == "a loopback address"
    assert address_problem(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
    assert address_problem(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) == "a private address"
    assert (
        address_problem(ipaddress.ip_address("169.254.169.254"), allow_loopback=True)
        == "a cloud metadata address"
    )
