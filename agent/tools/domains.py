"""Per-server domain rules for ``fetch_url``: an allow-list, a block-list, or both.

Any public GET can carry data out (in its path or query), so a server's admins may narrow where the
agent reads. The rules are checked on every hop, redirects included, beside the SSRF guard.

Matching is on the host name in its ASCII (IDNA/punycode) form, lower-cased, trailing dot removed,
exactly as httpx normalises the URL it will connect to: ``BÜCHER.de``, ``bücher.de.`` and
``xn--bcher-kva.de`` are one host. A rule ``example.com`` covers ``example.com`` and every subdomain
(``docs.example.com``), never ``badexample.com``; ``*.example.com`` and ``.example.com`` mean the same.
A single label is a top-level domain (``gov`` covers every ``*.gov``).
An IP address rule matches only that address. The block-list wins over the allow-list.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from agent.tools.registry import ToolRefused

SERVICE = "fetch_domains"
"""The key under which the runner puts a run's :class:`DomainPolicy` in ``ToolContext.services``."""
_HOST_RE = re.compile(r"^[a-z0-9._:-]{1,253}$")
MAX_RULES = 100
"""Entries per list: enough for a curated allow-list, small enough to show in /config."""


def normalise_domain(rule: str) -> str:
    """A rule as stored: the ASCII host, lower-case, no scheme, port, path or trailing dot.

    Raises ``ValueError`` naming the entry when it is not a host name or IP address.
    """
    text = rule.strip()
    if "@" in text:  # a URL's user part was dropped: "@everyone" became the rule "everyone"
        raise ValueError(f"{rule!r} is not a domain name (it holds an @; write it like example.com)")
    if text.startswith(("*.", ".")):
        text = text.lstrip("*").lstrip(".")
    if "://" not in text:
        text = "http://" + text
    try:
        host = httpx.URL(text).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError) as e:
        raise ValueError(f"{rule!r} is not a domain name ({e})") from None
    host = host.rstrip(".").lower()
    address = literal_address(host)
    if not _HOST_RE.match(host) or not host.strip(".-:") or (address is None and not _labels_ok(host)):
        raise ValueError(f"{rule!r} is not a domain name (write it like example.com)")
    return address or host


def _labels_ok(host: str) -> bool:
    """DNS labels: 1-63 characters, none empty (``a..b``) or starting or ending with ``-``."""
    return all(
        0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
        for label in host.split(".")
    )


def host_of(url: httpx.URL) -> str:
    host = url.raw_host.decode("ascii", errors="replace").rstrip(".").lower()
    return literal_address(host) or host


def literal_address(host: str) -> str | None:
    """An IP address in one spelling, or None for a name. The resolver connects to ``16909060``,
    ``0x1020304``, ``1.2.772`` and ``::ffff:1.2.3.4`` alike as 1.2.3.4 (glibc's inet_aton forms), so
    a rule blocking 1.2.3.4 must see them so too: each of them went past it."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[0-9a-fx.]+", host):
            return None
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def _covers(rule: str, host: str) -> bool:
    return host == rule or host.endswith("." + rule)


@dataclass(frozen=True, slots=True)
class DomainPolicy:
    """One server's rules. Empty ``allow`` means every domain not blocked."""

    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()

    @classmethod
    def of(cls, allow: Iterable[str] = (), block: Iterable[str] = ()) -> DomainPolicy:
        return cls(tuple(normalise_domain(r) for r in allow), tuple(normalise_domain(r) for r in block))

    def __bool__(self) -> bool:
        return bool(self.allow or self.block)

    def overlaps(self) -> list[str]:
        """Allowed domains a block rule covers too (the same domain, or a parent of it): block wins, so
        fetch_url never reads them, whatever the allow-list says."""
        return [a for a in self.allow if any(_covers(b, a) for b in self.block)]

    def problem(self, url: httpx.URL) -> str | None:
        """Why this server's rules refuse ``url``, or ``None`` when they allow it."""
        host = host_of(url)
        blocked = next((r for r in self.block if _covers(r, host)), None)
        if blocked is not None:
            return f"this server's admins blocked {blocked} for fetch_url ({host} is refused)"
        if self.allow and not any(_covers(r, host) for r in self.allow):
            shown = ", ".join(self.allow[:10]) + (" …" if len(self.allow) > 10 else "")
            return f"on this server fetch_url may only read {shown}; {host} is not on that list"
        return None

    def check(self, url: httpx.URL) -> None:
        """Raise :class:`ToolRefused` (the model is told, and can pick another source)."""
        why = self.problem(url)
        if why is not None:
            raise ToolRefused(f"refused {url}: {why}. Use a source on an allowed domain.")
