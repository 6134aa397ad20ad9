"""Per-namespace long-term memory over Chroma: store, search, forget, stats, export, retention.

* **Client.** An embedded ``PersistentClient`` under the data directory the caller gives; a Chroma
  server (``HttpClient``) when a host is given (``CHROMA_HOST``), for deployments that outgrow one
  machine. Chroma is synchronous: every call goes through ``asyncio.to_thread``.
* **Layout.** See :mod:`agent.memory.layout`: small servers share hash buckets, a server passing
  ``dedicated_threshold`` rows moves (with its rows) to its own collection.
* **Isolation.** Every item call goes through :class:`~agent.memory.scope.NamespaceScope`, made only
  by :meth:`ChromaMemory._scope`; nothing else here touches rows.
* **Embeddings.** Each collection records the embedding id and dimension that filled it; opening a
  store whose collections were filled by another embedding raises :class:`EmbeddingMismatch`.
* **Writes** of one namespace are serialised by an asyncio lock (dedup checks, migration, retention);
  reads never wait. Several processes may share a Chroma server as long as each namespace is
  written by one of them (Discord shards own disjoint guilds); the per-namespace row counts cached
  here only steer search strategy and migration, never correctness.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import structlog
from chromadb.config import Settings

from agent.config import MemoryEnv, parse_settings
from agent.embeddings.base import Embedding
from agent.embeddings.config import embedding_from_settings
from agent.memory import layout
from agent.memory.chroma_embedding import AgentbotEmbeddingFunction
from agent.memory.records import check_id, check_namespace, make_rows, to_hit, to_record
from agent.memory.scope import NamespaceScope
from agent.memory.transfer import ImportResult
from agent.memory.types import (
    KINDS,
    EmbeddingMismatch,
    MemoryHit,
    MemoryRecord,
    MemoryStats,
    MemoryStoreError,
    NewMemory,
    RetentionPolicy,
    StoreResult,
)

log = structlog.get_logger(__name__)

ROW_OVERHEAD_BYTES = 100
"""Per-row disk cost besides text, metadata and the vector, which Chroma keeps twice (SQLite and the
HNSW index); :meth:`ChromaMemory.stats` estimates with it. bench/memory_recall.py compares the
estimate with the bytes really on disk."""
PAGE = 1000


class ChromaMemory:
    """The Chroma implementation of :class:`agent.memory.base.Memory`."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        embedding: Embedding,
        host: str | None = None,
        port: int = 8000,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        prefix: str = "agentbot-mem",
        buckets: int = 16,
        dedicated_threshold: int = 2000,
        exact_search_max: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if path is None and not host:
            raise ValueError("ChromaMemory needs a data directory (path) or a Chroma server (host)")
        if not 1 <= buckets <= 4096:
            raise ValueError("buckets must be between 1 and 4096")
        if dedicated_threshold < 1:
            raise ValueError("dedicated_threshold must be at least 1")
        self.path = Path(path) if path is not None else None
        self.host = host or None
        self.port = int(port)
        self.ssl = ssl
        self._headers = dict(headers or {})
        self.prefix = layout.check_prefix(prefix)
        self.buckets = buckets
        self.dedicated_threshold = dedicated_threshold
        self.exact_search_max = exact_search_max
        self.embedding = embedding
        self._clock = clock
        self._client: Any = None
        self._ef: AgentbotEmbeddingFunction | None = None
        self._collections: dict[str, Any] = {}
        self._dedicated: dict[str, str] = {}
        """namespace -> its own collection's name (only once fully migrated)."""
        self._counts: dict[str, int] = {}
        """Rows per namespace in shared buckets, as far as this process knows."""
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._open_lock = asyncio.Lock()
        self._opened = False

    @classmethod
    def from_env(
        cls, path: str | Path | None, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> ChromaMemory:
        """For tests and library users: ``env`` (the process environment when None) parsed as
        :class:`~agent.config.MemoryEnv`; the bot passes its parsed settings to :meth:`from_settings`."""
        return cls.from_settings(
            path, parse_settings(MemoryEnv, None if env is None else dict(env)), **kwargs
        )

    @classmethod
    def from_settings(cls, path: str | Path | None, m: MemoryEnv, **kwargs: Any) -> ChromaMemory:
        """``MEMORY_EMBEDDING*`` pick the embedding; ``CHROMA_HOST`` (+ ``CHROMA_PORT``, ``CHROMA_SSL``,
        ``CHROMA_TOKEN``) switch from the embedded store under ``path`` to a Chroma server."""
        token = m.chroma_token.get_secret_value().strip() if m.chroma_token else ""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        kwargs.setdefault("embedding", embedding_from_settings(m))
        host = (m.chroma_host or "").strip() or None
        return cls(path, host=host, port=m.chroma_port, ssl=m.chroma_ssl, headers=headers, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def embedding_id(self) -> str:
        return self.embedding.id

    async def open(self) -> None:
        """Load the embedding and check every collection against it. Call at start-up: it raises
        :class:`~agent.embeddings.EmbeddingUnavailable` or :class:`EmbeddingMismatch` with the fix."""
        async with self._open_lock:
            if not self._opened:
                await asyncio.to_thread(self._open_sync)
                self._opened = True

    async def close(self) -> None:
        client, self._client = self._client, None
        self._opened = False
        self._collections.clear()
        if client is not None and hasattr(client, "close"):
            await asyncio.to_thread(client.close)

    def connect(self) -> Any:
        """A raw chromadb client for this store (the embedded directory or the server), without loading
        the embedding: what ``open`` uses, and what ``agentbot backup``/``restore`` copy rows through."""
        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if self.host:
            return chromadb.HttpClient(
                host=self.host, port=self.port, ssl=self.ssl, headers=self._headers or None, settings=settings
            )
        assert self.path is not None
        self.path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(self.path), settings=settings)

    def where(self) -> str:
        return f"Chroma server {self.host}:{self.port} (CHROMA_HOST)" if self.host else str(self.path)

    def _open_sync(self) -> None:
        self.embedding.load()
        self._ef = AgentbotEmbeddingFunction(self.embedding)
        self._client = self.connect()
        self._scan()

    def _scan(self) -> None:
        """Learn the layout from the collections' metadata, refuse foreign embeddings, finish or undo
        migrations a crash interrupted."""
        seen_buckets: set[int] = set()
        half_migrated: list[str] = []
        for col in self._client.list_collections():
            name = str(col.name)
            if not name.startswith(self.prefix + "-"):
                continue
            meta = dict(col.metadata or {})
            role = meta.get(layout.META_ROLE)
            if role not in (layout.ROLE_SHARED, layout.ROLE_DEDICATED):
                log.warning("memory.collection.unknown", collection=name)
                continue
            self._check_embedding(name, meta)
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
            self._client.delete_collection(name)
        for ns in self._dedicated:  # a crash between switching and cleaning leaves copies behind
            shared = self._shared_scope(ns)
            if shared.has_more_than(0):
                shared.delete_where()

    def _check_embedding(self, name: str, meta: Mapping[str, Any]) -> None:
        stored, dim = meta.get(layout.META_EMBEDDING), meta.get(layout.META_DIM)
        if stored != self.embedding.id or int(dim or -1) != self.embedding.dim:
            raise EmbeddingMismatch(
                f"memory collection {name!r} was filled by embedding {stored!r} ({dim} dimensions), but the "
                f"configured embedding is {self.embedding.id!r} ({self.embedding.dim} dimensions); vectors of "
                "two models do not mix. Set MEMORY_EMBEDDING back to the model that filled it, or export the "
                "memories, point the bot at a new data directory (or collection prefix) and import them."
            )

    def _require_open(self) -> None:
        if not self._opened or self._client is None:
            raise MemoryStoreError("memory store is not open: await memory.open() at start-up")

    # -- routing: the only maker of scopes -----------------------------------------------------

    def _base_meta(self) -> dict[str, Any]:
        return {layout.META_EMBEDDING: self.embedding.id, layout.META_DIM: int(self.embedding.dim)}

    def _collection(self, name: str, meta: dict[str, Any]) -> Any:
        col = self._collections.get(name)
        if col is None:
            col = self._client.get_or_create_collection(
                name=name,
                metadata=meta,
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=self._ef,
            )
            self._check_embedding(name, dict(col.metadata or {}))  # another process may have made it
            self._collections[name] = col
        return col

    def _dedicated_meta(self, ns: str, state: str) -> dict[str, Any]:
        return {
            **self._base_meta(),
            layout.META_ROLE: layout.ROLE_DEDICATED,
            layout.META_NAMESPACE: ns,
            layout.META_STATE: state,
        }

    def _shared_scope(self, ns: str) -> NamespaceScope:
        name = layout.shared_name(self.prefix, layout.bucket_of(ns, self.buckets))
        meta = {**self._base_meta(), layout.META_ROLE: layout.ROLE_SHARED, layout.META_BUCKETS: self.buckets}
        return NamespaceScope(self._collection(name, meta), ns, dedicated=False)

    def _scope(self, ns: str) -> NamespaceScope:
        """The one way to reach a namespace's rows (see :mod:`agent.memory.scope`)."""
        self._require_open()
        name = self._dedicated.get(ns)
        if name is None:
            return self._shared_scope(ns)
        return NamespaceScope(
            self._collection(name, self._dedicated_meta(ns, layout.STATE_READY)), ns, dedicated=True
        )

    def _count(self, scope: NamespaceScope) -> int:
        if scope.dedicated:
            return scope.count()
        if scope.namespace not in self._counts:
            self._counts[scope.namespace] = scope.count()
        return self._counts[scope.namespace]

    # -- writes --------------------------------------------------------------------------------

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
            text,
            kind,  # type: ignore[arg-type]
            author,
            thread,
            task,
            tuple(sources),
            created,
            session=session,
            origin=origin,
        )
        return await self.store_many(namespace, [item])

    async def store_many(
        self, namespace: str | int, items: Sequence[NewMemory], *, vectors: np.ndarray | None = None
    ) -> StoreResult:
        """Remember several texts in one pass. ``vectors`` (one per item, from this store's embedding)
        skips embedding; it is for imports and benchmarks, and needs every item to fit in one chunk."""
        ns = check_namespace(namespace)
        self._require_open()
        if vectors is not None and len(vectors) != len(items):
            raise ValueError(f"got {len(vectors)} vectors for {len(items)} memories")
        now = self._clock()
        parents: list[str] = []
        rows: dict[str, tuple[str, str, str, dict[str, Any]]] = {}
        given: dict[str, np.ndarray] = {}
        for i, item in enumerate(items):
            parent, item_rows = make_rows(ns, item, item.created if item.created is not None else now)
            parents.append(parent)
            if vectors is not None:
                if len(item_rows) != 1:
                    raise ValueError("precomputed vectors need every memory to fit in one chunk")
                given.setdefault(parent, vectors[i])
            for row in item_rows:
                rows.setdefault(row[0], row)
        if not rows:
            return StoreResult([], 0, 0)

        known = set(await asyncio.to_thread(lambda: self._scope(ns).owned_ids(list(rows))))
        new = [r for rid, r in rows.items() if rid not in known]
        if not new:
            return StoreResult(parents, 0, len(rows))
        if vectors is not None:
            matrix = np.asarray([given[r[0]] for r in new], dtype=np.float32)
        else:  # embedded outside the lock: it may take seconds, and reads of this guild never wait
            matrix = await asyncio.to_thread(self.embedding.embed_documents, [r[2] for r in new])
        if matrix.shape != (len(new), self.embedding.dim):
            raise MemoryStoreError(
                f"embedding returned {matrix.shape}, expected ({len(new)}, {self.embedding.dim})"
            )
        async with self._locks[ns]:
            written = await asyncio.to_thread(self._write_sync, ns, new, matrix)
        return StoreResult(parents, written, len(rows) - written)

    def _write_sync(
        self, ns: str, new: list[tuple[str, str, str, dict[str, Any]]], matrix: np.ndarray
    ) -> int:
        """Write the rows still missing (another store of the same text may have won the race while
        we embedded); return how many were written."""
        scope = self._scope(ns)  # again: a migration may have finished while we embedded
        ids = [r[0] for r in new]
        fresh = set(ids) - set(scope.owned_ids(ids))
        keep = [i for i, rid in enumerate(ids) if rid in fresh]
        if not keep:
            return 0
        scope.upsert(
            [ids[i] for i in keep], matrix[keep], [new[i][1] for i in keep], [new[i][3] for i in keep]
        )
        if not scope.dedicated:
            if ns in self._counts:
                self._counts[ns] += len(keep)
            if self._count(scope) > self.dedicated_threshold:
                self._migrate_sync(ns)
        return len(keep)

    def _migrate_sync(self, ns: str) -> None:
        """Move a namespace that outgrew its bucket into its own collection (lock held by caller)."""
        shared = self._shared_scope(ns)
        name = layout.dedicated_name(self.prefix, ns)
        meta = self._dedicated_meta(ns, layout.STATE_MIGRATING)
        started = time.perf_counter()
        col = self._collection(name, meta)
        target = NamespaceScope(col, ns, dedicated=True)
        offset = moved = 0
        while page := shared.get(embeddings=True, limit=PAGE, offset=offset):
            target.upsert(
                [r.id for r in page],
                np.asarray([r.embedding for r in page], dtype=np.float32),
                [r.document or "" for r in page],
                [r.metadata for r in page],
            )
            offset += len(page)
            moved += len(page)
        col.modify(metadata={**meta, layout.META_STATE: layout.STATE_READY})
        self._dedicated[ns] = name
        shared.delete_where()
        self._counts.pop(ns, None)
        log.info(
            "memory.migrated",
            namespace=ns,
            collection=name,
            rows=moved,
            seconds=time.perf_counter() - started,
        )

    # -- reads ---------------------------------------------------------------------------------

    async def search(
        self,
        namespace: str | int,
        query: str,
        k: int = 5,
        *,
        min_relevance: float = 0.0,
        kinds: Iterable[str] | None = None,
    ) -> list[MemoryHit]:
        """This namespace's memories closest in meaning to ``query``, best first."""
        ns = check_namespace(namespace)
        if not isinstance(query, str) or not query.strip():
            raise ValueError("search needs a non-empty query")
        self._require_open()
        vector = await asyncio.to_thread(self.embedding.embed_query, query)
        return await self.search_by_vector(ns, vector, k, min_relevance=min_relevance, kinds=kinds)

    async def search_by_vector(
        self,
        namespace: str | int,
        vector: np.ndarray,
        k: int = 5,
        *,
        min_relevance: float = 0.0,
        kinds: Iterable[str] | None = None,
    ) -> list[MemoryHit]:
        """:meth:`search` with the query already embedded (benchmarks time the two apart)."""
        ns = check_namespace(namespace)
        if not 1 <= int(k) <= 100:
            raise ValueError("k must be between 1 and 100")
        where = None
        if kinds is not None:
            wanted = list(dict.fromkeys(kinds))
            if not wanted or any(kd not in KINDS for kd in wanted):
                raise ValueError(f"kinds must be a non-empty subset of {', '.join(KINDS)}")
            where = {"kind": {"$in": wanted}}
        rows = await asyncio.to_thread(
            self._search_sync, ns, np.asarray(vector, dtype=np.float32), int(k), where
        )
        hits = [to_hit(r.id, r.document, r.metadata, 1.0 - float(r.distance or 0.0)) for r in rows]
        return [h for h in hits if h.relevance >= min_relevance]

    def _search_sync(self, ns: str, vector: np.ndarray, k: int, where: dict[str, Any] | None) -> list[Any]:
        scope = self._scope(ns)
        if scope.dedicated:
            return scope.query(vector, k, where)
        n = self._count(scope)
        if n == 0:
            return []
        if n <= self.exact_search_max:
            return scope.exact(vector, k, where)
        return scope.query(vector, min(k, n), where)

    async def get(self, namespace: str | int, ids: Iterable[str]) -> list[MemoryRecord]:
        """The rows of these ids (a parent id brings all its chunks), in order of parent and chunk."""
        ns = check_namespace(namespace)
        wanted = list(dict.fromkeys(check_id(i) for i in ids))
        self._require_open()
        rows = await asyncio.to_thread(self._get_sync, ns, wanted)
        return sorted(
            (to_record(r.id, r.document, r.metadata) for r in rows), key=lambda r: (r.parent, r.chunk)
        )

    def _get_sync(self, ns: str, ids: list[str]) -> list[Any]:
        if not ids:
            return []
        scope = self._scope(ns)
        found = {r.id: r for r in scope.get(ids=ids)}
        for r in scope.get(where={"parent": {"$in": ids}}):
            found.setdefault(r.id, r)
        return list(found.values())

    async def stats(self, namespace: str | int) -> MemoryStats:
        ns = check_namespace(namespace)
        self._require_open()
        return await asyncio.to_thread(self._stats_sync, ns)

    def _stats_sync(self, ns: str) -> MemoryStats:
        scope = self._scope(ns)
        items = 0
        size = 0
        parents: set[str] = set()
        kinds: Counter[str] = Counter()
        oldest: float | None = None
        newest: float | None = None
        offset = 0
        while page := scope.get(limit=PAGE, offset=offset):
            offset += len(page)
            for r in page:
                items += 1
                m = r.metadata
                parents.add(str(m.get("parent", r.id)))
                kinds[str(m.get("kind", "note"))] += 1
                created = float(m.get("created", 0.0))
                oldest = created if oldest is None else min(oldest, created)
                newest = created if newest is None else max(newest, created)
                size += len((r.document or "").encode()) + sum(len(str(v)) for v in m.values())
        size += items * (2 * self.embedding.dim * 4 + ROW_OVERHEAD_BYTES)
        return MemoryStats(
            namespace=ns,
            items=items,
            memories=len(parents),
            bytes_estimate=size,
            oldest=oldest,
            newest=newest,
            by_kind=dict(kinds),
            layout="dedicated" if scope.dedicated else "shared",
            collection=scope.name,
        )

    async def export(self, namespace: str | int) -> AsyncIterator[dict[str, Any]]:
        """Every row of the namespace as a JSON-ready dict (one JSONL line each), page by page."""
        ns = check_namespace(namespace)
        self._require_open()
        offset = 0
        while True:
            page = await asyncio.to_thread(lambda o=offset: self._scope(ns).get(limit=PAGE, offset=o))
            if not page:
                return
            offset += len(page)
            for r in page:
                yield to_record(r.id, r.document, r.metadata).to_row()

    async def import_rows(self, namespace: str | int, rows: Iterable[Mapping[str, Any]]) -> StoreResult:
        """Store exported rows again (into any namespace, with this store's embedding): every row is
        checked first (:mod:`agent.memory.transfer`), chunks of one parent are joined back in order,
        the original dates are kept, and a failure part-way removes what this import added."""
        from agent.memory.transfer import plan_import

        plan = plan_import(enumerate(rows, start=1), max_memories=10**6)
        done = await self.import_memories(namespace, plan.memories)
        return StoreResult(done.ids, done.rows, len(done.ids) - len(done.added))

    async def import_memories(
        self, namespace: str | int, memories: Sequence[NewMemory], *, batch: int = 256
    ) -> ImportResult:
        """All or nothing: memories already here are left as they are; if a write fails, the ones this
        call added are forgotten again before the error is raised."""
        ns = check_namespace(namespace)
        added_parents: list[str] = []
        parents: list[str] = []
        written = 0
        try:
            for i in range(0, len(memories), batch):
                part = memories[i : i + batch]
                ids = [make_rows(ns, m, 0.0)[0] for m in part]
                known = {r.parent or r.id for r in await self.get(ns, ids)}
                result = await self.store_many(ns, part)
                added_parents += [p for p in result.ids if p not in known]
                parents += result.ids
                written += result.added
        except BaseException:
            if added_parents:
                await asyncio.shield(self.forget(ns, list(dict.fromkeys(added_parents))))
            raise
        return ImportResult(parents, list(dict.fromkeys(added_parents)), written)

    # -- deletes -------------------------------------------------------------------------------

    async def forget(self, namespace: str | int, ids: Iterable[str]) -> list[str]:
        """Delete memories by id (a parent id takes its chunks along). Returns the row ids deleted;
        ids of other namespaces, or unknown ones, delete nothing."""
        ns = check_namespace(namespace)
        wanted = list(dict.fromkeys(check_id(i) for i in ids))
        self._require_open()
        if not wanted:
            return []
        async with self._locks[ns]:
            return await asyncio.to_thread(self._forget_sync, ns, wanted)

    def _forget_sync(self, ns: str, ids: list[str]) -> list[str]:
        scope = self._scope(ns)
        removed = scope.delete(ids)
        removed += scope.delete_where({"parent": {"$in": ids}})
        self._uncount(ns, len(removed))
        return sorted(set(removed))

    async def forget_by_query(
        self, namespace: str | int, query: str, *, k: int = 5, min_relevance: float = 0.4
    ) -> list[str]:
        """Delete the memories that best match ``query`` (whole memories, not single chunks).
        For a confirmation step, :meth:`search` first and :meth:`forget` the ids shown."""
        hits = await self.search(namespace, query, k, min_relevance=min_relevance)
        return await self.forget(namespace, list(dict.fromkeys(h.parent or h.id for h in hits)))

    async def clear(self, namespace: str | int) -> int:
        """Delete every memory of the namespace; returns how many rows went."""
        ns = check_namespace(namespace)
        self._require_open()
        async with self._locks[ns]:
            return await asyncio.to_thread(self._clear_sync, ns)

    def _clear_sync(self, ns: str) -> int:
        scope = self._scope(ns)
        if not scope.dedicated:
            removed = len(scope.delete_where())
            self._counts[ns] = 0
            return removed
        removed = scope.count()
        name = self._dedicated.pop(ns)
        self._collections.pop(name, None)
        self._client.delete_collection(name)
        self._counts[ns] = 0
        return removed

    async def apply_retention(
        self, namespace: str | int, policy: RetentionPolicy, *, now: float | None = None
    ) -> list[str]:
        """Evict what the policy no longer allows, oldest first, whole memories at a time. Call after
        storing. Returns the row ids evicted."""
        ns = check_namespace(namespace)
        self._require_open()
        if policy.max_items is None and policy.max_age_days is None:
            return []
        at = self._clock() if now is None else now
        async with self._locks[ns]:
            return await asyncio.to_thread(self._retention_sync, ns, policy, at)

    def _retention_sync(self, ns: str, policy: RetentionPolicy, now: float) -> list[str]:
        scope = self._scope(ns)
        removed: list[str] = []
        if policy.max_age_days is not None:
            cutoff = now - policy.max_age_days * 86400.0
            removed += scope.delete_where({"created": {"$lt": cutoff}})
        if policy.max_items is not None and scope.has_more_than(policy.max_items):
            groups: dict[str, list[str]] = defaultdict(list)
            created: dict[str, float] = {}
            offset = 0
            while page := scope.get(documents=False, limit=PAGE * 5, offset=offset):
                offset += len(page)
                for r in page:
                    parent = str(r.metadata.get("parent", r.id))
                    groups[parent].append(r.id)
                    created[parent] = min(
                        created.get(parent, float("inf")), float(r.metadata.get("created", 0.0))
                    )
            remaining = sum(len(v) for v in groups.values())
            doomed: list[str] = []
            for parent in sorted(groups, key=lambda p: (created[p], p)):
                if remaining <= policy.max_items:
                    break
                doomed += groups[parent]
                remaining -= len(groups[parent])
            for i in range(0, len(doomed), PAGE * 5):
                removed += scope.delete(doomed[i : i + PAGE * 5])
        self._uncount(ns, len(removed))
        if removed:
            log.info("memory.retention.evicted", namespace=ns, rows=len(removed))
        return removed

    def _uncount(self, ns: str, n: int) -> None:
        if ns in self._counts:
            self._counts[ns] = max(0, self._counts[ns] - n)
