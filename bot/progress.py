"""Turns agent events into what a thread shows: one block per step, a live preview, the final answer.

Rendering only: the agent's events are the single source of truth, and :mod:`bot.streamer` decides
when each block reaches Discord.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.events import (
    AgentEvent,
    ErrorEvent,
    FinalEvent,
    MemoryEvent,
    ModelSwitched,
    RetryEvent,
    RunResult,
    StepStarted,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    UsageEvent,
)
from agent.tools.safe_names import visible_text
from bot.footer import format_footer, shown_source
from bot.notes import FilesWritten, Note, untrusted, with_quoted
from bot.splitting import FenceTracker, split_message
from bot.streamer import Block, ThreadStreamer

ATTACH_OVER = 6000
ANSWER_FILE_BYTES = 8 * 1024 * 1024
"""Most of an answer attached as a file, as bot.attach's files written: Discord takes 10 MiB on any server.
A server that ignored max_tokens sent more, the message with the file and its preview was refused (413)
and given up, and the member saw no answer at all."""
OBSERVATION_CHARS = 280
LIVE_TAIL = 2000
"""Characters of the model's words kept for the live preview, which shows the last 1,900: rebuilding the
whole text on every streamed piece made a long answer cost CPU in the square of its length."""
LIVE_SHOWN = 1897
"""What the streamer shows of a preview: its last 1,900 characters, less "✍️ "."""
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_OPENS = {")": "(", "]": "["}


def _url_end(url: str) -> int:
    """Where the address ``url`` (as found in prose) ends: before trailing punctuation and any ``)`` or
    ``]`` it did not open (a Markdown link's end, a parenthesis around it). Cut at the first ``)``, a
    failed fetch of Wikipedia's "Otter_(disambiguation)" linked to "Otter_(disambiguation", another page."""
    unopened = {c: url.count(c) - url.count(o) for c, o in _OPENS.items()}
    end = len(url)
    while end and (url[end - 1] in ".,;:!?*" or unopened.get(url[end - 1], 0) > 0):
        unopened[url[end - 1]] = unopened.get(url[end - 1], 0) - 1
        end -= 1
    return end


def _clip(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, without direction overrides or invisible characters:
    a page's (or a prompt-injected model's) U+202E made a step line's address read as another one."""
    return _cut(_flat(text), limit)


def _flat(text: str) -> str:
    return " ".join(visible_text(text).split())


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + f"… (cut, {len(text):,} chars)"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n // 1024} KB"


def _code(text: str) -> str:
    return "`" + text.replace("`", "ʼ") + "`"


_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What providers accept as a tool name, and all a registered tool's name can be."""


def _tool_name(name: str) -> str:
    """A tool's name in bold; any other name the model made up, as code: a prompt-injected model called
    "x** [claim](https://…)", a line break and "# FREE": the link and heading rendered in the step line."""
    return f"**{name}**" if _TOOL_NAME.fullmatch(name) else _code(_clip(name, 80))


def short_args(args: dict[str, Any] | None, raw: str, limit: int = 160) -> str:
    if args is None:
        return _clip(raw or "(invalid arguments)", limit)
    parts = []
    for k, v in args.items():
        s = (
            json.dumps(v, ensure_ascii=False)
            if not isinstance(v, str)
            else json.dumps(_clip(v, 80), ensure_ascii=False)
        )
        parts.append(f"{k}={s}")
    return _clip(", ".join(parts), limit)


def short_observation(ev: ToolResultEvent) -> str:
    """A line a person can skim: the start of the output and up to three links (no previews)."""
    text = ev.output
    if ev.is_error:
        try:
            text = json.loads(text).get("error", text)
        except (ValueError, AttributeError, RecursionError):  # an MCP server's own error text
            pass
    found = (u[: _url_end(u)] for u in _URL.findall(ev.output))
    links = list(dict.fromkeys(ev.sources or found))[:3]
    # A page's (or MCP server's) own words, escaped: "**FREE NITRO** [claim](HTTPS://…)" rendered bold
    # and as a masked link in the bot's voice (the address pattern missed the upper-case scheme).
    if links:
        text = _URL.sub(lambda m: m.group()[_url_end(m.group()) :], text)
    line = untrusted(_clip(text, OBSERVATION_CHARS))
    if links:
        line += " · " + " ".join(shown_source(u) for u in links)
    return line


@dataclass
class _Step:
    number: int
    model: str
    thought: str = ""
    calls: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    block: Block | None = None

    def render(self) -> str:
        lines = [f"**Step {self.number}** · {self.model}"]
        if self.thought:
            lines.append("💭 " + _clip(self.thought, 300))
        for call_lines in self.calls.values():
            lines.extend(call_lines)
        lines.extend(self.notes)
        return "\n".join(lines)[:1990]


class ProgressRenderer:
    """Feeds a :class:`ThreadStreamer` from agent events."""

    def __init__(self, streamer: ThreadStreamer, *, notify: int | None = None, attach: bool = True) -> None:
        self.s = streamer
        self.attach = attach
        """The bot may attach files here; else long answers are split and written files only named."""
        self.notify = notify
        """Who asked this turn: the answer's first message pings them (only them); all else is silent."""
        self._step: _Step | None = None
        self._words = io.StringIO()
        """The step's streamed words (appended in place), read only when a step keeps them as its thought."""
        self._tail = ""
        self._fences = FenceTracker()
        """Where the streamed words open and close code blocks, for the preview."""
        self._error = ""
        self.error_note = ""
        """The error note as the thread shows it: a saved answer keeps it (``bot.turn_end``), so the one
        delivered after a restart finds it posted; composed again from the bare error it would escape the
        bot's own words too, differ where they hold Markdown, and be posted a second time."""
        self.final: RunResult | None = None
        self._calling, self._retry_at = False, 0.0
        """A model call under way (from its step's start to its usage), and when a retried one resumes."""

    def _drop_text(self) -> None:
        self._words, self._tail, self._fences = io.StringIO(), "", FenceTracker()

    def _preview(self) -> str:
        """The words so far as the preview shows them (the streamer keeps its last 1,897 characters after
        "✍️ "), rendering alone: Discord renders no code block without its closing fence, so a block
        being written read as prose (its ``*`` and ``_`` as emphasis) until it ended, and one cut at the
        preview's start rendered its end as a new block. Such a block is closed at the end, reopened at
        the start."""
        tail, fences = self._tail, self._fences
        end = fences.open_now()
        close = "\n" + end[0] if end else ""
        start = len(tail) - LIVE_SHOWN + len(close)
        at = fences.length - len(tail)  # where the tail starts in the words
        prefix = fences.reopen_at(at + start) if start > 0 else ""
        if not close and not prefix:
            return tail  # as it was: the streamer cuts it
        if prefix:  # from the next line's start, after room for the fence
            nl = tail.find("\n", start + len(prefix), start + len(prefix) + 200)
            start = nl + 1 if nl != -1 else start + len(prefix)
            prefix = fences.reopen_at(at + start)
        return prefix + tail[max(start, 0) :] + close

    def _show_step(self) -> None:
        st = self._step
        if st is None:
            return
        if st.block is None:
            st.block = self.s.add("step", st.render())
        else:
            self.s.update(st.block, st.render())

    def _note(self, text: str) -> None:
        if self._step is not None and self._step.block is not None:
            self._step.notes.append(text)
            self._show_step()
        else:
            self.s.add("note", text)

    def feed(self, ev: AgentEvent | Note) -> None:
        if isinstance(ev, Note):  # the bot's own notes (bot.notes): between steps, never inside one
            self.s.end_live()
            files = list(ev.files) if isinstance(ev, FilesWritten) else None
            if files and not self.attach:
                names = ", ".join(f"`{name}`" for name, _ in files)
                self.s.add("note", f"{ev.text} {names} (not attached: I need **Attach Files** here)")
                return
            if isinstance(ev, FilesWritten) and files:
                for text, part in ev.parts():  # several messages when one request would be too big
                    self.s.add("final", text, files=part)
                return
            self.s.add("note", ev.text)
        elif isinstance(ev, StepStarted):
            self._calling = True
            self._step = _Step(ev.step, ev.model)
            self._drop_text()
        elif isinstance(ev, TextDelta):
            self._words.write(ev.text)
            self._fences.feed(ev.text)
            self._tail = (self._tail + ev.text)[-LIVE_TAIL:]
            self.s.live("✍️ " + self._preview())
        elif isinstance(ev, ToolCallEvent):
            st = self._step or _Step(ev.step, "?")
            self._step = st
            if not st.thought and (text := self._words.getvalue()).strip():
                st.thought = text
                self.s.end_live()
            st.calls[ev.call_id] = [
                f"🔧 {_tool_name(ev.name)} {_code(short_args(ev.arguments, ev.raw_arguments))}"
            ]
            self._show_step()
        elif isinstance(ev, ToolResultEvent):
            mark = "⚠️" if ev.is_error else "↳"
            line = f"{mark} {ev.duration:.1f}s · {short_observation(ev)}"
            if ev.truncated:
                line += " (output was cut for the model)"
            if ev.read_by:
                line += f" · 📄 {ev.source_chars:,} chars read by {ev.read_by}, {len(ev.output):,} of notes"
            elif ev.reader_failed:  # as `agentbot ask` says it, but the provider's words (its address) stay
                line += (
                    "\n⚠️ the page reader failed (the bot's log says why), so the agent reads the page itself"
                )
            if self._step and ev.call_id in self._step.calls:
                self._step.calls[ev.call_id].append(line)
                self._show_step()
            else:
                self._note(f"{ev.name}: {line}")
        elif isinstance(ev, RetryEvent):
            if ev.what == "model":
                self._retry_at = ev.at + ev.delay  # no call is under way while it waits
                self._drop_text()
                self.s.end_live()
            self._note(
                f"↻ retrying {ev.what} in {ev.delay:.1f}s (attempt {ev.attempt}/{ev.max_attempts}): "
                f"{untrusted(_clip(ev.error, 200))}"  # a server's words: a reason phrase held a masked link
            )
        elif isinstance(ev, ModelSwitched):
            self._drop_text()
            self.s.end_live()
            if ev.from_model == ev.to_model:  # a hand-down: the researcher writes the answer itself
                self._note(f"🧭 {_clip(ev.reason, 200)}")
            else:
                self._note(
                    f"🔀 switched from {ev.from_model} to {ev.to_model} because {_clip(ev.reason, 200)}"
                )
        elif isinstance(ev, UsageEvent):  # the step's model call (or a page reading) has ended
            self._calling = False
            if ev.warning:
                self._note(f"⚠️ {untrusted(_clip(ev.warning, 400))}")  # it names the server's model
        elif isinstance(ev, MemoryEvent):
            self.s.add(
                "note",
                f"🧠 {ev.action} {ev.count} memor{'y' if ev.count == 1 else 'ies'}"
                + (f" ({', '.join(ev.ids[:5])})" if ev.ids else ""),
            )
        elif isinstance(ev, ErrorEvent):
            self._calling = False
            self.s.end_live()
            self._error = ev.message.strip()
            # escaped after flattening: the zero-width space that breaks a quoted mention is invisible too
            said = with_quoted(_flat(ev.message), [_flat(q) for q in ev.quoted])
            self.error_note = f"⚠️ {_cut(said, 500)}"
            self.s.add("note", self.error_note)
        elif isinstance(ev, FinalEvent):
            self.s.end_live()
            self.final = ev.result

    def stopped_mid_call(self, stopped_by: str | None) -> bool:
        """Stopped while a model call was under way (not while waiting to retry one): the footer says
        that call is counted by estimate. Saved with a stopped answer, so its footer after a restart is the
        same text and is recognised as shown."""
        return stopped_by is not None and self._calling and time.monotonic() >= self._retry_at

    def finish(
        self,
        result: RunResult,
        *,
        stopped_by: str | None = None,
        title: str = "answer",
        shown: Callable[[str], bool] = lambda text: False,
        mid_call: bool | None = None,
        error_note: str | None = None,
    ) -> None:
        """The answer as new messages (edits notify nobody), then the footer; those ``shown`` already
        (posted before a restart, ``bot.turn_end``) are not posted again. ``error_note``: the note a
        saved answer's error was shown with (:attr:`error_note`).

        Discord notifies members who joined a thread of every message that is not silent, and nobody
        of an edit; so the footer, which closes the answer, is the one message of the turn that
        notifies: it pings the person who asked (who was added to the thread), with mentions allowed
        for them only. The answer's own text stays exactly what the model wrote.
        """
        self.s.end_live()
        text = result.text.strip()
        error = self._error or (result.error or "").strip()  # the latter: a saved answer after a restart
        if error and text.startswith(error):  # said once, as a note: a provider's words never as the answer
            text = text[len(error) :].strip()
            note = error_note or f"⚠️ {untrusted(_clip(error, 500))}"
            if not self._error and not shown(note):
                self.s.add("note", note)
        elif not text:
            text = "(no answer)"
        if len(text) > ATTACH_OVER and self.attach:
            preview = split_message(text, 1500)[0]
            data = text.encode()
            said = "The full answer is attached as a Markdown file."
            if len(data) > ANSWER_FILE_BYTES:
                said = f"The answer is attached as a Markdown file, cut at {_size(ANSWER_FILE_BYTES)} of {_size(len(data))}."
                data = data[:ANSWER_FILE_BYTES].decode(errors="ignore").encode()
            if not shown(f"{preview}\n\n-# {said}"):
                self.s.add("final", f"{preview}\n\n-# {said}", files=[(f"{title}.md", data)])
        elif text:
            for part in split_message(text):
                if not shown(part):
                    self.s.add("final", part)
        if mid_call is None:
            mid_call = self.stopped_mid_call(stopped_by)
        footer = format_footer(result, stopped_by=stopped_by, mid_call=mid_call)
        if self.notify is not None:
            footer = footer.replace("-# ", f"-# <@{self.notify}> · ", 1)
        if not shown(footer):
            self.s.add("final", footer, notify=self.notify)
