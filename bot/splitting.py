"""Split Markdown into Discord messages (2000 characters) without breaking paragraphs or code blocks.

Cuts go, in order of preference, at a blank line, a line end, a sentence end, a space, and only then
mid-word. A code block that has to be cut is closed with a fence and reopened (with its language) in
the next part, so every part renders on its own.
"""

from __future__ import annotations

import re

DISCORD_LIMIT = 2000
_FENCE = re.compile(r"^\s*(```+|~~~+)(.*)$")


def _cut_point(text: str, limit: int) -> int:
    window = text[:limit]
    for sep in ("\n\n", "\n", ". ", " "):
        i = window.rfind(sep)
        if i > limit // 4:
            return i + len(sep)
    return limit


def _open_fence_after(text: str, fence: str | None) -> str | None:
    """The fence still open at the end of ``text`` (given the one open at its start), else None."""
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if not m:
            continue
        if fence is None:
            fence = m.group(1) + m.group(2).strip()
        elif m.group(1).startswith(fence[:3]) and not m.group(2).strip():
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
    fence: str | None = None  # a code fence (``` + language) open at the start of `rest`
    rest = text
    while rest:
        prefix = fence + "\n" if fence else ""
        if len(prefix) + len(rest) <= limit:
            parts.append(prefix + rest)
            break
        budget = limit - len(prefix) - 4  # room to close a fence ("\n```")
        cut = _cut_point(rest, budget)
        chunk = rest[:cut]
        still_open = _open_fence_after(chunk, fence)
        body = prefix + chunk.rstrip("\n")
        if still_open:
            body += "\n" + re.match(r"[`~]+", still_open).group(0)  # type: ignore[union-attr]
        parts.append(body)
        rest = rest[cut:]
        if not still_open:
            rest = rest.lstrip("\n")
        fence = still_open
    return [p for p in parts if p.strip()]
