"""A whole checkpoint as the store reads one back (its meta and every message), built from a run's
state: the product saves each step's new messages only (``bot.turn``), so this lives with the tests
and the benchmark that build whole checkpoints by hand."""

from __future__ import annotations

from typing import Any

from agent.loop import RunState
from agent.messages import Message
from bot.checkpoint import checkpoint_meta, convert


def checkpoint_of(
    state: RunState, seen: list[tuple[Message, dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """The whole checkpoint, messages included (what a stored one reads back as)."""
    seen = [] if seen is None else seen
    convert(state.messages, seen)
    return checkpoint_meta(state) | {"messages": [d for _, d in seen]}
