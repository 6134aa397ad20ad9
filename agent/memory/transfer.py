"""Reading a ``/memory export`` file back: every check made before anything is written.

An export is JSONL (optionally gzip-compressed), one row per stored chunk, as
:meth:`agent.memory.types.MemoryRecord.to_row` writes it. It carries no vectors, so it imports into a
store with any embedding: the texts are embedded again. Chunks of one memory are joined back in
order, and a memory whose chunks are not all in the file is refused (a cut file is not imported as a
set of fragments).

Bounds: the file's bytes (compressed and decompressed, decompression stops at the bound), its rows
and its memories. A file that breaks any rule is refused as a whole, with up to ten problems named
by line, so nothing is half-imported for a reason the file already showed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.memory.records import MAX_FIELD, MAX_TEXT, blank, check_namespace, make_rows
from agent.memory.types import KINDS, MemoryStoreError, NewMemory, unverified

if TYPE_CHECKING:
    from agent.memory.chroma_store import ChromaMemory

MAX_PROBLEMS = 10
MAX_SOURCES = 50
MAX_CHUNKS = 1000
_GZIP_MAGIC = b"\x1f\x8b"
_LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp()
_STRINGS = ("id", "parent", "author", "thread", "task", "session", "origin", "created")

_NOT_IN_URL = re.compile(r"[\s<>\x00-\x1f\x7f]")


class ImportRefused(MemoryStoreError):
    """The file is not an importable export; ``problems`` says what, by line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems[:MAX_PROBLEMS]
        more = len(problems) - len(self.problems)
        text = "; ".join(self.problems) + (f"; and {more} more problems" if more > 0 else "")
        super().__init__(text)


@dataclass(frozen=True, slots=True)
class ImportPlan:
    memories: list[NewMemory]
    rows: int
    """Rows (chunks) read from the file."""
    repeated: int
    """Memories the file held more than once (kept once)."""
    exported: list[str] = field(default_factory=list)
    """Each memory's id in the file: a content id of the namespace that exported it, so another
    server's export differs from what this one's would be (``records.record_id``)."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    ids: list[str]
    """Parent id of each memory given, in order (those already stored included)."""
    added: list[str]
    """Memories this import added (the rest were already stored here)."""
    rows: int
    """Rows (chunks) written."""


def decode_export(data: bytes, *, max_bytes: int) -> str:
    """The file as text: gunzipped if it is gzip (at most ``max_bytes`` decompressed), strict UTF-8."""
    if len(data) > max_bytes:
        raise ImportRefused([f"the file is {len(data):,} bytes; the most this bot imports is {max_bytes:,}"])
    if data.startswith(_GZIP_MAGIC):
        inflater = zlib.decompressobj(wbits=31)
        try:
            out = inflater.decompress(data, max_bytes + 1)
        except zlib.error as e:
            raise ImportRefused([f"the file looks gzip-compressed but is damaged ({e})"]) from None
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise ImportRefused([f"the file holds more than {max_bytes:,} bytes once decompressed"])
        if not inflater.eof:
            raise ImportRefused(["the gzip file is cut short (download it again)"])
        data = out
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark (Notepad) is dropped, not "not JSON"
    except UnicodeDecodeError as e:
        raise ImportRefused(
            [f"the file is not UTF-8 text (byte {e.start}); attach the .jsonl export"]
        ) from None


def parse_rows(text: str, *, max_rows: int) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for each non-blank line; every line must be a JSON object."""
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    # Split at "\n" only: JSON escapes it inside strings, but not U+2028, U+2029 or NEL, where
    # str.splitlines also splits (an export holding them was refused as "not JSON").
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(rows) >= max_rows:
            raise ImportRefused([f"the file holds more than {max_rows:,} rows, the most this bot imports"])
        try:
            row = json.loads(line)
        except ValueError as e:
            problems.append(f"line {number} is not JSON ({e.args[0] if e.args else e})")
            continue
        except RecursionError:  # json's scanner recurses per level: "[" * 100_000 is a 200 KB file
            problems.append(f"line {number} is not JSON (nested too deeply)")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number} is not a JSON object")
            continue
        rows.append((number, row))
        if len(problems) > MAX_PROBLEMS:
            break
    if problems:
        raise ImportRefused(problems)
    if not rows:
        raise ImportRefused(["the file holds no memories (it is empty)"])
    return rows


def _row_problem(row: Mapping[str, Any]) -> str | None:
    try:  # json.loads accepts "\ud800"; such a text fails at the first write, after this check said yes
        json.dumps(row, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return "holds a lone UTF-16 surrogate (half a character, such as \\ud800), which cannot be stored"
    text = row.get("text")
    if not isinstance(text, str) or blank(text):
        return "'text' must be non-empty text"
    if row.get("kind", "note") not in KINDS:
        return f"'kind' must be one of {', '.join(KINDS)}, got {row.get('kind')!r}"
    for key in _STRINGS:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            return f"'{key}' must be text"
        if isinstance(value, str) and len(value) > MAX_FIELD and key != "created":
            return f"'{key}' is longer than {MAX_FIELD} characters"
    chunk, chunks = row.get("chunk", 0), row.get("chunks", 1)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (chunk, chunks)):
        return "'chunk' and 'chunks' must be whole numbers"
    if not 0 <= chunk < chunks <= MAX_CHUNKS:
        return f"'chunk' {chunk} of 'chunks' {chunks} is out of range"
    sources = row.get("sources", [])
    if not isinstance(sources, list) or len(sources) > MAX_SOURCES:
        return f"'sources' must be a list of at most {MAX_SOURCES} URLs"
    if any(not isinstance(u, str) or len(u) > 2000 or _NOT_IN_URL.search(u.strip()) for u in sources):
        # A line break, "<" or ">" ended a footer's link and wrote Markdown after it in the bot's voice.
        return "'sources' must hold URLs (text without spaces, line breaks, control characters, < or >)"
    return _created(row)[1]


