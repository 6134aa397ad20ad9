"""File names that cannot lie: no control characters, line breaks or invisible formatting characters.

A name such as ``report\\u202efdp.exe`` shows as ``reportexe.pdf`` (a right-to-left override), and a
name with a newline forges extra lines in a listing the model reads or a message the thread shows.
Tools refuse such names when a path is given (:func:`refuse_unsafe`); names that already exist (made
by ``run_python``, or uploaded to Discord) are shown escaped (:func:`shown_name`) or attached with the
characters replaced (:func:`safe_name`), never passed on as they are.

Unsafe: Unicode categories Cc (controls, tab and newline included), Cf (format: bidi overrides and
isolates, zero-width characters, soft hyphen, BOM), Zl and Zp (line and paragraph separators) and Cs
(lone surrogates).
"""

from __future__ import annotations

import unicodedata

from agent.tools.registry import ToolRefused

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def unsafe_char(ch: str) -> bool:
    """Whether ``ch`` may not stand in a file name (the categories above)."""
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


TEXT_KEEPS = frozenset("\n\r\t\u200c\u200d\u200e\u200f\u061c")
"""Invisible characters real text needs (unlike a file name): line breaks and tabs, the joiners of emoji
sequences and Persian or Indic spelling (ZWNJ, ZWJ), and the left-to-right/right-to-left/Arabic marks of
bidirectional writing, which move no text the way overrides and isolates (U+202A-E, U+2066-9) do."""


def hidden_in_text(ch: str) -> bool:
    """A character that makes text show one thing and say another: every unsafe one but :data:`TEXT_KEEPS`
    (refused in a persona; dropped from a thread's name and header)."""
    return unsafe_char(ch) and ch not in TEXT_KEEPS


def visible_text(text: str) -> str:
    """``text`` without the characters :func:`hidden_in_text` names."""
    return "".join(ch for ch in text if not hidden_in_text(ch))


def refuse_unsafe(path: str) -> None:
    """Refuse a path holding any unsafe character, naming each one so the model can fix it."""
    found = sorted({ch for ch in path if unsafe_char(ch)})
    if found:
        codes = ", ".join(f"U+{ord(ch):04X}" for ch in found[:5])
        raise ToolRefused(
            f"the name {shown_name(path)} contains characters a file name must not have ({codes}): control "
            "characters, line breaks and invisible formatting such as right-to-left overrides. Use "
            "visible characters only, e.g. 'report.pdf'."
        )


def shown_name(name: str) -> str:
    """``name`` with each unsafe character written as an escape (``\\u202e``), so it is seen."""
    if not any(unsafe_char(ch) for ch in name):
        return name
    return "".join(ch.encode("unicode_escape").decode("ascii") if unsafe_char(ch) else ch for ch in name)


def safe_name(name: str, fallback: str = "file") -> str:
    """``name`` with each unsafe character replaced by ``_``: for attachments, where an escape would
    look odd and the original name only has to be recognisable."""
    cleaned = "".join("_" if unsafe_char(ch) else ch for ch in name).strip()
    return cleaned or fallback
