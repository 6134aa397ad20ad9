"""/memory export, import and publish: the work behind the commands (README "Import").

An export has no vectors, so every text is embedded again with this bot's embedding; the whole file
is checked before anything is written (:mod:`agent.memory.transfer`), the attachment's size before it
is downloaded, and writing is all or nothing (:func:`agent.memory.transfer.import_memories`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import json
import zlib
from typing import TYPE_CHECKING, Any

import discord
import structlog

from agent.memory.records import check_namespace, record_id
from agent.memory.transfer import ImportPlan, ImportRefused, import_memories, read_export
from agent.memory.types import MemoryRecord, NewMemory
from agent.tools.memory_tools import private_namespace
from bot.memory_text import FROM_ELSEWHERE, describe, excerpt, fit, human_bytes, parse_memory_id

if TYPE_CHECKING:
    from bot.config import BotSettings

log = structlog.get_logger("bot.memory_import")

DOWNLOAD_TIMEOUT = 60.0
EXPORT_SLICE = 200
"""Export lines compressed per worker-thread call once the file is over the upload limit."""


async def export_file(memory: Any, namespace: str, upload_limit: int) -> tuple[str, discord.File | None]:
    """The server's memories as JSON lines, gzip-compressed if over the upload limit, and the reply
    (without a file: why there is none). Held in memory up to the limit only: past it the lines are
    compressed as they come, and the export stops once even that passes the limit (the whole file, then
    a gzip copy of it, was built first: ~65 MB a command for a server of 50,000 memories)."""
    limit = max(1024, upload_limit - 64 * 1024)  # room for the multipart envelope
    raw, packed = io.BytesIO(), io.BytesIO()
    gz: Any = None
    pending: list[bytes] = []
    rows = 0
    async for row in memory.export(namespace):
        pending.append(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        rows += 1
        if gz is None:
            raw.write(pending.pop())
            if raw.tell() > limit:  # JSONL of text compresses well; try before giving up
                gz = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
                packed.write(await asyncio.to_thread(gz.compress, raw.getvalue()))
                raw = io.BytesIO()
        elif len(pending) >= EXPORT_SLICE:  # compressed off the event loop, a slice at a time
            packed.write(await asyncio.to_thread(gz.compress, b"".join(pending)))
            pending.clear()
        if packed.tell() > limit:
            return (
                f"🧠 The export (more than {rows:,} items) is over this server's upload limit of "
                f"{human_bytes(upload_limit)} even compressed. Forget or clear old memories, or ask an "
                "operator to export from the data directory."
            ), None
    if rows == 0:
        return "🧠 This server has no memories to export.", None
    name = f"memory-{namespace}-{dt.datetime.now(tz=dt.UTC):%Y%m%d}.jsonl"
    note = ""
    data = raw.getvalue()
    if gz is not None:
        packed.write(await asyncio.to_thread(lambda: gz.compress(b"".join(pending)) + gz.flush()))
        data = packed.getvalue()
        name += ".gz"
        note = " (gzip-compressed: it was over this server's upload limit)"
    if len(data) > limit:
        return (
            f"🧠 The export ({rows} items) is {human_bytes(len(data))} even compressed, over this server's "
            f"upload limit of {human_bytes(upload_limit)}. Forget or clear old memories, "
            "or ask an operator to export from the data directory."
        ), None
    text = (
        f"🧠 {rows} item{'s' if rows != 1 else ''} of this server's memory, one JSON object per line{note}."
    )
    return text, discord.File(io.BytesIO(data), filename=name)


async def import_attachment(
    memory: Any, namespace: str, attachment: discord.Attachment, settings: BotSettings, retention: Any
) -> str:
    """Import one export file; returns the reply (a refusal names what is wrong and changes nothing)."""
    name = excerpt(attachment.filename, 80)
    max_bytes = int(settings.memory_import_max_mb * 1024 * 1024)
    if attachment.size > max_bytes:
        return (
            f"⚠️ `{name}` is {human_bytes(attachment.size)}; the most this bot imports is "
            f"{human_bytes(max_bytes)} (`MEMORY_IMPORT_MAX_MB`). Nothing was imported."
        )
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT):
            data = await attachment.read()
    except (TimeoutError, discord.HTTPException) as e:
        return f"⚠️ Could not download `{name}` ({type(e).__name__}); try again. Nothing was imported."
    try:
        plan = await asyncio.to_thread(
            read_export,
            data,
            max_bytes=max_bytes,
            max_rows=settings.memory_import_max_items * 20,
            max_memories=settings.memory_import_max_items,
        )
    except ImportRefused as e:
        more = len(str(e)) > len("; ".join(e.problems))
        return fit(
            [
                f"⚠️ `{name}` cannot be imported, so nothing was (a file made by `/memory export` is "
                "expected: JSON lines, optionally gzip-compressed):",
                *(f"- {excerpt(p, 300)}" for p in e.problems),
                *(["- …and more"] if more else []),
            ]
        )
    result = await import_memories(memory, namespace, as_here(plan, namespace))
    evicted = await memory.apply_retention(namespace, retention) if retention is not None else []
    present = len(result.ids) - len(result.added)
    log.info(
        "memory_imported",
        guild_id=namespace,
        added=len(result.added),
        present=present,
        rows=plan.rows,
        evicted=len(evicted),
    )
    lines = [
        f"🧠 Imported `{name}`: **{len(result.added)} new memor{'y' if len(result.added) == 1 else 'ies'}** "
        f"({plan.rows} rows read, {len(plan.memories)} memories in the file).",
        f"Already in this server's memory, left as they were: {present}."
        + (f" Repeated in the file, kept once: {plan.repeated}." if plan.repeated else ""),
        f"Re-embedded with `{memory.embedding_id}`; each keeps its date, author and session, marked `import`"
        + (
            f" ({web} built from web pages or tool output keep that mark instead, so they are still "
            "recalled as unverified)."
            if (web := sum(m.origin != "import" for m in plan.memories))
            else "."
        ),
    ]
    if evicted:
        lines.append(
            f"⚠️ This server's retention then evicted {len(evicted)} of the oldest items "
            "(`/config memory max_items`, `max_age_days`)."
        )
    return "\n".join(lines)


def as_here(plan: ImportPlan, namespace: str) -> list[NewMemory]:
    """The plan's memories, those of another server's export without their thread: its link pointed
    to that server's thread, which these members cannot open (/memory shows them as from elsewhere)."""
    ns = check_namespace(namespace)
    return [
        m if exported == record_id(ns, m.text) else dataclasses.replace(m, thread=FROM_ELSEWHERE)
        for m, exported in zip(plan.memories, plan.exported, strict=True)
    ]


