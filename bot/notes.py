"""The bot's own events: what the runner has to say in a thread besides the agent's events.

Plain data, fed to :class:`bot.progress.ProgressRenderer` like the agent's events, so everything a
thread shows comes from an event and goes out through the thread's one paced streamer (a note sent
beside it would be a write the pacing cannot see). ``text`` is how each note reads: its ``template``
filled from the note (``{s.field}``), or its own property where the wording depends on the values.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import discord

from agent.config import ConfigError
from agent.logs import redact
from agent.tools.safe_names import visible_text
from bot.formatting import one_line
from bot.store import StoreError, StoreUnavailable


def untrusted(text: str) -> str:
    """Text someone outside the bot chose (an uploader's file name, an MCP server's error), shown as
    written: ``**``, ``[link](url)`` or ``<@&id>`` in it would render as formatting, a link or a role."""
    return discord.utils.escape_mentions(escaped(text))


def escaped(text: str) -> str:
    """``text`` with its Markdown shown as written, every link included.

    discord.py's escape_markdown matches a masked link greedily (``\\[.+\\]\\(.+\\)``) and escapes only the
    match's first ``[``: in "[a](…) **FREE** [Verify](https://evil.example)" the bold and the second
    link rendered in the bot's voice. So every ``[`` that could open a link (one before the last ``](``)
    is escaped here, stood in for by a character the text lacks while discord.py escapes the rest."""
    end = text.rfind("](")
    if end <= 0:
        return discord.utils.escape_markdown(text)
    chars = set(text)  # some character from U+E000 on is not in it (a text holds < 1.1M distinct)
    mark = next(chr(c) for c in range(0xE000, 0x110000) if chr(c) not in chars)
    text = text[:end].replace("[", mark) + text[end:]
    return discord.utils.escape_markdown(text).replace(mark, "\\[")


def with_quoted(text: str, quoted: Iterable[str]) -> str:
    """``text`` (the bot's words) with each of ``quoted`` (a provider's error text in it) shown as written:
    escaping the whole note would turn its own backticked setting names into stray backticks."""
    parts = sorted({q for q in quoted if q}, key=len, reverse=True)
    if not parts:
        return text
    return re.sub("|".join(map(re.escape, parts)), lambda m: untrusted(m.group()), text)


@dataclass(frozen=True)
class Note:
    template: ClassVar[str]

    @property
    def text(self) -> str:
        return self.template.format(s=self)

    @property
    def quoted(self) -> str:
        """The member's message (``prompt``) on one line, cut at 200 characters, shown as written: a
        masked link or a role mention in it rendered as the bot's own words."""
        return untrusted(one_line(visible_text(getattr(self, "prompt", "")), 200))


@dataclass(frozen=True)
class Routed(Note):
    """Where the router sent a follow-up (a new session's header says it for the first turn)."""

    tier: str
    model: str
    writer: str | None = None
    reasons: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        who = f"{self.model} researches, {self.writer} writes" if self.writer else self.model
        return f"🧭 {self.tier} tier → {who}" + (f" ({'; '.join(self.reasons[:2])})" if self.reasons else "")


@dataclass(frozen=True)
class Resumed(Note):
    step: int
    """Whole steps the interrupted turn had done (0: it starts over)."""

    @property
    def text(self) -> str:
        if self.step:
            return f"♻️ Interrupted by a restart: resuming from step {self.step + 1}."
        return "♻️ Interrupted by a restart before its first step: starting again."


@dataclass(frozen=True)
class QueuedRestored(Note):
    prompt: str
    first: bool = False
    """The session's own request, which had not started (waiting for a run slot, or the restart came
    between its header and its turn): no follow-up (its header quotes it)."""

    @property
    def text(self) -> str:
        if self.first:
            return "⏳ Starting this research, which was waiting to start before the restart."
        return f"⏳ Answering a follow-up queued before the restart: “{self.quoted}”"


def route_shown(note: Note) -> bool:
    """A note of a turn whose route the thread shows already: a resumed turn's (its header, or the note
    before the restart, said it) and a session's own request restored (its header says it)."""
    return isinstance(note, Resumed) or (isinstance(note, QueuedRestored) and note.first)


@dataclass(frozen=True)
class MissedRestored(Note):
    """A follow-up sent while the bot was down (:mod:`bot.missed`), answered after the restart."""

    prompt: str

    @property
    def text(self) -> str:
        return f"⏳ Answering a message sent while the bot was restarting: “{self.quoted}”"


@dataclass(frozen=True)
class NotStarted(Note):
    """A Stop while the turn waited for a run slot: it never ran, so nothing was charged."""

    by: str
    template = "⏹️ Stopped by {s.by} before it started: nothing ran and nothing was charged."


@dataclass(frozen=True)
class Paused(Note):
    steps: int
    redo: bool = False
    """Step ``steps + 1`` had begun (its tools were running): it is not kept, and runs again."""

    @property
    def text(self) -> str:
        if self.redo:
            n = self.steps + 1
            return f"⏸️ The bot is restarting: this run pauses during step {n}, which starts again when it is back."
        at = f"after step {self.steps}" if self.steps else "before its first step"  # not "after step 0"
        return f"⏸️ The bot is restarting: this run pauses {at} and resumes when it is back."


