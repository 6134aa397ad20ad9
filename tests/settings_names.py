"""Every environment variable the code reads: the settings tree's fields, plus names read by hand."""

from __future__ import annotations

import re
from pathlib import Path

from agent.config import AgentSettings
from bot.config import BotSettings

ROOT = Path(__file__).resolve().parent.parent
READ_BY_HAND = re.compile(r"""(?:environ\.get|getenv|environ\[)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")


def tree_fields() -> dict[str, object]:
    """env name -> default, for every field of the settings tree."""
    out: dict[str, object] = {}
    for cls in (AgentSettings, BotSettings):
        for field in cls.model_fields.values():
            if field.alias:
                out[field.alias] = field.get_default(call_default_factory=True)
    return out


def read_by_hand() -> set[str]:
    """Names the product reads outside the tree (``os.environ.get("X")`` and the like)."""
    names: set[str] = set()
    for room in ("agent", "bot"):
        for path in (ROOT / room).rglob("*.py"):
            names |= set(READ_BY_HAND.findall(path.read_text()))
    return names


def setting_names() -> set[str]:
    return set(tree_fields()) | read_by_hand()
