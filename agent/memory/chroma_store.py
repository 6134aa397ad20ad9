"""Per-namespace long-term memory over Chroma: an embedded ``PersistentClient`` under the data directory,
or a Chroma server (``CHROMA_HOST``) for deployments that outgrow one machine. Chroma is synchronous:
every call goes through ``asyncio.to_thread``. Writes of one namespace are serialised by an asyncio
lock (dedup checks, migration, retention); reads never wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from agent.config import MemoryEnv
from agent.embeddings.base import Embedding
from agent.embeddings.config import embedding_from_settings
from agent.logs import register_secret
from agent.memory import layout
from agent.memory.chroma_client import chroma_client, server_name
from agent.memory.chroma_collections import Collections
from agent.memory.records import check_id, check_namespace, make_rows, to_hit, to_record
from agent.memory.scope import PAGE, Row, whole_memories
from agent.memory.types import (
    KINDS,
    Kind,
    MemoryHit,
    MemoryRecord,
    MemoryStats,
    MemoryStoreError,
    NewMemory,
    RetentionPolicy,
    StoreResult,
)

T = TypeVar("T")

EMBED_SLICE = 32
"""Texts embedded per call when storing. The embedding runs one call at a time, so an import embedded
in one call made every other server's recall and search wait for all of it (a 20 MB file: minutes)."""


