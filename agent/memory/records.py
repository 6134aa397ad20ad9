"""How a memory becomes rows: namespace checks, content-hash ids, chunks, and Chroma metadata.

Ids are content hashes (never Python's ``hash()``, which changes per process) of the namespace and
the normalised text, so the same fact stored twice in one server is one row, and the same text in
two servers gives two unrelated ids. Ids are cut to 16 hex digits (64 bits) because people and the
model cite them; chunk ids are ``<parent>-<n>``.

Chroma metadata values must be scalars, so source URLs travel as one space-joined string (a URL
holds no spaces).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from agent.memory.types import KINDS, MemoryHit, MemoryRecord, NamespaceError, NewMemory

ID_HEX = 16
CHUNK_TARGET = 1000
"""Characters per chunk: paragraphs are packed up to about this size."""
CHUNK_MAX = 1500
"""A single paragraph longer than this is cut at sentence ends, then hard."""
MAX_TEXT = 100_000
"""A memory longer than this is refused: it is a document, not a memory."""
MAX_FIELD = 500
"""author, thread and task are cut to this many characters."""

NS_KEY = "ns"
_ID_RE = re.compile(r"^[0-9a-f]{16}(-\d{1,4})?$")


def check_namespace(namespace: object) -> str:
    """The namespace as a clean string (guild ids may come as int), or a clear :class:`NamespaceError`."""
    if isinstance(namespace, bool) or not isinstance(namespace, str | int):
        raise NamespaceError(f"namespace must be a guild id (str or int), got {type(namespace).__name__}")
    ns = str(namespace).strip()
    if not ns:
        raise NamespaceError("namespace is empty: memory is per server, so a guild id is required")
    if len(ns) > 200 or any(unicodedata.category(c)[0] == "C" for c in ns):
        raise NamespaceError("namespace must be at most 200 printable characters")
    return ns


def check_id(value: object) -> str:
    """A memory id as the store makes them, so a typo is reported instead of silently matching nothing."""
    if not isinstance(value, str) or not _ID_RE.match(value.strip().lower()):
        raise ValueError(f"{value!r} is not a memory id (16 hex digits, optionally -N for a chunk)")
    return value.strip().lower()


def normalise(text: str) -> str:
    """Text as compared for dedup: Unicode NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def record_id(namespace: str, text: str) -> str:
    digest = hashlib.sha256(f"{namespace}\x00{normalise(text)}".encode()).hexdigest()
    return digest[:ID_HEX]


def _split_long(paragraph: str) -> list[tuple[str, bool]]:
    """Cut an oversized paragraph at sentence ends, and hard where a sentence is itself too long.
    Each piece comes with whether it continues the previous one with no space between (a hard cut)."""
    pieces: list[tuple[str, bool]] = []
    current, glued = "", False
    for sentence in re.split(r"(?<=[.!?。])\s+|\n", paragraph):
        while len(sentence) > CHUNK_MAX:
            cut = sentence.rfind(" ", 0, CHUNK_TARGET)
            cut = cut if cut > CHUNK_TARGET // 2 else CHUNK_TARGET
            if current:
                pieces.append((current, glued))
                current, glued = "", False
            pieces.append((sentence[:cut].strip(), glued))
            glued = not sentence[cut - 1].isspace() and not sentence[cut].isspace()
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > CHUNK_TARGET:
            pieces.append((current, glued))
            current, glued = sentence, False
        else:
            current = f"{current} {sentence}".strip() if current else sentence
    if current:
        pieces.append((current, glued))
    return [p for p in pieces if p[0]]


def chunk_text(text: str) -> list[tuple[str, bool]]:
    """Paragraph-packed chunks of about ``CHUNK_TARGET`` characters; short texts stay whole. Each comes
    with whether it continues the previous chunk with no space between (text without spaces, cut hard):
    an export carries it, so an import joins the chunks back into the same text, and the same id."""
    text = text.strip()
    if len(text) <= CHUNK_MAX:
        return [(text, False)]
    paragraphs: list[tuple[str, bool]] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if para:
            paragraphs.extend([(para, False)] if len(para) <= CHUNK_MAX else _split_long(para))
    chunks: list[tuple[str, bool]] = []
    current, glued = "", False
    for para, para_glued in paragraphs:
        if current and (para_glued or len(current) + 2 + len(para) > CHUNK_TARGET):
            chunks.append((current, glued))
            current, glued = para, para_glued
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append((current, glued))
    return chunks


def _clip(value: str) -> str:
    return (value or "").strip()[:MAX_FIELD]


def blank(text: str) -> bool:
    """Nothing visible in ``text``: only spaces, control characters (NUL) and invisible formatting (zero-width
    spaces, BOMs). A note of "\\x00" was stored as a memory nobody could read, and recalled by any short query."""
    return all(unicodedata.category(c)[0] in "CZ" for c in text)


def check_memory(item: NewMemory) -> NewMemory:
    if not isinstance(item.text, str) or blank(item.text):
        raise ValueError("a memory needs non-empty text")
    if len(item.text) > MAX_TEXT:
        raise ValueError(f"a memory holds at most {MAX_TEXT} characters (got {len(item.text)})")
    if item.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {item.kind!r}")
    return item


def make_rows(
    namespace: str, item: NewMemory, created: float
) -> tuple[str, list[tuple[str, str, str, dict[str, Any]]]]:
    """(parent id, rows) where a row is (id, document, text to embed, metadata).

    A chunk of a research answer is embedded with its task in front, so the fourth paragraph of an
    answer is still found by a question about the topic it never names again.
    """
    check_memory(item)
    parent = record_id(namespace, item.text)
    chunks = chunk_text(item.text)
    urls = " ".join(
        u.strip() for u in item.sources if isinstance(u, str) and u.strip() and " " not in u.strip()
    )
    task = _clip(item.task)
    rows = []
    for i, (chunk, glued) in enumerate(chunks):
        rid = parent if len(chunks) == 1 else f"{parent}-{i}"
        meta: dict[str, Any] = {
            NS_KEY: namespace,
            "kind": item.kind,
            "author": _clip(item.author),
            "thread": _clip(item.thread),
            "task": task,
            "created": float(created),
            "urls": urls,
            "parent": parent,
            "chunk": i,
            "chunks": len(chunks),
            "session": _clip(item.session),
            "origin": _clip(item.origin),
        }
        if glued:
            meta["glued"] = True
        to_embed = f"{task}\n\n{chunk}" if task and item.kind == "research" else chunk
        rows.append((rid, chunk, to_embed, meta))
    return parent, rows


def to_record(rid: str, document: str | None, meta: Mapping[str, Any] | None) -> MemoryRecord:
    return MemoryRecord(**_record_fields(rid, document, meta or {}))


def to_hit(rid: str, document: str | None, meta: Mapping[str, Any] | None, relevance: float) -> MemoryHit:
    return MemoryHit(**_record_fields(rid, document, meta or {}), relevance=float(relevance))


def _record_fields(rid: str, document: str | None, m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": rid,
        "text": document or "",
        "kind": str(m.get("kind", "note")),
        "created": float(m.get("created", 0.0)),
        "sources": tuple(str(m.get("urls", "")).split()),
        "parent": str(m.get("parent", rid)),
        "chunk": int(m.get("chunk", 0)),
        "chunks": int(m.get("chunks", 1)),
        "glued": bool(m.get("glued", False)),
    } | {k: str(m.get(k, "")) for k in ("author", "thread", "task", "session", "origin")}