def _created(row: Mapping[str, Any]) -> tuple[float | None, str | None]:
    ts = row.get("created_ts")
    if ts is None and isinstance(row.get("created"), str):
        try:
            parsed = dt.datetime.fromisoformat(row["created"])
        except ValueError:
            return None, f"'created' {row['created']!r} is not an ISO date"
        ts = parsed.replace(tzinfo=parsed.tzinfo or dt.UTC).timestamp()
    if ts is None:
        return None, None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return None, "'created_ts' must be a Unix time"
    if not 0 <= ts <= _LATEST:
        return None, f"'created_ts' {ts} is not a date between 1970 and 2100"
    return float(ts), None


def _imported_origin(row: Mapping[str, Any]) -> str:
    """``import``, unless the exported memory may carry what a page said: it stays marked unverified."""
    origin = str(row.get("origin") or "")
    if unverified(origin, tuple(row.get("sources") or ())):
        return "agent-web" if origin == "agent-web" else "auto-web"
    return "import"


def plan_import(numbered: Iterable[tuple[int, Mapping[str, Any]]], *, max_memories: int) -> ImportPlan:
    """Check every row, join chunks back into memories; raise :class:`ImportRefused` on any problem."""
    problems: list[str] = []
    groups: dict[str, dict[int, tuple[int, Mapping[str, Any]]]] = {}
    order: list[str] = []
    rows = 0
    for number, row in numbered:
        rows += 1
        why = _row_problem(row)
        if why is not None:
            problems.append(f"line {number}: {why}")
            continue
        parent = str(row.get("parent") or row.get("id") or f"line-{number}")
        chunk = int(row.get("chunk", 0))
        group = groups.get(parent)
        if group is None:
            groups[parent] = group = {}
            order.append(parent)
        seen = group.get(chunk)
        if seen is not None and seen[1].get("text") != row.get("text"):
            problems.append(f"line {number}: part {chunk + 1} of memory {parent} differs from line {seen[0]}")
        group.setdefault(chunk, (number, row))
    memories: list[NewMemory] = []
    exported: list[str] = []
    texts: set[str] = set()
    repeated = 0
    for parent in order:
        parts = groups[parent]
        first_line, first = parts[min(parts)]
        expected = int(first.get("chunks", 1))
        if sorted(parts) != list(range(expected)):
            missing = sorted(set(range(expected)) - set(parts))
            problems.append(
                f"line {first_line}: memory {parent} has {expected} parts but the file lacks "
                f"part{'s' if len(missing) > 1 else ''} {', '.join(str(m + 1) for m in missing[:5])}"
            )
            continue
        text = "".join(
            ("" if i == 0 or parts[i][1].get("glued") is True else "\n\n") + str(parts[i][1]["text"]).strip()
            for i in range(expected)
        )
        if len(text) > MAX_TEXT:
            problems.append(f"line {first_line}: memory {parent} is over {MAX_TEXT:,} characters")
            continue
        if text in texts:
            repeated += 1
            continue
        texts.add(text)
        item = NewMemory(
            text=text,
            kind=first.get("kind", "note"),
            author=first.get("author") or "",
            thread=first.get("thread") or "",
            task=first.get("task") or "",
            sources=tuple(u.strip() for u in first.get("sources") or () if u.strip()),
            created=_created(first)[0],
            session=first.get("session") or "",
            # a note a page may have asked for stays one: recall labels only these "unverified"
            origin=_imported_origin(first),
        )
        memories.append(item)
        exported.append(parent)
    if problems:
        raise ImportRefused(problems)
    if len(memories) > max_memories:
        raise ImportRefused(
            [
                f"the file holds {len(memories):,} memories; the most this bot imports at once is {max_memories:,}"
            ]
        )
    return ImportPlan(memories, rows, repeated, exported)


def read_export(data: bytes, *, max_bytes: int, max_rows: int, max_memories: int) -> ImportPlan:
    """Decode, parse and check a whole export file (see the module docstring)."""
    text = decode_export(data, max_bytes=max_bytes)
    return plan_import(parse_rows(text, max_rows=max_rows), max_memories=max_memories)


async def import_memories(
    memory: ChromaMemory, namespace: str | int, memories: Sequence[NewMemory], *, batch: int = 256
) -> ImportResult:
    """All or nothing: memories already here are left as they are; if a write fails, the ones this
    call added are forgotten again before the error is raised."""
    ns = check_namespace(namespace)
    added_parents: list[str] = []
    parents: list[str] = []
    written = 0
    try:
        for i in range(0, len(memories), batch):
            part = memories[i : i + batch]
            ids = [make_rows(ns, m, 0.0)[0] for m in part]
            known = {r.parent or r.id for r in await memory.get(ns, ids)}
            result = await memory.store_many(ns, part)
            added_parents += [p for p in result.ids if p not in known]
            parents += result.ids
            written += result.added
    except BaseException:
        if added_parents:
            await asyncio.shield(memory.forget(ns, list(dict.fromkeys(added_parents))))
        raise
    return ImportResult(parents, list(dict.fromkeys(added_parents)), written)
