"""Outbound network access for tools: the SSRF guard and lazily created shared httpx clients.

The guard sits where the connection is made, not where the URL is read: :class:`GuardedBackend` is the
httpcore network backend of the fetch client, so every TCP connection — the first request and each
redirect hop alike — resolves the host itself, refuses the whole name if any address it resolves to is
not public, and then connects to the very address it checked. There is no second DNS lookup between
check and connect, so a DNS-rebinding name cannot swap a private address in.

Refused: loopback (unless ``allow_loopback``, a test setting), private (RFC 1918, unique-local
fc00::/7, and the deprecated site-local fec0::/10), carrier-grade NAT, link-local (169.254/16, fe80::/10), cloud metadata endpoints
(169.254.169.254, fd00:ec2::254, 100.100.100.200, ``metadata.google.internal``…), multicast, reserved,
unspecified (0.0.0.0, ::) and anything else that is not globally routable, including the same addresses
wrapped in IPv6 (IPv4-mapped ::ffff:a.b.c.d, 6to4 2002::/16, NAT64 64:ff9b::/96). Unix sockets and
proxies are never used by the guarded client (``trust_env=False``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from agent.setting_parsers import parse_dns_servers
from agent.tools.domains import literal_address
from agent.tools.registry import ToolRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Turns (host, port) into IP address strings. Injectable so tests can make a name resolve anywhere."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
METADATA_HOSTNAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
BAD_PORTS = frozenset(
    {1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104}
    | {109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514}
    | {515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720}
    | {1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6697, 10080}
)
"""WHATWG Fetch's "bad ports": other protocols' (SMTP 25, SSH 22, IRC 6667...), which a crafted HTTP
request can talk to. Any public host on any port was fetched: a page could have the bot write to a mail
server, or learn from its errors which of a host's ports are open."""


class BlockedAddress(ToolRefused):
    """The URL points somewhere the agent must not reach; the message says why, for the model."""


class UnresolvedHost(BlockedAddress):
    """The host's name has no address now (no such name, no answer): nothing was refused for where it
    points, so a check made ahead of time (``/config mcp``) may let it pass and leave it to the connect."""


