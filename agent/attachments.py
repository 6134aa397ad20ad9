"""Files a user attaches: saved into the session's workspace, and the agent told what arrived.

Text, Markdown, CSV, JSON and code are saved as they are (``read_file`` reads them); a PDF is saved and
its text extracted beside it (``report.pdf.txt``); an image is saved and, when the model can see
images, sent to it as an image. Anything else, or anything too big, is refused with the reason, and the
agent is told about the refusal too so it can say so.

Why PDF text comes from a child process: a PDF is a program of compressed streams, and a hostile one
can decompress to gigabytes or loop for minutes inside pypdf. The child sets its own memory and CPU
limits before it opens the file and is killed at its deadline, so neither can reach the bot.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import json
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from agent.messages import ImagePart
from agent.tools.extract_pool import minimal_env
from agent.tools.safe_names import unsafe_char

__all__ = ["AttachmentLimits", "ImagePart", "IncomingFile", "Received", "receive", "safe_filename"]

# fmt: off
TEXT_EXTENSIONS = frozenset([
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".yaml", ".yml",
    ".toml", ".xml", ".html", ".htm", ".log", ".ini", ".cfg", ".conf", ".py", ".pyi", ".ipynb", ".js",
    ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".go", ".rb",
    ".php", ".sh", ".bash", ".zsh", ".ps1", ".sql", ".r", ".swift", ".cs", ".css", ".scss", ".tex",
    ".lua", ".pl", ".hs", ".scala", ".dart", ".vue", ".svelte",
])
# fmt: on
IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_PDF_SCRIPT = str(Path(__file__).with_name("pdf_text.py"))
KINDS_HINT = "text, Markdown, CSV, JSON, code, PDF, or a PNG, JPEG, GIF or WebP image"


@dataclass(frozen=True, slots=True)
class IncomingFile:
    """One attachment as the chat platform describes it."""

    filename: str
    url: str
    size: int
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_files: int = 5
    """Per message."""
    max_file_bytes: int = 8 * 1024 * 1024
    max_message_bytes: int = 20 * 1024 * 1024
    max_image_bytes: int = 5 * 1024 * 1024
    """Anthropic's per-image limit, the smallest of the three providers'."""
    pdf_max_pages: int = 200
    pdf_max_chars: int = 300_000
    pdf_timeout: float = 20.0
    pdf_memory_mb: int = 512


@dataclass(slots=True)
class Received:
    saved: list[str] = field(default_factory=list)
    """Workspace-relative names written, extracted text files included."""
    lines: list[str] = field(default_factory=list)
    """What the agent is told, one line per attachment."""
    refused: list[str] = field(default_factory=list)
    """``name: why`` for each attachment not taken (shown to the user too)."""
    images: list[ImagePart] = field(default_factory=list)

    def refuse(self, reasons: Sequence[str]) -> None:
        """``name: why`` for attachments not taken: shown to the user, and told to the agent too."""
        self.refused += reasons
        self.lines += [f"{r} (not saved)" for r in reasons]

    def note(self) -> str:
        """The text appended to the user's message, for the agent."""
        if not self.lines:
            return ""
        return "[Attached files, saved in your workspace]\n" + "\n".join(f"- {x}" for x in self.lines)


