"""The last thing an MCP stdio server wrote to stderr (and its last stdout line that was no message), kept
to say why it stopped.

A server that died at start was reported as "Connection closed" (its stderr went to /dev/null), while
its last line said what to fix ("ModuleNotFoundError: No module named 'mcp_weather'", npm's "404 Not
Found"). The pipe is drained as it is written, so a chatty server neither blocks on a full pipe nor
grows the bot's memory: only the last ``KEEP`` bytes are held."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable

from agent.logs import redact

KEEP = 2048
READS_PER_WAKE = 16
"""Reads (64 KiB each) one wake-up of the event loop makes: a server writing stderr as fast as it can
kept the pipe from ever being empty, and reading until it was held the loop (stalls of 0.3 s measured
with ``cat /dev/zero >&2``, for as long as the server wrote). What is left is read at the next wake-up."""


class StderrTail:
    """A pipe for a child's stderr (``file``), read on the event loop as data arrives."""

    def __init__(self) -> None:
        self._r, w = os.pipe()
        os.set_blocking(self._r, False)
        self.file = os.fdopen(w, "w")
        self._tail = bytearray()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._r, self._drain)
        self._open = True

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            for _ in range(READS_PER_WAKE):
                if not (chunk := os.read(self._r, 65536)):
                    break
                self._tail += chunk
                del self._tail[:-KEEP]

    def last_line(self, hide: Iterable[str] = ()) -> str:
        """The last non-blank line, without registered secrets or the values in ``hide`` (the server's
        own environment: a token it was given and echoes back)."""
        if self._open:
            self._drain()
        lines = [x.strip() for x in self._tail.decode(errors="replace").splitlines() if x.strip()]
        line = lines[-1] if lines else ""
        for value in hide:
            if len(value) >= 4:
                line = line.replace(value, "***")
        return redact(line)[:300]

    def close(self) -> None:
        """Read what is left, then close both ends (the child holds its own copy of the write end)."""
        if self._open:
            self._drain()
            self._open = False
            self._loop.remove_reader(self._r)
            os.close(self._r)
            self.file.close()


def said_before_end(stray: bytes, stderr: StderrTail | None, hide: Iterable[str] = ()) -> str:
    """What a stdio server wrote that says why it never answered or ended: its last stdout line that was
    no protocol message and its last stderr line, as "; its last ... line: ..." (empty when it said
    nothing). A server printing "Listening on :8000" was left out as "no answer within 10 s"."""
    hide = list(hide)
    said = ""
    if stray.strip():
        line = stray.decode(errors="replace").strip()
        for value in hide:
            if len(value) >= 4:
                line = line.replace(value, "***")
        said += f"; its last stdout line that is no MCP message: {redact(line)[:200]}"
    if stderr is not None and (err := stderr.last_line(hide=hide)):
        said += f"; its last stderr line: {err}"
    return said