def address_problem(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` must not be contacted, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded, allow_loopback=allow_loopback)
            return f"{inner} (wrapped in IPv6)" if inner else None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"  # fec0::/10, IPv6's old private range, which ipaddress calls global
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


class DnsResolver:
    """Resolves with dnspython's asyncio resolver: a lookup is a UDP exchange on the event loop, never a
    thread. getaddrinfo cannot be cancelled, so a name whose name server never answers held a thread of
    a shared pool (16) for the C resolver's whole timeout: five hostile servers' fetches (4 each) filled it
    and every other server's fetch_url waited behind them. Here a hanging lookup costs one socket and one
    timer, and ends at ``lifetime``. ``/etc/hosts`` is not read (its names are local, so refused anyway);
    ``localhost`` is loopback by definition (RFC 6761).

    ``servers``: ``FETCH_DNS_SERVERS`` (``ip`` or ``ip:port``, ``[v6]:port``); empty: ``/etc/resolv.conf``."""

    def __init__(self, servers: str = "", *, lifetime: float = 5.0) -> None:
        self.servers = parse_dns_servers(servers)
        self.lifetime = lifetime
        self._resolver: Any = None
        self._making: asyncio.Future[Any] | None = None

    async def _get(self) -> Any:
        """dnspython's import (~60 ms) and the resolv.conf read run once, off the loop; lookups meanwhile
        wait for that one build (a guard is made before any loop runs, so no lock bound to one)."""
        if self._resolver is None:
            loop = asyncio.get_running_loop()
            if self._making is None or self._making.get_loop() is not loop:
                self._making = loop.run_in_executor(None, self._make)
            making = self._making
            try:
                self._resolver = await asyncio.shield(making)
            except BaseException:
                if making.done() and self._making is making:  # a failed build is tried again next time
                    self._making = None
                raise
        return self._resolver

    def _make(self) -> Any:
        import dns.asyncresolver
        import dns.nameserver
        import dns.resolver

        resolver = dns.asyncresolver.Resolver(configure=not self.servers)
        if self.servers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.servers]
        resolver.lifetime = self.lifetime
        resolver.timeout = min(2.0, self.lifetime)  # per try: a second server or try gets its turn
        resolver.cache = dns.resolver.LRUCache(512)  # bounded; the connection still goes to a checked address
        return resolver

    async def __call__(self, host: str, port: int) -> list[str]:
        if host == "localhost" or host.endswith(".localhost"):
            return ["127.0.0.1", "::1"]
        import dns.exception
        import dns.resolver

        try:
            answers = await (await self._get()).resolve_name(host)
        except dns.resolver.NoResolverConfiguration as e:
            raise socket.gaierror(socket.EAI_FAIL, "no name server is configured (/etc/resolv.conf)") from e
        except dns.resolver.NXDOMAIN as e:
            raise socket.gaierror(socket.EAI_NONAME, "no such name") from e
        except dns.resolver.NoAnswer as e:
            raise socket.gaierror(socket.EAI_NODATA, "the name has no address") from e
        except dns.resolver.LifetimeTimeout as e:
            raise socket.gaierror(
                socket.EAI_AGAIN, f"its name server did not answer within {self.lifetime:g} s"
            ) from e
        except dns.exception.DNSException as e:  # SERVFAIL, refused, malformed answers
            raise socket.gaierror(socket.EAI_FAIL, "its name servers failed to answer") from e
        # IPv4 first, as getaddrinfo orders them where IPv6 has no route; each once, without a zone id.
        found = list(dict.fromkeys(a.split("%", 1)[0] for a in answers.addresses()))
        return sorted(found, key=lambda a: ":" in a)


class NetGuard:
    """Decides which hosts may be contacted, resolving names itself."""

    def __init__(self, *, allow_loopback: bool = False, resolver: Resolver | None = None) -> None:
        self.allow_loopback = allow_loopback
        self._resolver = resolver or DnsResolver()

    def check_url(self, url: httpx.URL) -> None:
        """Refuse before any network use: only http(s) URLs with a host, and no metadata host names."""
        if url.scheme not in ("http", "https"):
            raise BlockedAddress(
                f"only http and https URLs can be fetched, not {url.scheme or 'a bare path'}:"
            )
        if not url.host:
            raise BlockedAddress(f"the URL {url} has no host")
        name = url.host.rstrip(".").lower()
        if name in METADATA_HOSTNAMES:
            raise BlockedAddress(f"refused {name}: it is a cloud metadata endpoint")

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to, all checked; raises :class:`BlockedAddress` if any is not public."""
        name = host.strip("[]").rstrip(".").lower()
        if name in METADATA_HOSTNAMES:
            raise BlockedAddress(f"refused {name}: it is a cloud metadata endpoint")
        try:
            literal: str | None = str(ipaddress.ip_address(name))
        except ValueError:  # glibc's spellings too (``2130706433``): getaddrinfo read them so, as browsers do
            literal = literal_address(name)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = await self._resolver(name, port)
            except (socket.gaierror, UnicodeError) as e:
                why = e.strerror if isinstance(e, OSError) and e.strerror else e  # not "[Errno -2] …"
                raise UnresolvedHost(f"cannot resolve the host {name}: {why}") from e
        if not addresses:
            raise UnresolvedHost(f"the host {name} has no address")
        for addr in addresses:
            problem = address_problem(ipaddress.ip_address(addr), allow_loopback=self.allow_loopback)
            if problem:
                shown = name if literal is not None else f"{name} (which resolves to {addr})"
                raise BlockedAddress(
                    f"refused to connect to {shown}: it is {problem}. Only public internet addresses can be fetched."
                )
        if port in BAD_PORTS:  # after the address: a loopback or private one is said as such first
            raise BlockedAddress(
                f"refused {name}:{port}: port {port} is another protocol's (mail, SSH, IRC...), which a web "
                "request must not reach (browsers refuse it too); use the site's web address"
            )
        return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the guard has just checked."""

    def __init__(self, guard: NetGuard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._guard = guard
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._guard.resolve(host, port)
        error: Exception | None = None
        for addr in addresses:  # pinned: connect to the checked address; TLS still verifies ``host``
            try:
                return await self._inner.connect_tcp(addr, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets cannot be fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with its connection pool rebuilt on a :class:`GuardedBackend`.

    httpx 0.28 takes no network backend argument, so the pool (``_pool``) is replaced after
    construction; pyproject pins httpx below 0.29, and the SSRF tests fail loudly if this stops working.
    """

    def __init__(
        self,
        guard: NetGuard,
        *,
        inner: httpcore.AsyncNetworkBackend | None = None,
        max_connections: int | None = 20,
    ) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=10,
            keepalive_expiry=30.0,
            network_backend=GuardedBackend(guard, inner),
        )


class LazyClient:
    """One httpx client, created on first use and recreated if used from another event loop or closed.

    Tools are built once at start-up, before any loop runs; an httpx client belongs to the loop that
    first used it, so it is made here on demand rather than at build time.
    """

    def __init__(self, factory: Callable[[], httpx.AsyncClient]) -> None:
        self._factory = factory
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._client = self._factory()
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.aclose()
        self._client = None


class CappedTransport(httpx.AsyncBaseTransport):
    """Any transport whose responses end in an error past ``limit`` bytes, for servers that are not
    trusted to stop: an MCP server a member added streamed 1.9 GB into the bot in 8 s of one call.

    Bodies are asked for and taken only uncompressed, so the bytes counted are the bytes kept (httpx
    inflates after the transport, where no cap could look: a gzip bomb would pass a raw count).
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self.limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            await response.aclose()
            raise httpx.RemoteProtocolError(
                f"the server sent a {encoding} body it was not asked for", request=request
            )
        response.stream = _CappedStream(response.stream, self.limit, request)  # type: ignore[arg-type]
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, limit: int, request: httpx.Request) -> None:
        self._inner, self._limit, self._request = inner, limit, request

    async def __aiter__(self) -> Any:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise httpx.ReadError(
                    f"the server's answer passed the {self._limit // 2**20} MiB limit", request=self._request
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()
