"""The memory interface the agent, the tools and the bot program against.

One implementation today (:class:`agent.memory.chroma_store.ChromaMemory`); tests and other stores
only need these methods. Every method takes the namespace (the Discord guild id) explicitly, and an
implementation must never let one namespace read, change or count another's memories.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agent.memory.transfer import ImportResult
from agent.memory.types import MemoryHit, MemoryRecord, MemoryStats, NewMemory, RetentionPolicy, StoreResult


@runtime_checkable
class Memory(Protocol):
    @property
    def embedding_id(self) -> str: ...

    async def open(self) -> None:
        """Load the embedding and check the stored collections; raise with the fix if either fails."""
        ...

    async def close(self) -> None: ...

    async def store(
        self,
        namespace: str | int,
        text: str,
        *,
        kind: str = "note",
        author: str = "",
        thread: str = "",
        task: str = "",
        sources: Iterable[str] = (),
        created: float | None = None,
        session: str = "",
        origin: str = "",
    ) -> StoreResult: ...

    async def store_many(
        self, namespace: str | int, items: Sequence[NewMemory], *, vectors: np.ndarray | None = None
    ) -> StoreResult: ...

    async def search(
        self,
        namespace: str | int,
        query: str,
        k: int = 5,
        *,
        min_relevance: float = 0.0,
        kinds: Iterable[str] | None = None,
    ) -> list[MemoryHit]: ...

    async def get(self, namespace: str | int, ids: Iterable[str]) -> list[MemoryRecord]: ...

    async def forget(self, namespace: str | int, ids: Iterable[str]) -> list[str]: ...

    async def forget_by_query(
        self, namespace: str | int, query: str, *, k: int = 5, min_relevance: float = 0.4
    ) -> list[str]: ...

    async def stats(self, namespace: str | int) -> MemoryStats: ...

    def export(self, namespace: str | int) -> AsyncIterator[dict[str, Any]]: ...

    async def import_rows(self, namespace: str | int, rows: Iterable[Mapping[str, Any]]) -> StoreResult: ...

    async def import_memories(self, namespace: str | int, memories: Sequence[NewMemory]) -> ImportResult:
        """All or nothing: what a failed import added is removed again."""
        ...

    async def clear(self, namespace: str | int) -> int: ...

    async def apply_retention(
        self, namespace: str | int, policy: RetentionPolicy, *, now: float | None = None
    ) -> list[str]: ...
