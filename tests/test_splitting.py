"""The final answer's split into Discord messages: nothing lost, nothing over 2000, code blocks intact."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.splitting import split_message

_ADDED_FENCE = re.compile(r"\n```$|^```[\w+-]*\n")


def _words(parts: list[str]) -> list[str]:
    return "\n".join(_ADDED_FENCE.sub("", p) for p in parts).split()


def test_split_keeps_paragraphs_whole() -> None:
    paras = [f"Paragraph {i}. " + "word " * 60 for i in range(20)]
    text = "\n\n".join(p.strip() for p in paras)
    parts = split_message(text)
    assert len(parts) > 1 and all(len(p) <= 2000 for p in parts)
    for p in parts:  # every part starts at a paragraph start
        assert p.startswith("Paragraph")
    assert _words(parts) == text.split()


def test_split_reopens_a_cut_code_block_with_its_language() -> None:
    code = "\n".join(f"print({i})  # line {i}" for i in range(300))
    text = "Intro line.\n\n```python\n" + code + "\n```\n\nOutro."
    parts = split_message(text)
    assert all(len(p) <= 2000 for p in parts)
    for p in parts:  # each part renders alone: fences balanced
        assert p.count("```") % 2 == 0, p[:80]
    assert parts[1].startswith("```python\n")
    assert parts[-1].endswith("Outro.")


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab c.\n`é😀")), min_size=0, max_size=6000),
    st.integers(min_value=50, max_value=2000),
)
def test_split_property_no_part_too_long_and_no_word_lost(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert all(0 < len(p) <= limit for p in parts)
    if "`" not in text:
        assert "".join(parts).split() == text.split() or _words(parts) == text.split()
