"""Terminal rendering of agent events (``agentbot ask``): progress on stderr, the answer verbatim on stdout."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.style import Style

from agent.events import (
    AgentEvent,
    ErrorEvent,
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

_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def without_controls(text: str) -> str:
    """``text`` without terminal control characters (newlines and tabs stay): what tools, pages,
    servers and the model say reaches a terminal as text, never as an escape sequence that retitles
    the window, clears the screen or (OSC 52) writes the user's clipboard."""
    return _CONTROLS.sub("", text)


_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
"""Direction overrides and isolates: in a progress line they reorder what follows, so a page or model
could make a tool's arguments or a file name read as something else (\u202e: "txt.exe" shows "exe.txt")."""


def escape(text: str) -> str:
    """Safe to print through rich as one progress line: markup escaped, control characters and direction
    overrides removed, line breaks and tabs made single spaces (the answer on stdout keeps its text as
    written, less control characters). A tool name or unparsable arguments from the model with a line
    break in them printed lines of their own: "✓ run_python 0.01s: sandbox check passed", a fake step."""
    return escape_markup(" ".join(_BIDI.sub("", without_controls(text)).split()))


def short_args(args: dict[str, Any] | None, raw: str, limit: int = 120) -> str:
    if args is None:
        text = raw.strip() or "(no arguments)"
    else:
        text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


NAME_CHARS = 64
"""A tool name as a progress line shows it: the longest a provider accepts (OpenAI's 64). The model's
made-up names are not bounded: an unknown tool of 50,000 characters filled the terminal twice."""


