"""MCP servers a Discord server added with ``/config mcp``: connected on its first turn, kept for the next.

Why every connection goes through the SSRF guard: the URL is a member-supplied address the bot's host
will connect to, exactly like a page ``fetch_url`` reads, so it gets the same guard (private, loopback,
link-local and metadata addresses refused at connect time, the checked address pinned against DNS
rebinding). Only streamable HTTP: a stdio server runs a command on the host, which only the operator's
file (``MCP_SERVERS_FILE``) may do.

One :class:`~agent.tools.mcp.McpTools` per server (guild), rebuilt when its list changes; at most
``max_guilds`` are kept (the least recently used is closed). A server that is down or slow is left out
and said once, when the connection is made; its turn goes on with the other tools. A later turn tries
it again (at most every ``RETRY_EVERY`` s, silently, waiting ``RETRY_WAIT`` s at most): one down on the
first turn used to stay left out until the bot restarted, though the admin had since started it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from agent.tools.mcp import MAX_RESPONSE_BYTES, McpServer, McpTools, NoServerStream
from agent.tools.netguard import (
    BlockedAddress,
    CappedTransport,
    DnsResolver,
    GuardedTransport,
    NetGuard,
    Resolver,
    UnresolvedHost,
)
from agent.tools.registry import Tool

__all__ = ["GuildMcp"]

LOOKUP_WAIT = 2.0
"""Seconds ``/config mcp`` waits for a name's addresses; a name server that does not answer by then
leaves the check to the first connection (a turn's), which waits its connect timeout."""
RETRY_EVERY = 30.0
"""Seconds between tries of a server left out, as a dead server's calls reconnect (agent.tools.mcp)."""
RETRY_WAIT = 2.0
"""Seconds a turn waits for the try of a server left out: one that is up answers its handshake well
within it and joins this turn; one that accepts and never answers goes on being tried behind the turn
(it held the turn, and every turn of the server waiting on its lock, for the whole connect timeout,
once every RETRY_EVERY s)."""
RETIRED_KEPT = 50
"""Replaced connection sets kept open at most (the oldest are closed first): an admin changing the list
again and again cannot make the bot hold hundreds of connections for a turn's time limit."""


@dataclass(slots=True)
class _Entry:
    servers: tuple[tuple[str, str], ...]
    mcp: McpTools
    tools: list[Tool]
    retried: list[McpTools] = field(default_factory=list)
    """Connections of servers left out at first and up on a later try."""
    retry_at: float = 0.0
    retrying: asyncio.Task[None] | None = None
    """The try under way of the servers left out; a turn never waits for it."""

    async def aclose(self) -> None:
        if self.retrying is not None:
            self.retrying.cancel()
            await asyncio.gather(self.retrying, return_exceptions=True)
        await asyncio.gather(*(m.aclose() for m in (self.mcp, *self.retried)), return_exceptions=True)


class GuildMcp:
    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        connect_timeout: float = 5.0,
        call_timeout: float = 30.0,
        max_guilds: int = 200,
        dns_servers: str = "",
        resolver: Resolver | None = None,
        keep_retired: float = 960.0,
    ) -> None:
        """``allow_loopback`` follows ``FETCH_ALLOW_LOOPBACK`` (tests only, never in production);
        ``dns_servers`` ``FETCH_DNS_SERVERS``: names are looked up as ``fetch_url`` looks them up.
        ``keep_retired``: seconds a server list's connections stay open once a server is added to it (a
        turn's time limit): a turn that took their tools before keeps using them; they were closed at
        once, cutting its call under way and refusing the rest as "unavailable (closed)". A list that
        lost or moved a server is closed at once, as before: its admins want that server gone."""
        lookups = resolver or DnsResolver(dns_servers, lifetime=connect_timeout)
        self._guard = NetGuard(allow_loopback=allow_loopback, resolver=lookups)
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.max_guilds = max_guilds
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self.keep_retired = keep_retired
        self._retired: list[tuple[float, _Entry]] = []
        """Replaced or evicted entries and when to close them, oldest first."""
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._connecting: set[asyncio.Task[tuple[list[Tool], dict[str, str]]]] = set()
        """Connections :meth:`tool_names` stopped waiting for: each ends within its connect timeout."""

    def _client(self, server: McpServer) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=NoServerStream(CappedTransport(GuardedTransport(self._guard), MAX_RESPONSE_BYTES)),
            timeout=httpx.Timeout(server.timeout, connect=min(10.0, server.connect_timeout)),
            follow_redirects=False,
        )

    async def refusal(self, url: str) -> str | None:
        """Why the guard will refuse ``url`` when a turn connects, said when an admin adds it (``/config
        mcp``), in the guard's own words. A name is looked up too: ``lan.example`` answering 10.0.0.5 was
        accepted with a ✅ and left out of every turn after. A name that has no address yet (a server not
        deployed) is accepted: each connection looks it up again and connects only to the address checked
        then, so a name that changes its answer later (DNS rebinding) gains nothing."""
        try:
            parsed = httpx.URL(url)
            if parsed.scheme not in ("http", "https"):  # the settings schema names what is allowed
                return None
            self._guard.check_url(parsed)
            async with asyncio.timeout(LOOKUP_WAIT):
                await self._guard.resolve(
                    parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
                )
        except (UnresolvedHost, TimeoutError):  # looked up again, and checked, at every connection
            return None
        except BlockedAddress as e:
            return str(e)
        except (httpx.InvalidURL, ValueError):  # the settings schema names what is wrong with it
            return None
        return None

    async def tools_for(self, guild_id: int, servers: Mapping[str, str]) -> tuple[list[Tool], dict[str, str]]:
        """This server's MCP tools, and the servers left out this time (name -> why; said once)."""
        key = tuple(sorted(servers.items()))
        async with self._locks[guild_id]:
            entry = self._entries.get(guild_id)
            if entry is not None and entry.servers == key:
                self._entries.move_to_end(guild_id)
                await self._retry(entry)
                return entry.tools, {}
            if entry is not None and not set(entry.servers) <= set(key):
                await entry.aclose()  # a server removed or moved: its admins want it gone now
            else:
                await self._retire(entry)
            mcp = await self._connect(key)
            entry = _Entry(key, mcp, mcp.tools(), retry_at=time.monotonic() + RETRY_EVERY)
            self._entries[guild_id] = entry
            while len(self._entries) > self.max_guilds:
                await self._retire(self._entries.popitem(last=False)[1])
            return entry.tools, dict(mcp.problems)

    async def _retire(self, entry: _Entry | None) -> None:
        """Closes ``entry`` once a turn that took its tools has ended (``keep_retired``), and the retired
        entries whose time has come (or past the most kept)."""
        now = time.monotonic()
        if entry is not None:
            self._retired.append((now + self.keep_retired, entry))
        cut = max(0, len(self._retired) - RETIRED_KEPT)
        due = [e for i, (at, e) in enumerate(self._retired) if i < cut or at <= now]
        self._retired = [(at, e) for i, (at, e) in enumerate(self._retired) if i >= cut and at > now]
        await asyncio.gather(*(e.aclose() for e in due), return_exceptions=True)

    async def tool_names(self, guild_id: int, servers: Mapping[str, str], within: float) -> list[str]:
        """The names of this server's MCP tools, sorted, if known within ``within`` seconds (``/config
        tools`` autocomplete, which Discord waits 3 s for): a connection not made by then goes on, and a
        later keystroke finds it made."""
        if not servers:
            return []
        task = asyncio.ensure_future(self.tools_for(guild_id, servers))
        self._connecting.add(task)
        task.add_done_callback(lambda t: self._connecting.discard(t) or t.cancelled() or t.exception())
        done, _ = await asyncio.wait({task}, timeout=within)
        if not done or task.exception() is not None:
            return []
        return sorted(t.name for t in task.result()[0])

    async def _connect(self, servers: tuple[tuple[str, str], ...]) -> McpTools:
        mcp = McpTools(
            [
                McpServer(name, url=url, timeout=self.call_timeout, connect_timeout=self.connect_timeout)
                for name, url in servers
            ],
            http_client=self._client,
        )
        await mcp.connect()
        return mcp

    async def _retry(self, entry: _Entry) -> None:
        """Connects the servers still left out, when it is time; the ones up join the entry's tools (this
        turn's if they answer within RETRY_WAIT, else a later one's)."""
        up = {n for m in (entry.mcp, *entry.retried) for n in m.names if n not in m.problems}
        down = tuple((n, u) for n, u in entry.servers if n not in up)
        if not down or time.monotonic() < entry.retry_at:
            return
        if entry.retrying is not None and not entry.retrying.done():
            return
        entry.retry_at = time.monotonic() + RETRY_EVERY
        entry.retrying = asyncio.create_task(self._reconnect(entry, down), name="guild-mcp:retry")
        await asyncio.wait({entry.retrying}, timeout=RETRY_WAIT)

    async def _reconnect(self, entry: _Entry, down: tuple[tuple[str, str], ...]) -> None:
        mcp = await self._connect(down)
        if len(mcp.problems) == len(down):
            await mcp.aclose()
            return
        entry.retried.append(mcp)
        entry.tools = [*entry.tools, *mcp.tools()]

    async def aclose(self) -> None:
        await asyncio.gather(*self._connecting, return_exceptions=True)
        entries = [*self._entries.values(), *(e for _, e in self._retired)]
        self._entries.clear()
        self._retired.clear()
        await asyncio.gather(*(e.aclose() for e in entries), return_exceptions=True)