def safe_filename(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A name that is one harmless path component: no separators, no control, format (bidi) or
    surrogate characters, no leading dots, at most 100 characters with its extension kept, unique
    among ``taken``."""
    name = unicodedata.normalize("NFKC", name or "")
    out = "".join(
        "_"
        if ch in "/\\:"
        else " "
        if ch.isspace()
        else ""
        if unsafe_char(ch) or unicodedata.category(ch) in ("Co", "Cn")  # private-use, unassigned too
        else ch
        for ch in name
    )
    out = " ".join(out.split()).lstrip(".").strip() or "attachment"
    stem, dot, ext = out.rpartition(".")
    if not dot or not stem or len(ext) > 12:
        stem, ext = out, ""
    ext = f".{ext.strip()}" if ext.strip() else ""
    stem = stem.strip()[: 100 - len(ext)] or "attachment"
    candidate, n = stem + ext, 2
    while candidate in taken:
        suffix = f" ({n})"
        candidate, n = stem[: 100 - len(ext) - len(suffix)] + suffix + ext, n + 1
    return candidate


def _kind(name: str, head: bytes) -> tuple[str, str | None]:
    """(kind, image media type): kind is text, pdf, image or other, by content first."""
    for magic, media in IMAGE_MAGIC:
        if head.startswith(magic):
            return "image", media
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "image/webp"
    if head.startswith(b"%PDF-"):
        return "pdf", None
    suffix = Path(name.lower()).suffix
    if suffix in TEXT_EXTENSIONS or name.lower() in {"readme", "makefile", "dockerfile", "license"}:
        return "text", None
    return "other", None


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),  # before UTF-16: its mark begins with UTF-16 LE's
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def _as_utf8(data: bytes) -> tuple[bytes, str] | None:
    """The text as UTF-8 (what ``read_file`` reads) and the encoding it came in ('' for UTF-8), or
    None when it is not text. Windows programs write text as UTF-16 with a byte-order mark (Notepad's
    and Excel's "Unicode") or as Windows-1252 (Excel's CSV): both used to be refused as unsupported."""
    for bom, codec, shown in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                return None
            return None if "\0" in text else (text.encode("utf-8"), shown)
    if b"\0" in data:
        return None
    try:
        data.decode("utf-8-sig")
        return data, ""
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace").encode("utf-8"), "Windows-1252"


async def _download(client: httpx.AsyncClient, f: IncomingFile, cap: int) -> bytes:
    """At most ``cap`` bytes, whatever the declared size says; more is an error, not a cut file."""
    if not f.url.startswith(("https://", "http://")):
        raise ValueError("the attachment has no http(s) address")
    try:  # a name with a line break in its address: InvalidURL is no HTTPError, and it failed the turn
        httpx.URL(f.url)
    except httpx.InvalidURL as e:
        raise ValueError(f"its address cannot be downloaded ({e})") from None
    buf = bytearray()
    # Raw bytes, so ask for them: a CDN offered gzip sends it, and the compressed bytes were saved.
    plain = {"Accept-Encoding": "identity"}
    async with client.stream("GET", f.url, headers=plain, follow_redirects=False, timeout=30) as resp:
        if resp.status_code != 200:
            raise ValueError(f"downloading it failed (HTTP {resp.status_code})")
        async for chunk in resp.aiter_raw():
            buf += chunk
            if len(buf) > cap:
                raise ValueError(f"it is larger than the {_mb(cap)} limit")
    return bytes(buf)


def _mb(n: int, places: int = 0) -> str:
    return f"{n / 1024 / 1024:.{places}f} MB" if n >= 1024 * 1024 else f"{n / 1024:.{places}f} KB"


def _apart(size: int, limit: int) -> tuple[str, str]:
    """Both sizes, with a decimal when whole units would show a file just over a limit as the limit
    ("it is 10 KB, over the 10 KB limit")."""
    for places in (0, 1, 2):
        shown = _mb(size, places), _mb(limit, places)
        if shown[0] != shown[1]:
            return shown[0], shown[1].replace(".0 ", " ").replace(".00 ", " ")  # "10 KB", not "10.0 KB"
    return f"{size:,} bytes", f"{limit:,} bytes"


async def _pdf_text(path: Path, limits: AttachmentLimits) -> tuple[str, int]:
    """(text, pages) from the child process :mod:`agent.pdf_text`; raises ValueError with the reason."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        _PDF_SCRIPT,
        str(path),
        str(limits.pdf_max_pages),
        str(limits.pdf_max_chars),
        str(limits.pdf_memory_mb),
        str(int(limits.pdf_timeout)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=minimal_env(),  # it parses hostile PDFs: no API keys or bot token to read
    )
    try:
        async with asyncio.timeout(limits.pdf_timeout + 2):
            out, _ = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ValueError(f"its text could not be read within {limits.pdf_timeout:g} s") from None
    try:
        result = json.loads(out)
    except ValueError:
        raise ValueError("its text could not be read (the PDF reader stopped at a limit)") from None
    if "error" in result:
        raise ValueError(str(result["error"]))
    return str(result["text"]), int(result["pages"])


async def receive(
    files: Sequence[IncomingFile],
    workspace: Path,
    client: httpx.AsyncClient,
    *,
    vision: bool,
    limits: AttachmentLimits = AttachmentLimits(),
    quota_left: int | None = None,
    readable: bool = True,
) -> Received:
    """Save what can be used; refuse the rest with a reason. Never raises for a bad file.

    ``readable``: whether the agent has ``read_file``; without it (switched off for a server) it was
    told to read the files with a tool it did not have, and its failed call showed in the thread."""
    got = Received()
    await asyncio.to_thread(workspace.mkdir, parents=True, exist_ok=True, mode=0o700)
    taken = set(await asyncio.to_thread(lambda: {p.name for p in workspace.iterdir()}))
    budget = limits.max_message_bytes if quota_left is None else min(limits.max_message_bytes, quota_left)
    refused: list[str] = []
    for i, f in enumerate(files):
        name = safe_filename(f.filename, taken)
        if i >= limits.max_files:
            refused.append(f"{name}: only {limits.max_files} files are read per message")
            continue
        cap = min(limits.max_file_bytes, budget)
        try:
            if f.size > cap:
                size, most = _apart(f.size, cap)
                raise ValueError(
                    f"it is {size}, over the {most} limit per file"
                    if cap == limits.max_file_bytes
                    else f"it is {size}, over the {most} left for this message"
                    + (" and the workspace quota" if quota_left is not None and quota_left < f.size else "")
                )
            data = await _download(client, f, cap)
            budget -= await _take(
                got, workspace, name, data, limits, vision=vision, taken=taken, room=cap, readable=readable
            )
        except (ValueError, httpx.HTTPError, OSError) as e:
            refused.append(f"{name}: {e}")
    got.refuse(refused)
    return got


async def _take(
    got: Received,
    workspace: Path,
    name: str,
    data: bytes,
    limits: AttachmentLimits,
    *,
    vision: bool,
    taken: set[str],
    room: int,
    readable: bool = True,
) -> int:
    """Saves ``data``; returns the bytes written (the PDF's text file not counted, as before)."""
    kind, media = _kind(name, data[:16])
    converted = _as_utf8(data) if kind == "text" else (data, "")
    if kind == "other" or converted is None:
        raise ValueError(f"unsupported type: attach {KINDS_HINT}")
    data, came_as = converted
    if len(data) > room:
        raise ValueError(f"converted to UTF-8 it is {_mb(len(data))}, over the {_mb(room)} left")
    path = workspace / name
    await asyncio.to_thread(path.write_bytes, data)
    taken.add(name)
    got.saved.append(name)
    size = _mb(len(data)) if len(data) >= 1024 else f"{len(data)} bytes"  # "0 KB" read as empty
    read = "read it with read_file" if readable else "saved, but read_file is not among your tools"
    if kind == "text":
        was = f", converted to UTF-8 from {came_as}" if came_as else ""
        got.lines.append(f"{name} ({size}, text{was}): {read}")
    elif kind == "pdf":
        try:
            text, pages = await _pdf_text(path, limits)
        except ValueError as e:
            got.lines.append(f"{name} ({size}, PDF): saved, but {e}")
            return len(data)
        txt = safe_filename(name + ".txt", taken)
        await asyncio.to_thread((workspace / txt).write_text, text, encoding="utf-8")
        taken.add(txt)
        got.saved.append(txt)
        empty = " (no text layer: it may be scanned images)" if not text.strip() else ""
        got.lines.append(f"{name} ({size}, PDF, {pages} pages): its text is in {txt}{empty}; {read}")
    elif not vision:
        got.lines.append(f"{name} ({size}, image): saved, but the model in use cannot see images")
    elif len(data) > limits.max_image_bytes:
        got.lines.append(
            f"{name} ({size}, image): saved, but too large to show ({_mb(limits.max_image_bytes)} max)"
        )
    else:
        got.images.append(ImagePart(media or "image/png", base64.b64encode(data).decode("ascii"), name))
        got.lines.append(f"{name} ({size}, image): shown to you with this message")
    return len(data)
