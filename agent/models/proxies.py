"""Which proxy a model call goes through (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, less ``NO_PROXY``
and loopback), read as httpx reads them, so a call that cannot get through names the proxy: it named the
provider's base URL, a setting that was right, when the proxy was the one down."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

LOOPBACK = ("all://localhost", "all://127.0.0.1", "all://[::1]")
"""Addresses no proxy could reach for this machine: always called directly (a ``mounts`` key to None)."""


def proxy_for(url: str) -> str | None:
    """The proxy a call to ``url`` goes through, as ``agent.models.http.proxy_mounts`` mounts them, shown
    as ``scheme://host:port`` (a user and password in it stay out); None when it goes directly."""
    try:  # httpx's own reading and matching, as the client's mounts use them (private, pinned)
        from httpx._utils import URLPattern, get_environment_proxies

        target = httpx.URL(url)
    except (ImportError, httpx.InvalidURL):
        return None
    found = {**get_environment_proxies(), **dict.fromkeys(LOOPBACK)}
    for pattern in sorted(URLPattern(p) for p in found):
        if pattern.matches(target):
            proxy = found[pattern.pattern]
            if proxy is None or not proxy.startswith(("http://", "https://")):  # socks5:// is not mounted
                return None
            parts = urlsplit(proxy)
            return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return None
