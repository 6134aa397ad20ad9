"""A name server on 127.0.0.1 (UDP) for the fetch guard's resolver: answers A/AAAA for the names it is
given, never answers names under ``hang.test`` (a hostile page's name server), NXDOMAIN for the rest."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


@dataclass
class FakeDNS(asyncio.DatagramProtocol):
    records: dict[str, list[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    port: int = 0
    transport: asyncio.DatagramTransport | None = None
    _heard: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_asked(self, names: int, within: float = 10) -> None:
        """Until ``names`` different names were asked (each lookup waits for its answer)."""
        async with asyncio.timeout(within):
            while len(set(self.asked)) < names:
                self._heard.clear()
                await self._heard.wait()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.asked.append(name)
        self._heard.set()
        if name.endswith("hang.test"):
            return  # never answered
        reply = dns.message.make_response(query)
        if name not in self.records:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        want = 4 if question.rdtype == dns.rdatatype.A else 6
        found = [a for a in self.records.get(name, []) if ipaddress.ip_address(a).version == want]
        if found:
            rdtype = "A" if want == 4 else "AAAA"
            reply.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", rdtype, found))
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


@contextlib.asynccontextmanager
async def serving_dns(records: dict[str, list[str]]) -> AsyncIterator[FakeDNS]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: FakeDNS(records), local_addr=("127.0.0.1", 0)
    )
    server.port = transport.get_extra_info("sockname")[1]
    try:
        yield server
    finally:
        transport.close()
