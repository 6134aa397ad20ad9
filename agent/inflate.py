"""Gzip/deflate inflated in bounded steps: the one guard against decompression bombs, shared by the
fetch tool (:mod:`agent.tools.decoding`) and the model client (:mod:`agent.models.http`).

httpx decodes ``Content-Encoding`` one network chunk at a time with no output limit, so 269 bytes sent
as ``gzip, gzip, gzip`` (1 GiB inside) became 1 GiB in memory before any cap could look at it (the
red team's bomb took the bot to 2.1 GB). Callers read raw bytes (``aiter_raw`` or the transport's
stream) and inflate them here with zlib's ``max_length``, so no call produces more than the room left
under their cap. Only one layer of gzip or deflate is read; callers refuse stacked or other encodings.
"""

from __future__ import annotations

import zlib

import httpx

ACCEPT_ENCODING = "gzip, deflate"
"""What requests offer; brotli and zstd are not offered, so a server that sends them anyway is refused."""
READABLE = ("gzip", "deflate")
_STEP = 64 * 1024
"""Most bytes one zlib call may produce: memory per call stays small whatever the ratio."""
MAX_GZIP_MEMBERS = 1000
"""Gzip members one body may hold. Each member's end copies the rest of its network chunk (zlib's
``unused_data``), so 2 MB of 20-byte empty members cost 0.6 s of the event loop per page (100,000
members, quadratic in members per chunk); a normal body has one, a server gzipping per write a few dozen."""


def encoding_layers(headers: httpx.Headers) -> list[str]:
    """The body's encodings in the order applied, lower case, ``identity`` left out, ``x-gzip`` as gzip."""
    return [
        {"x-gzip": "gzip"}.get(e.strip().lower(), e.strip().lower())
        for value in headers.get_list("content-encoding")
        for e in value.split(",")
        if e.strip() and e.strip().lower() != "identity"
    ]


class Inflater:
    """Incremental gzip/deflate that returns at most ``room`` bytes per call (raises ``zlib.error``)."""

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
