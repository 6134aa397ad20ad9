"""Per-server long-term memory: the Chroma store, and the helpers the agent uses to recall before a
run and store after it.

``ChromaMemory`` is imported on first use: chromadb takes about half a second to import, which the
terminal mode and the tools should not pay unless memory is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.memory.integration import (
    DEFAULT_MIN_RELEVANCE,
    format_hit,
    format_recalled,
    recall_for_task,
    recalled_event,
    store_research,
)
from agent.memory.types import (
    KINDS,
    EmbeddingMismatch,
    IsolationError,
    Kind,
    MemoryHit,
    MemoryRecord,
    MemoryStats,
    MemoryStoreError,
    NamespaceError,
    NewMemory,
    RetentionPolicy,
    StoreResult,
)

# fmt: off
__all__ = [
    "DEFAULT_MIN_RELEVANCE", "KINDS", "ChromaMemory", "EmbeddingMismatch", "IsolationError", "Kind",
    "MemoryHit", "MemoryRecord", "MemoryStats", "MemoryStoreError", "NamespaceError", "NewMemory",
    "RetentionPolicy", "StoreResult", "format_hit", "format_recalled", "recall_for_task", "recalled_event",
    "store_research",
]
# fmt: on

if TYPE_CHECKING:
    from agent.memory.chroma_store import ChromaMemory


def __getattr__(name: str) -> Any:
    if name == "ChromaMemory":
        from agent.memory.chroma_store import ChromaMemory

        return ChromaMemory
    raise AttributeError(f"module 'agent.memory' has no attribute {name!r}")
