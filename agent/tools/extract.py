"""Readable text from a fetched body, and the worker process that computes it (``python -m`` this module).

Extraction is CPU work on hostile input: trafilatura is quadratic on flat tables (1 MB of ``<td>``
took 31 s, 400 KB takes about 3 s), and a thread running it can be neither stopped nor kept from
holding a slot of the default pool that files, Chroma and DNS share. So it runs here, in a process
:mod:`agent.tools.extract_pool` kills at its deadline. Before that, the worker interrupts itself at a
soft deadline and answers with plain text from lxml (about 0.3 s for 1 MB), so a slow page still comes
back readable; the hard kill is only for code that cannot be interrupted.

Wire format on stdin/stdout: frames of a 4-byte big-endian length and a payload. A request is a JSON
header frame (``charset``, ``kind``, ``url``, ``soft_deadline_at``: a ``time.monotonic()`` instant,
which is one system-wide clock on Linux, so time spent waiting for a worker counts) and a body frame; the reply is one
JSON frame: ``{"title", "text", "fallback"}`` or ``{"refused": message}``. JSON, never pickle: a
worker fed hostile pages must not be able to run code in the bot by what it answers.
"""

from __future__ import annotations

import codecs
import json
import re
import signal
import struct
import sys
import time
from decimal import Decimal
from typing import IO, Any

_LEN = struct.Struct(">I")


class Unreadable(Exception):
    """The body cannot be read as text; the message is meant for the model."""


