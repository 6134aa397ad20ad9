"""A web body read raw and decoded by hand, never past a cap: the guard against decompression bombs
(:mod:`agent.inflate` says why and does the inflating). Stacked or unknown encodings are refused.
"""

from __future__ import annotations

import asyncio
import zlib

import httpx

from agent.inflate import ACCEPT_ENCODING, READABLE, Inflater, encoding_layers
from agent.tools.registry import ToolRefused

__all__ = ["ACCEPT_ENCODING", "content_encoding", "read_decoded"]


def content_encoding(headers: httpx.Headers, url: str) -> str:
    """``''``, ``'gzip'`` or ``'deflate'``; anything stacked or unknown is refused."""
    layers = encoding_layers(headers)
    if len(layers) > 1:
        raise ToolRefused(
            f"{url} sent a body compressed {len(layers)} times ({', '.join(layers)}); fetch_url refuses "
            "stacked encodings (a common decompression bomb)"
        )
    if not layers:
        return ""
    if layers[0] not in READABLE:
        raise ToolRefused(f"{url} sent a body in the {layers[0]!r} encoding, which fetch_url cannot read")
    return layers[0]


LATE_MARGIN = 0.25
"""Seconds before the fetch's own deadline at which a body still arriving is cut and kept: the deadline
itself cancels the fetch, and with it everything read."""


async def read_decoded(
    resp: httpx.Response, limit: int, url: str, until: float | None = None
) -> tuple[bytes, str]:
    """At most ``limit`` decoded bytes of the body, and why it was cut: ``''`` (it was not), ``'limit'``
    (there was more) or ``'late'`` (it was still arriving at ``until``, a loop time); the rest is never
    read. A body that has sent nothing by ``until`` raises TimeoutError.

    Memory stays within about ``limit`` plus one network chunk, however much the body would inflate to.
    """
    encoding = content_encoding(resp.headers, url)
    inflater = Inflater(encoding) if encoding else None
    out = bytearray()
    raw = 0
    try:
        async with asyncio.timeout_at(None if until is None else until - LATE_MARGIN):
            async for chunk in resp.aiter_raw():
                raw += len(chunk)
                room = limit + 1 - len(out)
                if inflater is None:
                    out += chunk[:room]
                else:
                    try:
                        out += inflater.feed(chunk, room)
                    except zlib.error as e:
                        raise ToolRefused(f"{url} sent a corrupt {encoding} body ({e})") from None
                if len(out) > limit or raw > limit:
                    return bytes(out[:limit]), "limit"
    except TimeoutError:
        if not out:
            raise
        return bytes(out), "late"
    return bytes(out), ""