@dataclass(frozen=True)
class Refused(Note):
    """A limit refused the turn before it started, so nothing was charged; names the limit and reset."""

    message: str
    asker: int | None = None
    """Who asked, when not the session's requester: in a shared thread "you've made 1 of 1 requests"
    under nobody's name read as the requester's own limit."""

    @property
    def text(self) -> str:
        return f"⛔ <@{self.asker}>: {self.message}" if self.asker else f"⛔ {self.message}"


@dataclass(frozen=True)
class TurnFailed(Note):
    what: str
    error_id: str
    template = "⚠️ This turn stopped: {s.what} (error id `{s.error_id}`)."

    @classmethod
    def of(cls, e: Exception, error_id: str) -> TurnFailed:
        """The note for the error that ended a turn, in words a member can act on."""
        if isinstance(e, StoreUnavailable):  # PostgreSQL restarting or down: a moment, not a full disk
            what = "the bot's database cannot be reached right now; please try again in a minute"
        elif isinstance(e, sqlite3.Error | StoreError):
            what = "the bot's database refused a write (locked or out of space?)"
        elif isinstance(e, ConfigError):  # e.g. a server's tier names a model whose key the operator removed
            what = redact(str(e))
        else:
            what = "something went wrong"
        return cls(what, error_id)


@dataclass(frozen=True)
class SaveFailed(Note):
    error_id: str
    template = (
        "⚠️ This turn's answer could not be saved to the bot's database (error id `{s.error_id}`), "
        "so a follow-up will not see it. An admin can check `agentbot doctor`."
    )


@dataclass(frozen=True)
class SaveWaiting(Note):
    template = (
        "⚠️ The bot's database cannot be reached right now: this turn is saved as soon as it is back "
        "(until then a follow-up may not see it)."
    )


REQUEST_FILE_BYTES = 25 * 2**20 - 2**16
"""Files in one message at most: Discord refuses a message whose request passes 25 MiB (413), so ten
written files of 8 MB in one message were dropped, note and all, without a word. 64 KiB is left for
the rest of the request (its text, the form's parts)."""


@dataclass(frozen=True)
class FilesWritten(Note):
    files: tuple[tuple[str, bytes], ...]
    template = "📎 Files written in this turn:"

    def parts(self) -> list[tuple[str, list[tuple[str, bytes]]]]:
        """The messages that carry the files, in order, each within :data:`REQUEST_FILE_BYTES`."""
        groups: list[list[tuple[str, bytes]]] = []
        size = 0
        for name, data in self.files:
            if not groups or size + len(data) > REQUEST_FILE_BYTES:
                groups.append([])
                size = 0
            groups[-1].append((name, data))
            size += len(data)
        if len(groups) == 1:
            return [(self.text, groups[0])]
        return [(f"{self.text[:-1]} ({i}/{len(groups)}):", g) for i, g in enumerate(groups, 1)]


@dataclass(frozen=True)
class McpLeftOut(Note):
    """An MCP server this server added (``/config mcp``) that could not be reached: its tools are left out."""

    name: str
    why: str
    template = "🔌 MCP server `{s.name}` is left out of this run: {s.shown_why}"

    @property
    def shown_why(self) -> str:
        """The reason may be the MCP server's own error text: its Markdown is shown, not rendered."""
        return untrusted(one_line(self.why, 300))


@dataclass(frozen=True)
class MemoryUnreadable(Note):
    """The server's memory failed at the run's recall (its Chroma server gone, a damaged store): the run
    goes on without it. Unsaid, members took the missing "🧠 recalled" for nothing remembered."""

    why: str
    template = "⚠️ This server's memory could not be read, so this run goes on without it: {s.shown_why}"

    @property
    def shown_why(self) -> str:
        """The store's error text (a server's words, a URL): secrets masked, Markdown shown as written."""
        return untrusted(one_line(redact(self.why), 300))


@dataclass(frozen=True)
class Superseded(Note):
    """A re-run with an edited message began: the earlier answer above stays, marked replaced."""

    prompt: str
    template = (
        "✏️ Re-running with the edited message: “{s.quoted}”. It counts as a new request under your "
        "limits. The earlier answer above is superseded and left out of the conversation."
    )


@dataclass(frozen=True)
class RerunOffer(Note):
    """Shown with the "Re-run with the edit" button when a finished turn's message is edited."""

    prompt: str
    template = (
        "✏️ You edited your message to “{s.quoted}”. Re-run that turn with the edit? It counts as a "
        "new request under your limits; the new answer replaces the earlier one in the conversation."
    )


@dataclass(frozen=True)
class AttachmentsRefused(Note):
    """Attachments not taken (too big, unsupported type, over the quota), each with its reason (issue 17.2)."""

    refused: tuple[str, ...]

    @property
    def text(self) -> str:
        # The names are the uploader's: '<@&id>' or '**' in one would render as a role or bold text.
        shown = (untrusted(r) for r in self.refused)
        return "📎 Not read: " + "; ".join(shown)