class _SoftDeadline(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` inside a library swallows it."""


_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: its mark begins with UTF-16 LE's
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_WIDE_META = re.compile(rb"charset\s*=\s*[\"']?\s*(utf-?(?:16|32)(?:-?[bl]e)?)", re.I)


def _wide_codec(body: bytes, charset: str | None) -> str | None:
    """The UTF-16/32 codec the body is in, from its byte-order mark, the Content-Type charset or a
    ``<meta charset>`` (read with the zero bytes dropped), else None. Without a mark the body must hold
    zero bytes as UTF-16 markup does: a UTF-8 page that wrongly declares UTF-16 stays UTF-8, as in browsers."""
    for bom, codec in _WIDE_BOMS:
        if body.startswith(bom):
            return codec
    head = body[:4096]
    if b"\0" not in head:
        return None
    declared = (charset or "").lower().replace("_", "-")
    if not re.fullmatch(r"utf-?(16|32)(-?[bl]e)?", declared):
        m = _WIDE_META.search(head.replace(b"\0", b""))
        if m is None:
            return None
        declared = m.group(1).decode().lower()
    bits = "32" if "32" in declared else "16"
    if declared.endswith(("le", "be")):
        return f"utf-{bits}-{declared[-2:]}"
    # No mark and no stated order: ASCII markup has its zero byte first in big-endian text.
    step = int(bits) // 8
    first_zero = sum(1 for i in range(0, len(head) - step + 1, step) if head[i] == 0)
    return f"utf-{bits}-be" if first_zero * 2 > len(head) // step else f"utf-{bits}-le"


def as_utf8(body: bytes, charset: str | None, url: str) -> tuple[bytes, str | None]:
    """A UTF-16/32 body (Windows tools save HTML so) as UTF-8 with its charset; other bodies as they are.
    It used to be refused as binary for its zero bytes. Bytes that do not decode stay refused."""
    codec = _wide_codec(body, charset)
    if codec is None:
        return body, charset
    try:  # final=False: a body cut by FETCH_MAX_BYTES (or still arriving) may end inside a character
        text = codecs.getincrementaldecoder(codec)().decode(body, final=False)
    except UnicodeDecodeError:
        raise Unreadable(f"{url} sent binary data, not {codec.upper()} text") from None
    if "\0" in text:
        raise Unreadable(f"{url} sent binary data, not {codec.upper()} text")
    return text.lstrip("\ufeff").encode("utf-8"), "utf-8"


_BROWSER_CODECS = {
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
}
"""Labels browsers read as a superset (the WHATWG Encoding table): pages labelled iso-8859-1 use
Windows-1252's curly quotes and dashes, which Latin-1 would make control characters."""


def as_declared(body: bytes, charset: str | None, kind: str) -> tuple[bytes, str | None]:
    """The body as UTF-8 in the character set it declares, with its charset; a body that is valid UTF-8
    as it is. trafilatura reads HTML bytes by guessing their encoding, never by the Content-Type: a
    French page sent as ``charset=windows-1252`` read "La crčme brűlée ŕ la française", a KOI8-R one came
    out as katakana. Valid UTF-8 stays UTF-8 whatever the header says (servers label UTF-8 pages
    iso-8859-1 by default; Latin text in another charset is almost never valid UTF-8). Text with no
    charset is read as Windows-1252, as browsers and attachments do (it showed U+FFFD for each accent);
    HTML with none keeps its ``<meta charset>`` or trafilatura's guess. An unknown charset is left to
    :func:`extract`, which names it for text."""
    codec = None
    if charset:
        try:
            codec = codecs.lookup(charset).name
        except LookupError:
            return body, charset
    utf8 = codecs.getincrementaldecoder("utf-8")()
    try:
        utf8.decode(body, final=False)
    except UnicodeDecodeError:
        pass
    else:  # FETCH_MAX_BYTES may cut inside the last character: it is dropped, not the page misread
        cut = len(utf8.getstate()[0])
        return (body[:-cut] if cut else body), "utf-8"
    if codec is None and kind == "html":
        return body, charset
    codec = _BROWSER_CODECS.get(codec, codec) if codec else "cp1252"
    return body.decode(codec, errors="replace").encode("utf-8"), "utf-8"


def _indented(text: str) -> str:
    """JSON indented for reading, unless that would more than double it (indentation grows with depth
    times lines: 122 KB nested 900 deep became 55 MB in the bot) or it cannot be parsed (past json's
    recursion limit too), or it would say less (written again through a float, 19.999999999999999999 read
    20.0 and 1e400 Infinity; of a key given twice only the last value was kept): then the text as it came."""

    def exact(number: str) -> float:
        value = float(number)
        if Decimal(repr(value)) != Decimal(number):
            raise ValueError("a number a float cannot hold")
        return value

    def whole(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) < len(pairs):  # a key given twice: a dict keeps only its last value
            raise ValueError("a key given twice")
        return found

    try:
        encoder = json.JSONEncoder(indent=1, ensure_ascii=False).iterencode(
            json.loads(text, parse_float=exact, object_pairs_hook=whole)
        )
        out: list[str] = []
        room = 2 * len(text) + 1000
        for piece in encoder:
            room -= len(piece)
            if room < 0:
                return text
            out.append(piece)
    except (ValueError, RecursionError):
        return text
    return "".join(out)


_MARKUP = re.compile(rb"<[A-Za-z!/?]")
"""The start of a tag, a comment or a doctype: a body with none in its first 64 KB is no HTML."""


def extract(body: bytes, charset: str | None, kind: str, url: str) -> tuple[str, str]:
    """(title, text) of a body already known to be HTML, JSON or text (UTF-16/32 already made UTF-8)."""
    if b"\0" in body[:1024]:  # after as_utf8: no UTF-16 text is left to hold zero bytes
        raise Unreadable(f"{url} sent binary data, not {'HTML' if kind == 'html' else 'text'}")
    if kind == "html" and not _MARKUP.search(body[:65536]):
        # PHP sends JSON as text/html unless told otherwise, some servers text with no type (read as
        # HTML): with no tag to find, trafilatura found nothing, and the model was told "(no readable
        # text on this page)" of a page holding the very numbers asked for.
        kind = "json" if body.lstrip()[:1] in (b"{", b"[") else "text"
    if kind != "html":
        try:
            text = body.decode(charset or "utf-8", errors="replace")
        except LookupError:
            raise Unreadable(
                f"{url} declares the character set {charset!r}, which is not a known text encoding"
            ) from None
        if kind == "json":
            text = _indented(text)
        return "", text.strip()
    import trafilatura
    from trafilatura.deduplication import LRU_TEST

    # Its duplicate test counts paragraphs across every page this worker reads (the whole process): from
    # the fourth reading of a page, by anyone, its text counted as duplicate and came back as menus and
    # footers. Cleared per page, it still drops what one page repeats.
    LRU_TEST.clear()
    text = trafilatura.extract(
        body, url=url, include_comments=False, include_tables=True, favor_recall=True, deduplicate=True
    )
    meta = trafilatura.extract_metadata(body)
    title = (meta.title if meta and meta.title else "") or title_tag(body)
    return title.strip(), (text or plain_text(body)).strip()


def plain_text(body: bytes) -> str:
    """All of the page's text without trafilatura's boilerplate removal: linear, for slow pages."""
    import trafilatura

    return (trafilatura.html2txt(body) or "").strip()


def title_tag(body: bytes) -> str:
    m = re.search(rb"<title[^>]*>(.*?)</title>", body[:200_000], re.I | re.S)
    return m.group(1).decode("utf-8", errors="replace").strip() if m else ""


def read_frame(stream: IO[bytes], limit: int) -> bytes | None:
    """One frame, or ``None`` at a clean end of stream; a frame over ``limit`` is a protocol error."""
    head = stream.read(_LEN.size)
    if not head:
        return None
    if len(head) < _LEN.size:
        raise EOFError("stream ended inside a frame header")
    (size,) = _LEN.unpack(head)
    if size > limit:
        raise ValueError(f"frame of {size} bytes is over the {limit}-byte limit")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("stream ended inside a frame")
    return data


def write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LEN.pack(len(data)) + data)


def _alarm(_signum: int, _frame: Any) -> None:
    raise _SoftDeadline


def _answer(header: dict[str, Any], body: bytes) -> dict[str, Any]:
    signal.setitimer(signal.ITIMER_REAL, max(0.01, float(header["soft_deadline_at"]) - time.monotonic()))
    try:
        body, charset = as_utf8(body, header.get("charset"), header["url"])
        body, charset = as_declared(body, charset, header["kind"])
        title, text = extract(body, charset, header["kind"], header["url"])
        return {"title": title, "text": text, "fallback": False}
    except _SoftDeadline:
        pass
    except Unreadable as e:
        return {"refused": str(e)}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"title": title_tag(body), "text": plain_text(body), "fallback": True}


def main() -> None:
    if len(sys.argv) > 1:  # the address-space cap in MiB: a page that needs more fails, the bot does not
        import resource

        cap = int(sys.argv[1]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the bot's terminal is the bot's to handle
    import trafilatura  # noqa: F401  (imported once, before the first page: ~0.3 s)

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = read_frame(stdin, 1 << 20)
        body = read_frame(stdin, 1 << 30) if header is not None else None
        if header is None or body is None:
            return  # the bot closed the pipe (or died): nothing is left to do
        request = json.loads(header)
        try:
            reply = _answer(request, body)
        except MemoryError:  # RLIMIT_AS: the page needs more than the cap
            reply = {"refused": f"{request.get('url', 'the page')} needs more memory to read than allowed"}
        except Exception as e:  # a worker that answers "failed" stays usable for the next page
            reply = {"refused": f"could not extract text: {type(e).__name__}: {e}"}
        write_frame(stdout, json.dumps(reply, ensure_ascii=False).encode())
        stdout.flush()


if __name__ == "__main__":
    main()
