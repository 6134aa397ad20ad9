"""A web body read raw and decoded by hand, never past a cap: the guard against decompression bombs.

httpx decodes ``Content-Encoding`` one network chunk at a time with no output limit, so 269 bytes sent
as ``gzip, gzip, gzip`` (1 GiB inside) became 1 GiB in memory before any cap could look at it (the
red team's bomb took the bot to 2.1 GB). Here the raw bytes are read with ``aiter_raw`` and inflated
with zlib's ``max_length``, so no call produces more than the room left under the cap. Only one layer
of gzip or deflate is accepted (the request only offers those); stacked or unknown encodings are refused.
"""

from __future__ import annotations

import zlib

import httpx

from agent.tools.registry import ToolRefused

ACCEPT_ENCODING = "gzip, deflate"
"""What requests offer; brotli and zstd are not offered, so a server that sends them anyway is refused."""
_STEP = 64 * 1024
"""Most bytes one zlib call may produce: memory per call stays small whatever the ratio."""
MAX_GZIP_MEMBERS = 1000
"""Gzip members one body may hold. Each member's end copies the rest of its network chunk (zlib's
``unused_data``), so 2 MB of 20-byte empty members cost 0.6 s of the event loop per page (100,000
members, quadratic in members per chunk); a normal body has one, a server gzipping per write a few dozen."""


def content_encoding(headers: httpx.Headers, url: str) -> str:
    """``''``, ``'gzip'`` or ``'deflate'``; anything stacked or unknown is refused."""
    layers = [
        e.strip().lower()
        for value in headers.get_list("content-encoding")
        for e in value.split(",")
        if e.strip() and e.strip().lower() != "identity"
    ]
    if len(layers) > 1:
        raise ToolRefused(
            f"{url} sent a body compressed {len(layers)} times ({', '.join(layers)}); fetch_url refuses "
            "stacked encodings (a common decompression bomb)"
        )
    if not layers:
        return ""
    enc = {"x-gzip": "gzip"}.get(layers[0], layers[0])
    if enc not in ("gzip", "deflate"):
        raise ToolRefused(f"{url} sent a body in the {layers[0]!r} encoding, which fetch_url cannot read")
    return enc


class _Inflater:
    """Incremental gzip/deflate that returns at most ``room`` bytes per call."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._raw_deflate_tried = False
        self._members = 1
        self._d = self._new()

    def _new(self) -> zlib._Decompress:
        return zlib.decompressobj(zlib.MAX_WBITS | 16 if self.encoding == "gzip" else zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        out: list[bytes] = []
        made = 0
        while made < room:
            try:
                piece = self._d.decompress(data, min(room - made, _STEP))
            except zlib.error:
                if self.encoding == "deflate" and not self._raw_deflate_tried and not made:
                    # Some servers send raw deflate without the zlib wrapper HTTP asks for.
                    self._raw_deflate_tried = True
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise
            self._raw_deflate_tried = True
            out.append(piece)
            made += len(piece)
            if self._d.eof:
                data = self._d.unused_data
                if self.encoding != "gzip" or not data.strip(b"\0"):
                    break
                self._members += 1
                if self._members > MAX_GZIP_MEMBERS:
                    raise zlib.error(f"more than {MAX_GZIP_MEMBERS} gzip members")
                self._d = self._new()  # a gzip body may hold several members
                continue
            data = self._d.unconsumed_tail
            if not data and not piece:
                break
        return b"".join(out)


async def read_decoded(resp: httpx.Response, limit: int, url: str) -> tuple[bytes, bool]:
    """At most ``limit`` decoded bytes of the body and whether there was more; the rest is never read.

    Memory stays within about ``limit`` plus one network chunk, however much the body would inflate to.
    """
    encoding = content_encoding(resp.headers, url)
    inflater = _Inflater(encoding) if encoding else None
    out = bytearray()
    raw = 0
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
            return bytes(out[:limit]), True
    return bytes(out), False
