"""The store's Chroma collections (:mod:`agent.memory.layout`): which one holds a namespace, and the only
maker of scopes (:mod:`agent.memory.scope`). Each collection records the embedding that filled it, and
another embedding is refused (:class:`EmbeddingMismatch`). The per-namespace row counts cached here
steer search strategy and migration, and tell retention whether a namespace is past ``max_items``
without a read; they are exact as long as each namespace is written by one process (Discord shards own
disjoint guilds), which is also what lets several processes share a Chroma server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from agent.embeddings.base import Embedding
from agent.memory import layout
from agent.memory.scope import PAGE, NamespaceScope, Row
from agent.memory.types import EmbeddingMismatch, MemoryStoreError, RetentionPolicy

log = structlog.get_logger(__name__)

EXACT_SEARCH_MAX = 200


def setting_of(embedding_id: str) -> str:
    """The settings that give an embedding of this id (what the operator sets to open the store again)."""
    if embedding_id.startswith("openai-compatible:"):
        return f"MEMORY_EMBEDDING=openai and MEMORY_EMBEDDING_MODEL={embedding_id.split(':', 1)[1]}"
    if embedding_id.startswith("use-multilingual"):
        return "MEMORY_EMBEDDING=multilingual"
    return (
        "MEMORY_EMBEDDING=minilm" if embedding_id.startswith("minilm") else "MEMORY_EMBEDDING to that model"
    )


def check_embedding(embedding: Embedding, name: str, meta: Mapping[str, Any]) -> None:
    stored, dim = meta.get(layout.META_EMBEDDING), meta.get(layout.META_DIM)
    if stored != embedding.id or int(dim or -1) != embedding.dim:
        raise EmbeddingMismatch(
            f"memory collection {name!r} was filled by embedding {stored!r} ({dim} dimensions), but the "
            f"configured embedding is {embedding.id!r} ({embedding.dim} dimensions); vectors of "
            f"two models do not mix. Set {setting_of(str(stored))} again; to switch models, /memory export "
            "with it, then start on a new DATA_DIR (or Chroma server) and /memory import the file."
        )


@dataclass(eq=False)
class Collections:
    """One open store's collections; made by :meth:`open`, which checks and repairs what it finds."""

    client: Any
    embedding: Embedding
    prefix: str
    buckets: int
    dedicated_threshold: int
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _dedicated: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    """namespace -> its own collection's name (only once fully migrated)."""
    _counts: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    """Rows per namespace in shared buckets, as far as this process knows."""

    def __post_init__(self) -> None:
        # Here, not at the top: it imports chromadb, which agent.memory.chroma_client loads on first use.
        from agent.memory.chroma_embedding import AgentbotEmbeddingFunction

        self._ef = AgentbotEmbeddingFunction(self.embedding)

    @classmethod
    def open(cls, client: Any, embedding: Embedding, **kwargs: Any) -> Collections:
        cols = cls(client, embedding, **kwargs)
        cols._scan()
        return cols

    def _scan(self) -> None:
        """Learn the layout from the collections' metadata, refuse foreign embeddings, finish or undo
        migrations a crash interrupted."""
        seen_buckets: set[int] = set()
        half_migrated: list[str] = []
        for col in self.client.list_collections():
            name = str(col.name)
            if not name.startswith(self.prefix + "-"):
                continue
            meta = dict(col.metadata or {})
            role = meta.get(layout.META_ROLE)
            if role not in (layout.ROLE_SHARED, layout.ROLE_DEDICATED):
                log.warning("memory.collection.unknown", collection=name)
                continue
            check_embedding(self.embedding, name, meta)
            if role == layout.ROLE_SHARED:
                seen_buckets.add(int(meta.get(layout.META_BUCKETS, self.buckets)))
            elif meta.get(layout.META_STATE) == layout.STATE_READY:
                self._dedicated[str(meta[layout.META_NAMESPACE])] = name
            else:
                half_migrated.append(name)
        if len(seen_buckets) > 1:
            raise MemoryStoreError(f"shared collections disagree on the bucket count: {sorted(seen_buckets)}")
        if seen_buckets and (existing := seen_buckets.pop()) != self.buckets:
            log.info("memory.buckets.adopted", configured=self.buckets, existing=existing)
            self.buckets = existing
        for name in half_migrated:  # its rows are all still in the shared bucket
            log.warning("memory.migration.undone", collection=name)
            self.client.delete_collection(name)
        for ns in self._dedicated:  # a crash between switching and cleaning leaves copies behind
            shared = self._shared(ns)
            if shared.has_more_than(0):
                shared.delete_where()

    # -- routing: the only maker of scopes -----------------------------------------------------

    def collection(self, name: str, meta: dict[str, Any]) -> Any:
        col = self._cache.get(name)
        if col is None:
            col = self.client.get_or_create_collection(
                name=name,
                metadata=meta,
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=self._ef,
            )
            check_embedding(
                self.embedding, name, dict(col.metadata or {})
            )  # another process may have made it
            self._cache[name] = col
        return col

    def _base_meta(self) -> dict[str, Any]:
        return {layout.META_EMBEDDING: self.embedding.id, layout.META_DIM: int(self.embedding.dim)}

    def dedicated_meta(self, ns: str, state: str) -> dict[str, Any]:
        return {
            **self._base_meta(),
            layout.META_ROLE: layout.ROLE_DEDICATED,
            layout.META_NAMESPACE: ns,
            layout.META_STATE: state,
        }

    def _shared(self, ns: str) -> NamespaceScope:
        name = layout.shared_name(self.prefix, layout.bucket_of(ns, self.buckets))
        meta = {**self._base_meta(), layout.META_ROLE: layout.ROLE_SHARED, layout.META_BUCKETS: self.buckets}
        return NamespaceScope(self.collection(name, meta), ns, dedicated=False)

    def scope(self, ns: str) -> NamespaceScope:
        """The one way to reach a namespace's rows (see :mod:`agent.memory.scope`)."""
        name = self._dedicated.get(ns)
        if name is None:
            return self._shared(ns)
        return NamespaceScope(
            self.collection(name, self.dedicated_meta(ns, layout.STATE_READY)), ns, dedicated=True
        )

    def nearest(self, ns: str, vector: np.ndarray, k: int, where: dict[str, Any] | None) -> list[Row]:
        """The ``k`` rows closest to ``vector``. A namespace of at most ``EXACT_SEARCH_MAX`` rows in a
        shared bucket is scanned exactly (see :meth:`NamespaceScope.exact`)."""
        scope = self.scope(ns)
        if scope.dedicated:
            return scope.query(vector, k, where)
        n = self.count(scope)
        if n == 0:
            return []
        if n <= EXACT_SEARCH_MAX:
            return scope.exact(vector, k, where)
        return scope.query(vector, min(k, n), where)

    # -- counts and moves ----------------------------------------------------------------------

    def count(self, scope: NamespaceScope) -> int:
        if scope.dedicated:
            return scope.count()
        if scope.namespace not in self._counts:
            self._counts[scope.namespace] = scope.count()
        return self._counts[scope.namespace]

    def added(self, scope: NamespaceScope, n: int) -> None:
        """Count ``n`` rows just written, and move a namespace that outgrew its bucket."""
        if scope.dedicated:
            return
        if scope.namespace in self._counts:
            self._counts[scope.namespace] += n
        if self.count(scope) > self.dedicated_threshold:
            self._migrate(scope.namespace)

    def removed(self, ns: str, n: int) -> None:
        if ns in self._counts:
            self._counts[ns] = max(0, self._counts[ns] - n)

    def write_new(
        self,
        ns: str,
        new: list[tuple[str, str, str, dict[str, Any]]],
        matrix: np.ndarray,
        owners: dict[str, str | None] | None = None,
    ) -> int:
        """Write the rows still missing (another store of the same text may have won the race while
        they were embedded: ``owners`` is then ``None`` and they are read again); return how many."""
        scope = self.scope(ns)  # again: a migration may have finished while they were embedded
        ids, docs, metas = [r[0] for r in new], [r[1] for r in new], [r[3] for r in new]
        keep = scope.write_new(ids, matrix, docs, metas, owners)
        if keep:
            self.added(scope, len(keep))
        return len(keep)

    def evict(self, ns: str, policy: RetentionPolicy, at: float) -> list[str]:
        """Apply a retention policy to one namespace; returns the row ids evicted."""
        scope = self.scope(ns)
        removed = scope.evict(policy, at, self.count(scope) if policy.max_items is not None else None)
        self.removed(ns, len(removed))
        return removed

    def _migrate(self, ns: str) -> None:
        """Move a namespace that outgrew its bucket into its own collection."""
        shared = self._shared(ns)
        name = layout.dedicated_name(self.prefix, ns)
        meta = self.dedicated_meta(ns, layout.STATE_MIGRATING)
        started = time.perf_counter()
        col = self.collection(name, meta)
        target = NamespaceScope(col, ns, dedicated=True)
        offset = 0
        while page := shared.get(embeddings=True, limit=PAGE, offset=offset):
            target.upsert(
                [r.id for r in page],
                np.asarray([r.embedding for r in page], dtype=np.float32),
                [r.document or "" for r in page],
                [r.metadata for r in page],
            )
            offset += len(page)
        col.modify(metadata={**meta, layout.META_STATE: layout.STATE_READY})
        self._dedicated[ns] = name
        shared.delete_where()
        self._counts.pop(ns, None)
        log.info(
            "memory.migrated",
            namespace=ns,
            collection=name,
            rows=offset,
            seconds=time.perf_counter() - started,
        )

    def clear(self, ns: str) -> int:
        """Delete every row of the namespace (a dedicated one loses its collection); how many went."""
        scope = self.scope(ns)
        if not scope.dedicated:
            removed = len(scope.delete_where())
        else:
            removed = scope.count()
            name = self._dedicated.pop(ns)
            self._cache.pop(name, None)
            self.client.delete_collection(name)
        self._counts[ns] = 0
        return removed
