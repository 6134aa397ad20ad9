"""What /memory shows: excerpts, ids, provenance lines and message fitting (no Discord calls here)."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import discord
import structlog

from agent.memory.types import MemoryRecord, MemoryStoreError
from bot.formatting import Refusal, clip, join_lines, one_line
from bot.notes import escaped

if TYPE_CHECKING:
    from bot.services import Services

log = structlog.get_logger("bot.cogs.memory")

EXCERPT = 180
MESSAGE_LIMIT = 2000

_ID_IN_TEXT = re.compile(r"\b([0-9a-f]{16})(?:-(\d{1,4}))?\b")
_SECRETS = (
    (re.compile(r"(?i)(://)[^/\s:@]+:[^/\s@]+@"), r"\1***@"),
    (re.compile(r"(?i)\b(bearer|token|api[_-]?key|password|secret)(\s*[=:]\s*|\s+)\S+"), r"\1\2***"),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"), "***"),
)
ORIGIN_LABELS = {
    "auto": "research, stored automatically",
    "auto-web": "⚠️ research, stored automatically, built from web content",
    "agent": "saved by the agent",
    "agent-web": "⚠️ saved by the agent after reading web content",
    "published": "published from a private thread",
    "import": "imported",
    "private": "private note",
}
FROM_ELSEWHERE = "elsewhere"
"""The thread of a memory imported from another server's export (``bot.memory_import.as_here``):
that server's thread was a dead link here."""


def mask_secrets(text: str) -> str:
    """An operator's error text made fit for members: credentials in URLs, tokens and keys masked."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def unavailable_text(sv: Services) -> str:
    if sv.memory_error:
        why = mask_secrets(" ".join(sv.memory_error.split()))
        why = clip(why, 400).replace("`", "'")
        return (
            f"🧠 Memory is unavailable on this bot: it failed to start with `{why}`. "
            "An operator can fix that and restart the bot."
        )
    return "🧠 Memory is turned off on this bot (`MEMORY_ENABLED=false`). An operator can turn it on."


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """One line, Markdown and mentions escaped, cut at ``limit`` characters: a member's ``<@&id>`` in a
    memory showed as a role mention in the bot's reply (allowed_mentions kept it from pinging), and
    discord.py's own Markdown escape left a page's second link live."""
    return discord.utils.escape_mentions(escaped(one_line(text, limit)))


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def day(ts: float | None) -> str:
    return "—" if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d")


def parse_memory_id(value: str) -> str | None:
    """The parent id in what a user pasted (``3f…``, `` `3f…-2` ``, ``[memory 3f…, 2026-…]``)."""
    found = _ID_IN_TEXT.search(value.strip().lower())
    return found.group(1) if found else None


def may_forget(author: str, user_id: int, manager: bool) -> bool:
    return manager or (bool(author) and author == str(user_id))


def fit(lines: Iterable[str], limit: int = MESSAGE_LIMIT, tail: str = "") -> str:
    """Join whole lines while they fit in one Discord message (with ``tail`` at the end)."""
    return join_lines(lines, limit - len(tail), more="") + tail


def provenance(rec: MemoryRecord) -> str:
    """Who stored it, from which session, and how (issue 14.9). Mentions render but never ping here:
    every reply goes out with ``allowed_mentions`` none."""
    parts = [ORIGIN_LABELS.get(rec.origin, rec.origin or "origin not recorded")]
    if rec.author.isdigit() and rec.thread != FROM_ELSEWHERE:
        # Another server's member: a mention of a stranger, which renders as an unknown user here.
        parts.append(f"by <@{rec.author}>")
    if rec.session:
        parts.append(f"session `{excerpt(rec.session, 40)}`")
    if rec.thread.isdigit():
        parts.append(f"in <#{rec.thread}>")
    elif rec.thread == FROM_ELSEWHERE:
        parts.append("imported from another server")
    if rec.unverified and rec.sources:
        parts.append("after " + " ".join(f"<{excerpt(u, 80)}>" for u in rec.sources[:2]))
    return "-# " + " · ".join(parts)


def describe(rec: MemoryRecord, *, relevance: float | None = None) -> list[str]:
    """Three lines for one memory: id, date, kind (and task); an excerpt; its provenance."""
    head = f"`{rec.parent or rec.id}` · {rec.date} · {rec.kind}"
    if relevance is not None:
        head += f" · {relevance:.0%} match"
    if rec.chunks > 1:
        head += f" · part {rec.chunk + 1}/{rec.chunks}"
    if rec.task:
        head += f" · task: “{excerpt(rec.task, 80)}”"
    return [head, f"> {excerpt(rec.text)}", provenance(rec)]


def group_parents(records: Sequence[MemoryRecord]) -> dict[str, list[MemoryRecord]]:
    groups: dict[str, list[MemoryRecord]] = {}
    for r in records:
        groups.setdefault(r.parent or r.id, []).append(r)
    return groups


@contextlib.contextmanager
def failing(interaction: discord.Interaction, what: str) -> Iterator[None]:
    """A store failure ends a /memory command saying what could not be done and why, secrets masked."""
    try:
        yield
    except MemoryStoreError as e:
        log.warning("memory_command_failed", what=what, guild_id=interaction.guild_id, error=str(e))
        raise Refusal(f"⚠️ Could not {what}: {mask_secrets(str(e))}") from e