async def publish_note(
    memory: Any, namespace: str, session_id: str, wanted: str | None, user_id: int, retention: Any
) -> str:
    """List a private session's notes (``wanted`` None), or copy one into the server's memory when
    ``user_id`` is the member whose request saved it. Returns the reply."""
    private = private_namespace(namespace, session_id)
    if retention is not None:  # a private thread's notes are otherwise evicted only when it saves one
        await memory.apply_retention(private, retention)
    if wanted is None:
        return private_listing([r async for r in memory.records(private)])
    parent = parse_memory_id(wanted)
    rows = sorted(await memory.get(private, [parent] if parent else []), key=lambda r: r.chunk)
    if not rows:
        return f"🔒 This thread has no private note `{excerpt(wanted, 40)}`."
    first = rows[0]
    if first.author != str(user_id):
        return "🔒 Only the member whose request saved this note can share it with the server."
    result = await memory.store(
        namespace,
        "".join(("" if i == 0 or r.glued else "\n\n") + r.text for i, r in enumerate(rows)),  # as import
        kind=first.kind,
        author=first.author,
        thread=first.thread,
        session=first.session,
        sources=first.sources,
        origin="agent-web" if first.origin == "agent-web" else "published",  # still unverified
    )
    if retention is not None:
        await memory.apply_retention(namespace, retention)
    log.info("memory_published", guild_id=namespace, user_id=user_id, session_id=session_id)
    new_id = result.ids[0] if result.ids else "?"
    verb = "was already in" if result.added == 0 else "is now in"
    return f"🧠 The note {verb} this server's memory as `{new_id}`."


def private_listing(records: list[MemoryRecord], limit: int = 8) -> str:
    if not records:
        return "🔒 The agent kept no private notes in this thread."
    lines = ["🔒 Private notes of this thread (only this thread recalls them):"]
    for rec in records[:limit]:
        lines += describe(rec)
    return fit(lines, tail="\n-# Share one with the server: `/memory publish id:<id>` (its requester only).")