class ChromaMemory:
    """The memory store the agent, the tools and the bot use. Every method takes the namespace (the
    Discord guild id) explicitly, and no namespace can read, change or count another's memories."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        embedding: Embedding,
        host: str | None = None,
        port: int = 8000,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        buckets: int = 16,
        dedicated_threshold: int = 2000,
        clock: Callable[[], float] = time.time,
        timeout: int = 30,
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
        self.prefix = layout.PREFIX
        self.buckets = buckets
        self.dedicated_threshold = dedicated_threshold
        self.embedding = embedding
        self._clock = clock
        self.timeout = timeout
        self._cols: Collections | None = None
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._writes: defaultdict[str, int] = defaultdict(int)
        """Per namespace: locked writes finished (stores, forgets, evictions). A store whose namespace
        saw none between its first read and its write skips reading the same ids again."""
        self._open_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, path: str | Path | None, m: MemoryEnv, **kwargs: Any) -> ChromaMemory:
        """``MEMORY_EMBEDDING*`` pick the embedding; ``CHROMA_HOST`` (+ ``CHROMA_PORT``, ``CHROMA_SSL``,
        ``CHROMA_TOKEN``) switch from the embedded store under ``path`` to a Chroma server."""
        token = m.chroma_token.get_secret_value().strip() if m.chroma_token else ""
        register_secret(token)  # a server refusing it may say what it got: that text is logged and shown
        headers = {"Authorization": f"Bearer {token}"} if token else None
        kwargs.setdefault("embedding", embedding_from_settings(m))
        host = (m.chroma_host or "").strip() or None
        kwargs.setdefault("timeout", m.chroma_timeout)
        return cls(path, host=host, port=m.chroma_port, ssl=m.chroma_ssl, headers=headers, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def embedding_id(self) -> str:
        return self.embedding.id

    async def open(self) -> None:
        """Load the embedding and check every collection against it. Call at start-up: it raises
        :class:`~agent.embeddings.EmbeddingUnavailable` or :class:`EmbeddingMismatch` with the fix."""
        async with self._open_lock:
            if self._cols is None:
                self._cols = await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> Collections:
        self.embedding.load()
        return Collections.open(
            self.connect(),
            self.embedding,
            prefix=self.prefix,
            buckets=self.buckets,
            dedicated_threshold=self.dedicated_threshold,
        )

    async def close(self) -> None:
        cols, self._cols = self._cols, None
        if cols is not None and hasattr(cols.client, "close"):
            await asyncio.to_thread(cols.client.close)

    def connect(self) -> Any:
        """A raw chromadb client for this store (the embedded directory or the server), without loading
        the embedding: what ``open`` uses, and what ``agentbot backup``/``restore`` copy rows through."""
        # Our embedding function is registered with chromadb before any client exists (chromadb itself
        # loads with the first client), so a collection opened through a raw client still rebuilds it.
        import agent.memory.chroma_embedding  # noqa: F401

        return chroma_client(
            self.path,
            host=self.host,
            port=self.port,
            ssl=self.ssl,
            headers=self._headers,
            timeout=self.timeout,
        )

    def where(self) -> str:
        return server_name(self.host, self.port) if self.host else str(self.path)

    def _open(self) -> Collections:
        if self._cols is None:
            raise MemoryStoreError("memory store is not open: await memory.open() at start-up")
        return self._cols

    async def _call(self, fn: Callable[..., T], /, *args: Any) -> T:
        """``fn(*args)`` in a worker thread. Chroma and the embedding fail with their own errors (httpx's
        ConnectError when the Chroma server is down, chromadb's InternalError for a read-only or damaged
        directory): they become :class:`MemoryStoreError`, which every caller handles and /memory shows
        (they used to end each command with "Something went wrong")."""
        try:
            return await asyncio.to_thread(fn, *args)
        except MemoryStoreError:
            raise
        except Exception as e:
            raise MemoryStoreError(f"the memory store failed ({type(e).__name__}: {e})") from e

    async def _in_thread(
        self, namespace: str | int, fn: Callable[[Collections, str], T], *, write: bool = False
    ) -> T:
        """``fn(collections, namespace)`` in a worker thread; a write holds the namespace's lock."""
        ns = check_namespace(namespace)
        cols = self._open()
        if not write:
            return await self._call(fn, cols, ns)
        async with self._locks[ns]:
            try:
                return await self._call(fn, cols, ns)
            finally:
                self._writes[ns] += 1

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
        retention: RetentionPolicy | None = None,
    ) -> StoreResult:
        """Remember one text (chunked when long). Storing the same text again adds nothing.
        ``retention``: applied afterwards, as :meth:`apply_retention` would."""
        item = NewMemory(
            text, cast(Kind, kind), author, thread, task, tuple(sources), created, session, origin
        )
        return await self.store_many(namespace, [item], retention=retention)

    async def store_many(
        self,
        namespace: str | int,
        items: Sequence[NewMemory],
        *,
        vectors: np.ndarray | None = None,
        retention: RetentionPolicy | None = None,
    ) -> StoreResult:
        """Remember several texts in one pass. ``vectors`` (one per item, from this store's embedding)
        skips embedding; it is for imports and benchmarks, and needs every item to fit in one chunk.
        ``retention``: applied afterwards, as :meth:`apply_retention` would, in the same worker-thread
        call and hold of the namespace's lock as the write (a run's answer: one hop fewer)."""
        ns = check_namespace(namespace)
        cols = self._open()
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
            await self._retain(ns, retention)
            return StoreResult([], 0, 0)

        # Which ids exist, and whose: ours are skipped (not embedded again); another namespace's fail at
        # the write. Read once: unless this namespace was written meanwhile, the write reuses it (one
        # Chroma read fewer per run's answer, ~1 ms of CPU).
        writes_before = self._writes[ns]
        owners = await self._call(lambda: cols.scope(ns).owners(list(rows)))
        new = [r for rid, r in rows.items() if owners.get(rid) != ns]
        if not new:
            await self._retain(ns, retention)
            return StoreResult(parents, 0, len(rows))
        if vectors is not None:
            matrix = np.asarray([given[r[0]] for r in new], dtype=np.float32)
        else:  # embedded outside the lock: it may take seconds, and reads of this guild never wait
            texts = [r[2] for r in new]
            parts = [
                await self._call(self.embedding.embed_documents, texts[i : i + EMBED_SLICE])
                for i in range(0, len(texts), EMBED_SLICE)
            ]
            matrix = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if matrix.shape != (len(new), self.embedding.dim):
            raise MemoryStoreError(
                f"embedding returned {matrix.shape}, expected ({len(new)}, {self.embedding.dim})"
            )
        at = self._clock()

        def write(cols: Collections, ns: str, owners: dict[str, str | None] | None) -> int:
            written = cols.write_new(ns, new, matrix, owners)
            if retention is not None:
                cols.evict(ns, retention, at)
            return written

        async with self._locks[ns]:
            try:
                unchanged = self._writes[ns] == writes_before
                written = await self._call(write, cols, ns, owners if unchanged else None)
            finally:
                self._writes[ns] += 1
        return StoreResult(parents, written, len(rows) - written)

    async def _retain(self, ns: str, retention: RetentionPolicy | None) -> None:
        if retention is not None:
            await self.apply_retention(ns, retention)

    # -- reads ---------------------------------------------------------------------------------

    async def search(
        self,
        namespace: str | int,
        query: str | np.ndarray,
        k: int = 5,
        *,
        min_relevance: float = 0.0,
        kinds: Iterable[str] | None = None,
        retention: RetentionPolicy | None = None,
    ) -> list[MemoryHit]:
        """This namespace's memories closest in meaning to ``query``, best first. ``query`` may be a
        vector of this store's embedding (benchmarks time embedding and search apart).

        ``retention``: only what it keeps is searched, without deleting the rest (that waits for the next
        write, :meth:`apply_retention`): a run's recall never takes the namespace's write lock, so it
        never waits behind a memory import's batch, and still never sees what retention removes."""
        ns = check_namespace(namespace)
        if not isinstance(query, np.ndarray) and (not isinstance(query, str) or not query.strip()):
            raise ValueError("search needs a non-empty query")
        if not 1 <= int(k) <= 100:
            raise ValueError("k must be between 1 and 100")
        where = None
        if kinds is not None:
            wanted = list(dict.fromkeys(kinds))
            if not wanted or any(kd not in KINDS for kd in wanted):
                raise ValueError(f"kinds must be a non-empty subset of {', '.join(KINDS)}")
            where = {"kind": {"$in": wanted}}
        cols = self._open()
        text = query if isinstance(query, str) else None
        given = None if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        at = self._clock()

        def nearest(cols: Collections, ns: str) -> list[Row]:
            # the query's embedding in the same worker-thread call as the search: one hop a recall
            vec = given if text is None else np.asarray(self.embedding.embed_query(text), dtype=np.float32)
            kept = None
            if retention is not None:  # the row count the search needs anyway tells if max_items is passed
                scope = cols.scope(ns)
                kept = scope.kept_where(retention, at, cols.count(scope))
            both = [w for w in (where, kept) if w]
            return cols.nearest(
                ns, vec, int(k), both[0] if len(both) == 1 else {"$and": both} if both else None
            )

        rows = await self._call(nearest, cols, ns)
        hits = [to_hit(r.id, r.document, r.metadata, 1.0 - float(r.distance or 0.0)) for r in rows]
        return [h for h in hits if h.relevance >= min_relevance]

    async def get(self, namespace: str | int, ids: Iterable[str]) -> list[MemoryRecord]:
        """The rows of these ids (a parent id brings all its chunks), in order of parent and chunk."""
        check_namespace(namespace)
        wanted = list(dict.fromkeys(check_id(i) for i in ids))
        rows = await self._in_thread(namespace, lambda cols, ns: cols.scope(ns).with_parents(wanted))
        return sorted(
            (to_record(r.id, r.document, r.metadata) for r in rows), key=lambda r: (r.parent, r.chunk)
        )

    async def stats(self, namespace: str | int) -> MemoryStats:
        return await self._in_thread(namespace, lambda cols, ns: cols.scope(ns).stats(self.embedding.dim))

    async def records(self, namespace: str | int) -> AsyncIterator[MemoryRecord]:
        """Every row of the namespace, page by page: the ids first, then their rows by id, a memory's
        chunks in one read. Pages by offset skipped a row for each one forgotten or evicted meanwhile (a
        run's answer on a server at its max_items), and an export lacking one chunk could not be imported.
        A memory deleted meanwhile is left out whole."""
        ns = check_namespace(namespace)
        cols = self._open()
        ids = await self._call(lambda: cols.scope(ns).ids())
        for batch in whole_memories(ids, PAGE):
            page = await self._call(lambda b=batch: cols.scope(ns).get(ids=b))
            where = {rid: i for i, rid in enumerate(batch)}
            for r in sorted(page, key=lambda r: where.get(r.id, 0)):
                yield to_record(r.id, r.document, r.metadata)

    async def export(self, namespace: str | int) -> AsyncIterator[dict[str, Any]]:
        """Every row of the namespace as a JSON-ready dict (one JSONL line each)."""
        async for record in self.records(namespace):
            yield record.to_row()

    # -- deletes -------------------------------------------------------------------------------

    async def forget(self, namespace: str | int, ids: Iterable[str]) -> list[str]:
        """Delete memories by id (a parent id takes its chunks along). Returns the row ids deleted;
        ids of other namespaces, or unknown ones, delete nothing."""
        check_namespace(namespace)
        wanted = list(dict.fromkeys(check_id(i) for i in ids))

        def forget(cols: Collections, ns: str) -> list[str]:
            if not wanted:
                return []
            scope = cols.scope(ns)
            removed = scope.delete(wanted) + scope.delete_where({"parent": {"$in": wanted}})
            cols.removed(ns, len(removed))
            return sorted(set(removed))

        return await self._in_thread(namespace, forget, write=True)

    async def forget_by_query(
        self, namespace: str | int, query: str, *, k: int = 5, min_relevance: float = 0.4
    ) -> list[str]:
        """Delete the memories that best match ``query`` (whole memories, not single chunks).
        For a confirmation step, :meth:`search` first and :meth:`forget` the ids shown."""
        hits = await self.search(namespace, query, k, min_relevance=min_relevance)
        return await self.forget(namespace, list(dict.fromkeys(h.parent or h.id for h in hits)))

    async def clear(self, namespace: str | int) -> int:
        """Delete every memory of the namespace; returns how many rows went."""
        return await self._in_thread(namespace, Collections.clear, write=True)

    async def apply_retention(
        self, namespace: str | int, policy: RetentionPolicy, *, now: float | None = None
    ) -> list[str]:
        """Evict what the policy no longer allows, oldest first, whole memories at a time. Call after
        storing. Returns the row ids evicted."""
        if policy.max_items is None and policy.max_age_days is None:
            check_namespace(namespace)  # refused as before, without the thread hop and write lock
            return []  # that every run's recall would otherwise pay for nothing
        at = self._clock() if now is None else now
        return await self._in_thread(namespace, lambda cols, ns: cols.evict(ns, policy, at), write=True)
