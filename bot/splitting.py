"""Split Markdown into Discord messages (2000 characters) without breaking paragraphs or code blocks.

Cuts go, in order of preference, at a blank line, a line end, a sentence end (a CJK one too: such text
has no spaces), a space, and only then mid-word, never inside a character a reader sees as one (an
accent on its letter, an emoji joined with ZWJ or a skin tone, a flag's two letters). A code block that has
to be cut is closed with its own fence (```` closes only with four) and reopened, with its language, in
the next part, so every part renders on its own. A fence is read as CommonMark reads one: a line of
``` with no backtick after it (```print(1)``` is inline code, not a block that never ends).
"""

from __future__ import annotations

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
