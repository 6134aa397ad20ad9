"""The memory interface the agent, the tools and the bot program against.

One implementation today (:class:`agent.memory.chroma_store.ChromaMemory`); tests and other stores
only need these methods. Every method takes the namespace (the Discord guild id) explicitly, and an
implementation must never let one namespace read, change or count another's memories.

The operations made of others (``store``, ``forget_by_query`` and the imports) are written here once;
a store that subclasses :class:`Memory` inherits them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from agent.memory import transfer
from agent.memory.types import (
    Kind,
    MemoryHit,
    MemoryRecord,
    MemoryStats,
    NewMemory,
    RetentionPolicy,
    StoreResult,
)


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
    ) -> StoreResult:
        """Remember one text (chunked when long). Storing the same text again adds nothing."""
        item = NewMemory(
            text, cast(Kind, kind), author, thread, task, tuple(sources), created, session, origin
        )
        return await self.store_many(namespace, [item])

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
    ) -> list[str]:
        """Delete the memories that best match ``query`` (whole memories, not single chunks).
        For a confirmation step, :meth:`search` first and :meth:`forget` the ids shown."""
        hits = await self.search(namespace, query, k, min_relevance=min_relevance)
        return await self.forget(namespace, list(dict.fromkeys(h.parent or h.id for h in hits)))

    async def stats(self, namespace: str | int) -> MemoryStats: ...

    def export(self, namespace: str | int) -> AsyncIterator[dict[str, Any]]: ...

    async def import_rows(self, namespace: str | int, rows: Iterable[Mapping[str, Any]]) -> StoreResult:
        """Store exported rows again (into any namespace, with this store's embedding): every row is
        checked first (:mod:`agent.memory.transfer`), chunks of one parent are joined back in order,
        the original dates are kept, and a failure part-way removes what this import added."""
        plan = transfer.plan_import(enumerate(rows, start=1), max_memories=10**6)
        done = await self.import_memories(namespace, plan.memories)
        return StoreResult(done.ids, done.rows, len(done.ids) - len(done.added))

    async def import_memories(
        self, namespace: str | int, memories: Sequence[NewMemory], *, batch: int = 256
    ) -> transfer.ImportResult:
        """All or nothing (see :func:`agent.memory.transfer.import_memories`)."""
        return await transfer.import_memories(self, namespace, memories, batch=batch)

    async def clear(self, namespace: str | int) -> int: ...

    async def apply_retention(
        self, namespace: str | int, policy: RetentionPolicy, *, now: float | None = None
    ) -> list[str]: ...