def short_output(output: str, limit: int = 160) -> str:
    text = " ".join(output.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Progress:
    """Standard error as progress writes it: once a write fails (its reader gone, `2>&1 | head`, or a
    full disk), the rest of progress is dropped. It ended the run at its first line, and the answer,
    which stdout could still take, was lost."""

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._failed = False

    def write(self, text: str) -> int:
        if not self._failed:
            try:
                return self._file.write(text)
            except OSError:
                self._fail()
        return len(text)

    def flush(self) -> None:
        if not self._failed:
            try:
                self._file.flush()
            except OSError:
                self._fail()

    def _fail(self) -> None:
        self._failed = True
        # What the stream still holds goes nowhere at exit, not into a failed flush (exit status 120).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._file.fileno())

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: what rich asks the file
        return getattr(self._file, name)


class TerminalRenderer:
    """Shows each step as it happens; ``show_text`` streams the model's words while it writes."""

    def __init__(self, err: TextIO | None = None, show_text: bool = False) -> None:
        err = err or sys.stderr
        if err is None:  # `2>&-`: rich would fall back to stdout and mix progress into the answer
            err = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        self.console = Console(file=_Progress(err), highlight=False, soft_wrap=True)
        if self.console.width < 1:  # COLUMNS=0 (some CI shells export it): rich printed nothing at all
            self.console.width = 80
        self.show_text = show_text
        self._in_text = False
        self._running = 0  # tools of this step without a result: a model call meanwhile is the reader's
        # The streamed words are written straight to the file, dimmed as rich would dim them: rich's
        # print costs ~0.25 ms per call, so a 200 KB answer's ~30,000 deltas took 6.6 s instead of 0.7 s.
        on, _, off = Style(dim=True).render("\0").partition("\0")
        self._dim = (on, off) if self.console.color_system is not None else ("", "")

    def _end_text(self) -> None:
        if self._in_text:
            self.console.print()
            self._in_text = False

    def warn(self, text: str) -> None:
        """A notice before the run (e.g. an MCP server left out), said once."""
        self._end_text()
        self.console.print(f"[yellow]! {escape(text)}[/]")

    def render(self, ev: AgentEvent) -> None:
        c = self.console
        if isinstance(ev, TextDelta):
            if self.show_text:
                c.file.write(f"{self._dim[0]}{without_controls(ev.text)}{self._dim[1]}")
                c.file.flush()
                self._in_text = True
            return
        self._end_text()
        if isinstance(ev, StepStarted):
            self._running = 0
            c.print(f"[bold cyan]step {ev.step}[/] · {escape(ev.model)}")
        elif isinstance(ev, ToolCallEvent):
            self._running += 1
            name, args = escape(short_output(ev.name, NAME_CHARS)), short_args(ev.arguments, ev.raw_arguments)
            c.print(f"  → [bold]{name}[/]({escape(args)})")
        elif isinstance(ev, ToolResultEvent):
            self._running = max(0, self._running - 1)
            mark = "[red]✗[/]" if ev.is_error else "[green]✓[/]"
            name = escape(short_output(ev.name, NAME_CHARS))
            c.print(f"  {mark} {name} {ev.duration:.2f}s: {escape(short_output(ev.output))}")
            if ev.read_by:
                c.print(
                    f"    [dim]{ev.source_chars:,} chars read by {escape(ev.read_by)}, "
                    f"{len(ev.output):,} of notes[/]"
                )
            elif ev.reader_failed:
                c.print(
                    "    [yellow]the page reader (READER_MODEL) failed, so the agent reads the result "
                    f"itself: {escape(short_output(ev.reader_failed))}[/]"
                )
        elif isinstance(ev, RetryEvent):
            c.print(
                f"  [yellow]↻ retrying {escape(ev.what)} in {ev.delay:.1f}s "
                f"(attempt {ev.attempt}/{ev.max_attempts}): {escape(ev.error)}[/]"
            )
        elif isinstance(ev, UsageEvent):
            est = "estimated: " if ev.usage.estimated else ""
            # Named: under the step's model it read as that model's, and its usage at the provider.
            who = f"{escape(ev.model)} (page reader): " if self._running else ""
            c.print(
                f"  [dim]{who}{est}{ev.usage.prompt_tokens:,}+{ev.usage.completion_tokens:,} tokens, "
                f"{escape(ev.cost.format(estimated=ev.usage.estimated))}[/]"
            )
            if ev.warning:
                c.print(f"  [yellow]⚠ {escape(ev.warning)}[/]")
        elif isinstance(ev, ModelSwitched) and ev.from_model == ev.to_model:  # a hand-down
            c.print(f"  [yellow]{escape(ev.reason)}[/]")
        elif isinstance(ev, ModelSwitched):
            c.print(
                f"  [yellow]switched from {escape(ev.from_model)} to {escape(ev.to_model)} "
                f"because {escape(ev.reason)}[/]"
            )
        elif isinstance(ev, MemoryEvent):
            c.print(f"  [magenta]{ev.action} {ev.count} memories[/]")
        elif isinstance(ev, ErrorEvent):
            c.print(f"[bold red]error:[/] {escape(ev.message)}")

    def summary(self, result: RunResult) -> None:
        self._end_text()
        u = result.usage
        status = "" if result.ok else f" · status: {result.status}"
        # The server reported no usage for some call: its counts (and so the cost) were made locally.
        est = "estimated: " if u.estimated else ""
        self.console.print(
            f"[dim]{result.steps_said} · {est}{u.prompt_tokens:,} prompt + {u.completion_tokens:,} completion tokens"
            f"{f' ({u.cached_tokens:,} cached)' if u.cached_tokens else ''}"
            f"{f' ({u.cache_write_tokens:,} cache writes)' if u.cache_write_tokens else ''}"
            f"{f' ({u.reasoning_tokens:,} reasoning)' if u.reasoning_tokens else ''} · "
            f"cost {escape(result.cost.format(estimated=u.estimated))} · "
            f"models {escape(', '.join(result.models)) or '-'} · {result.duration:.1f}s{status}[/]"
        )
        if result.sources:
            self.console.print("[dim]sources: " + escape(" ".join(result.sources)) + "[/]")
