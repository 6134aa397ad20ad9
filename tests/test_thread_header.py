"""The session header fits one Discord message whatever the task looks like (issue 20.5)."""

from __future__ import annotations

import pytest

from bot.store import SessionRecord
from bot.thread_header import render_header


def session(task: str) -> SessionRecord:
    return SessionRecord(
        id="a" * 32, guild_id=1, channel_id=2, thread_id=3, user_id=4, task=task, tier="auto", model="m"
    )


@pytest.mark.parametrize(
    "task",
    [
        "\n".join(f"- point {i}" for i in range(170))[:1497],  # the 2,080-character header
        "x" * 4000,  # one long line
        "\n" * 3999 + "y",  # nothing but line breaks
        "\n".join(["- " + "word " * 30] * 30),
        "short",
    ],
)
@pytest.mark.parametrize("state", ["running", "done"])
def test_header_fits_2000_characters_and_keeps_its_state_line(task: str, state: str) -> None:
    text = render_header(session(task), steps=12, memory_ok=False, private=True, state=state, at=1.7e9)  # type: ignore[arg-type]
    assert len(text) <= 2000
    assert text.startswith("🔎 **Research** for <@4> (private)")
    last = text.splitlines()[-1]
    assert (
        last.startswith("-# ⏳ running")
        if state == "running"
        else last == "-# ✅ done <t:1700000000:f> (<t:1700000000:R>)"
    )
    lines = task.splitlines()
    if not all(f"> {line}\n" in text for line in lines):
        assert "…" in text  # cut, and visibly so


def test_a_short_task_is_quoted_whole() -> None:
    text = render_header(session("line one\nline two"), steps=5, memory_ok=True, private=False)
    assert "> line one\n> line two\n-# tier" in text
    assert "others mention me or reply to me" in text
