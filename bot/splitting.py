"""Split Markdown into Discord messages (2000 characters) without breaking paragraphs or code blocks.

Cuts go, in order of preference, at a blank line, a line end, a sentence end (a CJK one too: such text
has no spaces), a space, and only then mid-word, never inside a character a reader sees as one (an
accent on its letter, an emoji joined with ZWJ or a skin tone, a flag's two letters). A code block that has
to be cut is closed with its own fence (```` closes only with four) and reopened, with its language, in
the next part, so every part renders on its own. A fence is read as CommonMark reads one: a line of
``` with no backtick after it (```print(1)``` is inline code, not a block that never ends).
"""

from __future__ import annotations

import bisect
import re
import unicodedata

DISCORD_LIMIT = 2000
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
_INFO_KEPT = 30
"""A reopened block repeats its language (``python``), not a whole line of words after the fence."""
_JOINERS = (
    {"\u200d", "\u20e3"} | {chr(c) for c in range(0xFE00, 0xFE10)} | {chr(c) for c in range(0x1F3FB, 0x1F400)}
)
"""ZWJ, the keycap, variation selectors and skin tones: each belongs to the character before it."""


def _regional(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def splits_a_character(text: str, i: int) -> bool:
    """Cutting ``text`` before index ``i`` would split what a reader sees as one character."""
    after, before = text[i], text[i - 1]
    if after in _JOINERS or before == "\u200d" or unicodedata.combining(after):
        return True
    if _regional(after) and _regional(before):  # a flag is a pair: cut only after an even run
        run = 0
        while i - 1 - run >= 0 and _regional(text[i - 1 - run]):
            run += 1
        return run % 2 == 1
    return False


def _cut_point(text: str, limit: int) -> int:
    window = text[:limit]
    for sep in ("\n\n", "\n", ". ", "。", "！", "？", " "):
        i = window.rfind(sep)
        if i > limit // 4:
            return i + len(sep)
    cut = limit
    while cut > limit // 2 and splits_a_character(text, cut):
        cut -= 1
    return cut if cut > limit // 2 else limit


def _fence_line(line: str) -> tuple[str, str] | None:
    """(marker, info) when ``line`` is a fence as CommonMark reads it, else None."""
    m = _FENCE.match(line)
    if m is None or (m.group(1)[0] == "`" and "`" in m.group(2)):
        return None
    return m.group(1), m.group(2).strip()


def _open_fence_after(text: str, fence: tuple[str, str] | None) -> tuple[str, str] | None:
    """The fence (marker, info) still open at the end of ``text`` (given the one open at its start)."""
    for line in text.split("\n"):
        found = _fence_line(line)
        if found is None:
            continue
        if fence is None:
            fence = found
        elif found[0][0] == fence[0][0] and len(found[0]) >= len(fence[0]) and not found[1]:
            fence = None
    return fence


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Parts of at most ``limit`` characters whose concatenation (minus added fences) is ``text``."""
    if limit < 50:
        raise ValueError("limit must be at least 50 characters")
    text = text.strip("\n")
    if not text:
        return []
    parts: list[str] = []
    fence: tuple[str, str] | None = None  # a code fence (marker, language) open at the start of `rest`
    rest = text
    while rest:
        prefix = ""
        if fence:
            info = fence[1] if len(fence[1]) <= _INFO_KEPT else ""
            prefix = fence[0] + info + "\n"
        if len(prefix) + len(rest) <= limit:
            parts.append(prefix + rest)
            break
        room = limit - len(prefix) - 1 - (len(fence[0]) if fence else 3)  # "\n```" to close one
        while True:  # a fence opened in this part may be longer than the room kept to close it
            cut = _cut_point(rest, max(room, limit // 4))
            chunk = rest[:cut]
            still_open = _open_fence_after(chunk, fence)
            body = prefix + chunk.rstrip("\n") + ("\n" + still_open[0] if still_open else "")
            if len(body) <= limit:
                break
            if room <= limit // 4:  # fences of hundreds of backticks: kept whole over balanced
                prefix = prefix if len(prefix) < limit // 2 else ""
                cut, still_open = limit - len(prefix), None
                body = prefix + rest[:cut]
                break
            room -= len(body) - limit
        parts.append(body)
        rest = rest[cut:]
        if not still_open:
            rest = rest.lstrip("\n")
        fence = still_open
    return [p for p in parts if p.strip()]


_LINE_KEPT = 256
"""Of a line still being written, what the tracker keeps: a fence line is short."""


class FenceTracker:
    """Which code fence is open where, in text that arrives in pieces (a model's streamed words), at a
    cost per piece that does not grow with the text: the live preview shows only the text's last part,
    and cut inside a code block it rendered the code as prose and the block's end as a new block."""

    def __init__(self) -> None:
        self.length = 0
        self._line = ""
        self._open: tuple[str, str] | None = None
        self._changes: list[tuple[int, tuple[str, str] | None]] = [(0, None)]

    def feed(self, piece: str) -> None:
        at = self.length
        self.length += len(piece)
        *done, rest = piece.split("\n")
        if not done:  # a line going on: only its start can make it a fence
            self._line = (self._line + rest)[:_LINE_KEPT] if len(self._line) < _LINE_KEPT else self._line
            return
        for i, part in enumerate(done):
            line = (self._line + part)[:_LINE_KEPT] if i == 0 else part[:_LINE_KEPT]
            at += len(part) + 1  # the next line's start
            now = _open_fence_after(line, self._open)
            if now != self._open:
                self._open = now
                self._changes.append((at, now))
        self._line = rest[:_LINE_KEPT]

    def open_now(self) -> tuple[str, str] | None:
        """The fence (marker, language) open at the end of the text so far, its unfinished line included."""
        return _open_fence_after(self._line, self._open)

    def reopen_at(self, pos: int) -> str:
        """What to put before the text from ``pos`` (a line's start) on, so a block open there renders
        as one: its fence and language, or nothing."""
        i = bisect.bisect_right(self._changes, pos, key=lambda c: c[0]) - 1
        fence = self._changes[i][1]
        return f"{fence[0]}{fence[1] if len(fence[1]) <= _INFO_KEPT else ''}\n" if fence else ""
