"""The chokepoint: the only code that reads, writes or deletes memory rows in Chroma.

A :class:`NamespaceScope` is bound to one namespace and one collection when it is made, and every
item call goes through it:

* in a shared bucket, every ``get``, ``query`` and ``delete`` carries ``ns == namespace`` (combined
  with any other filter by ``$and``, never replaced by it);
* in a namespace's own collection, queries run unfiltered (a filter there costs 40x, see
  ``layout``), because the collection itself is the boundary and ``add`` refuses foreign rows;
* every row that comes back is checked again: a row of another namespace is dropped and logged,
  whatever bug or hand edit put it there;
* deletes by id first resolve which ids this namespace owns, so a guessed id of another server
  deletes nothing; writes refuse an id another namespace already holds (ids are 64-bit hashes).

Statistics and retention eviction read through the scope too. All methods are synchronous: the
store calls them through ``asyncio.to_thread`` (eviction with the namespace's write lock held).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from agent.memory.records import ID_HEX, NS_KEY
from agent.memory.types import IsolationError, MemoryStats, RetentionPolicy

log = structlog.get_logger(__name__)

PAGE = 1000
ROW_OVERHEAD_BYTES = 100
"""Per-row disk cost besides text, metadata and the vector, which Chroma keeps twice (SQLite and the
HNSW index); :meth:`NamespaceScope.stats` estimates with it. bench/memory_recall.py compares the
estimate with the bytes really on disk."""


@dataclass(slots=True)
class Row:
    id: str
    document: str | None
    metadata: dict[str, Any]
    distance: float | None = None
    embedding: Any = None


def _column(result: Any, key: str, n: int) -> list[Any]:
    value = result.get(key)
    return list(value) if value is not None else [None] * n


def whole_memories(ids: list[str], size: int) -> Iterator[list[str]]:
    """``ids`` in batches of about ``size``, never splitting the chunks of one memory (``<parent>-<n>``,
    stored together) between two."""
    batch: list[str] = []
    for rid in ids:
        if len(batch) >= size and rid[:ID_HEX] != batch[-1][:ID_HEX]:
            yield batch
            batch = []
        batch.append(rid)
    if batch:
        yield batch


class NamespaceScope:
    """One namespace's rows in one collection. Made only by the store's router."""

    __slots__ = ("collection", "dedicated", "namespace")

    def __init__(self, collection: Any, namespace: str, *, dedicated: bool) -> None:
        self.collection = collection
        self.namespace = namespace
        self.dedicated = dedicated

    @property
    def name(self) -> str:
        return str(self.collection.name)

    # -- filters -------------------------------------------------------------------------------

    def where(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The namespace clause, and-ed with ``extra``: the one place the guild filter is written."""
        clause: dict[str, Any] = {NS_KEY: {"$eq": self.namespace}}
        return {"$and": [clause, extra]} if extra else clause

    def _owned(self, rows: list[Row]) -> list[Row]:
        kept = [r for r in rows if (r.metadata or {}).get(NS_KEY) == self.namespace]
        if len(kept) != len(rows):
            foreign = [r.id for r in rows if (r.metadata or {}).get(NS_KEY) != self.namespace]
            log.error(
                "memory.isolation.foreign_rows_dropped",
                collection=self.name,
                namespace=self.namespace,
                ids=foreign[:10],
                count=len(foreign),
            )
        return kept

    # -- reads ---------------------------------------------------------------------------------

    def get(
        self,
        *,
        ids: list[str] | None = None,
        where: dict[str, Any] | None = None,
        documents: bool = True,
        embeddings: bool = False,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Row]:
        if ids is not None and not ids:
            return []
        include = (
            ["metadatas"] + (["documents"] if documents else []) + (["embeddings"] if embeddings else [])
        )
        r = self.collection.get(ids=ids, where=self.where(where), include=include, limit=limit, offset=offset)
        got = list(r["ids"])
        docs = _column(r, "documents", len(got))
        metas = _column(r, "metadatas", len(got))
        embs = _column(r, "embeddings", len(got))
        rows = [Row(i, d, dict(m or {}), None, e) for i, d, m, e in zip(got, docs, metas, embs, strict=True)]
        return self._owned(rows)

    def ids(self) -> list[str]:
        """Every row id of this namespace, in Chroma's order (insertion), nothing else read: a listing's
        snapshot, whose rows are then read by id (:meth:`get` checks them as every read's are)."""
        r = self.collection.get(where=None if self.dedicated else self.where(), include=[])
        return list(r["ids"])

    def owned_ids(self, ids: list[str]) -> list[str]:
        return [r.id for r in self.get(ids=ids, documents=False)]

    def owners(self, ids: list[str]) -> dict[str, str | None]:
        """The namespace holding each of ``ids`` that exists (ours or another's): the one read
        :meth:`write_new` needs, taken before a store embeds, so a write that nothing changed since can
        skip it. Other namespaces' metadata is read only to refuse, and returned as their name alone."""
        if not ids:
            return {}
        held = self.collection.get(ids=ids, include=["metadatas"])
        return {i: (m or {}).get(NS_KEY) for i, m in zip(held["ids"], held["metadatas"] or [], strict=False)}

    def count(self) -> int:
        if self.dedicated:
            return int(self.collection.count())  # add() keeps foreign rows out, so count() is exact
        r = self.collection.get(where=self.where(), include=[])
        return len(r["ids"])

    def has_more_than(self, n: int) -> bool:
        """Cheaper than ``count()`` in a big shared bucket: fetch one id past ``n``."""
        if self.dedicated:
            return int(self.collection.count()) > n
        r = self.collection.get(where=self.where(), include=[], limit=1, offset=n)
        return bool(r["ids"])

    def query(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[Row]:
        """Approximate nearest rows (HNSW). Unfiltered in a dedicated collection unless ``where``."""
        w = where if self.dedicated else self.where(where)
        r = self.collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)],
            n_results=k,
            where=w,
            include=["documents", "metadatas", "distances"],
        )
        got = list(r["ids"][0]) if r["ids"] else []
        docs = list(r["documents"][0]) if r.get("documents") else [None] * len(got)
        metas = list(r["metadatas"][0]) if r.get("metadatas") else [{}] * len(got)
        dists = list(r["distances"][0]) if r.get("distances") else [None] * len(got)
        rows = [Row(i, d, dict(m or {}), dist) for i, d, m, dist in zip(got, docs, metas, dists, strict=True)]
        return self._owned(rows)

    def exact(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[Row]:
        """Exact nearest rows by scanning this namespace's vectors.

        For small namespaces in a shared bucket: faster there than a filtered HNSW search (which
        walks most of the graph when few rows pass), and it never misses a row. The scan reads the
        vectors alone; the best ``k`` rows' documents and metadata (checked as every read's are) come
        in a second read by id: Chroma turns each row's metadata into a Python dict, and for 200 rows
        with 1,000-character documents that made one read 7.7 ms of CPU against 5.2 ms for both.
        """
        r = self.collection.get(where=self.where(where), include=["embeddings"])
        ids = list(r["ids"])
        if not ids:
            return []
        sims = np.asarray(r["embeddings"], dtype=np.float32) @ np.asarray(vector, dtype=np.float32)
        best = {ids[i]: float(sims[i]) for i in np.argsort(-sims)[:k]}
        rows = self.get(ids=list(best))
        for row in rows:
            row.distance = 1.0 - best[row.id]
        rows.sort(key=lambda r: r.distance if r.distance is not None else 2.0)
        return rows

    # -- writes --------------------------------------------------------------------------------

    def upsert(
        self, ids: list[str], vectors: np.ndarray, documents: list[str], metadatas: list[dict[str, Any]]
    ) -> None:
        for m in metadatas:
            if m.get(NS_KEY) != self.namespace:
                raise IsolationError(
                    f"refusing to write a row of namespace {m.get(NS_KEY)!r} into {self.namespace!r}"
                )
        if not ids:
            return
        # Ids are 64-bit hashes of namespace and text, unique per collection, not per namespace: an
        # id already held by another namespace would be overwritten. This read sees other namespaces'
        # metadata only to refuse, and returns nothing.
        held = self.collection.get(ids=ids, include=["metadatas"])
        clash = [
            i
            for i, m in zip(held["ids"], held["metadatas"] or [], strict=False)
            if (m or {}).get(NS_KEY) != self.namespace
        ]
        if clash:
            raise IsolationError(
                f"memory id {clash[0]} is taken by another namespace in {self.name}; not written"
            )
        self.collection.upsert(
            ids=ids,
            embeddings=np.asarray(vectors, dtype=np.float32),
            documents=documents,
            metadatas=metadatas,
        )

    def write_new(
        self,
        ids: list[str],
        vectors: np.ndarray,
        documents: list[str],
        metadatas: list[dict[str, Any]],
        owners: dict[str, str | None] | None = None,
    ) -> list[int]:
        """Write the rows this namespace does not hold yet; the positions written. Like ``owned_ids``
        then :meth:`upsert`, with one read for both checks (which ids are ours, which another
        namespace's) instead of two: a Chroma read costs about 0.45 ms of CPU however small, and every
        run stores its answer through here. ``owners``: that read's answer (:meth:`owners`), when the
        caller knows nothing was written to or deleted from this namespace since it was taken."""
        for m in metadatas:
            if m.get(NS_KEY) != self.namespace:
                raise IsolationError(
                    f"refusing to write a row of namespace {m.get(NS_KEY)!r} into {self.namespace!r}"
                )
        if not ids:
            return []
        if owners is None:
            owners = self.owners(ids)
        keep = [k for k, rid in enumerate(ids) if owners.get(rid) != self.namespace]
        clash = [ids[k] for k in keep if ids[k] in owners]
        if clash:  # held, not by us: another namespace's id (see upsert)
            raise IsolationError(
                f"memory id {clash[0]} is taken by another namespace in {self.name}; not written"
            )
        if keep:
            self.collection.upsert(
                ids=[ids[k] for k in keep],
                embeddings=np.asarray(vectors, dtype=np.float32)[keep],
                documents=[documents[k] for k in keep],
                metadatas=[metadatas[k] for k in keep],
            )
        return keep

    def delete(self, ids: list[str]) -> list[str]:
        """Delete the given ids that belong to this namespace; return those actually deleted.

        The ids are first resolved through the namespace filter, then deleted by id alone: Chroma
        takes ten times longer for a delete given both ids and a filter (3.3 s for 3000 rows)."""
        owned = self.owned_ids(ids)
        if owned:
            self.collection.delete(ids=owned)
        return owned

    def delete_where(self, where: dict[str, Any] | None = None, batch: int = 5000) -> list[str]:
        """Delete every row of this namespace matching ``where`` (all of them when None)."""
        removed: list[str] = []
        while True:
            ids = [r.id for r in self.get(where=where, documents=False, limit=batch)]
            if not ids:
                return removed
            self.collection.delete(ids=ids)
            removed.extend(ids)

    # -- reads and eviction over whole memories -------------------------------------------------

    def with_parents(self, ids: list[str]) -> list[Row]:
        """The rows of these ids, and every chunk of those that are parents."""
        if not ids:
            return []
        found = {r.id: r for r in self.get(ids=ids)}
        for r in self.get(where={"parent": {"$in": ids}}):
            found.setdefault(r.id, r)
        return list(found.values())

    def stats(self, dim: int) -> MemoryStats:
        size = offset = 0
        parents: set[str] = set()
        kinds: Counter[str] = Counter()
        dates: list[float] = []
        while page := self.get(limit=PAGE, offset=offset):
            offset += len(page)
            for r in page:
                m = r.metadata
                parents.add(str(m.get("parent", r.id)))
                kinds[str(m.get("kind", "note"))] += 1
                dates.append(float(m.get("created", 0.0)))
                size += len((r.document or "").encode()) + sum(len(str(v)) for v in m.values())
        size += len(dates) * (2 * dim * 4 + ROW_OVERHEAD_BYTES)
        return MemoryStats(
            namespace=self.namespace,
            items=len(dates),
            memories=len(parents),
            bytes_estimate=size,
            oldest=min(dates, default=None),
            newest=max(dates, default=None),
            by_kind=dict(kinds),
            layout="dedicated" if self.dedicated else "shared",
            collection=self.name,
        )

    def _over(self, max_items: int) -> list[tuple[float, list[str]]]:
        """The whole memories (their ``created`` and row ids) past ``max_items`` rows, oldest first."""
        groups: dict[str, list[str]] = defaultdict(list)
        created: dict[str, float] = {}
        offset = 0
        while page := self.get(documents=False, limit=PAGE * 5, offset=offset):
            offset += len(page)
            for r in page:
                parent = str(r.metadata.get("parent", r.id))
                groups[parent].append(r.id)
                created[parent] = min(
                    created.get(parent, float("inf")), float(r.metadata.get("created", 0.0))
                )
        remaining = sum(len(v) for v in groups.values())
        over: list[tuple[float, list[str]]] = []
        for parent in sorted(groups, key=lambda p: (created[p], p)):
            if remaining <= max_items:
                break
            over.append((created[parent], groups[parent]))
            remaining -= len(groups[parent])
        return over

    def _past(self, max_items: int, count: int | None) -> bool:
        """More rows than ``max_items``: from ``count`` when the caller knows it (the store's row count,
        which a recall and a write already hold), else one read."""
        return count > max_items if count is not None else self.has_more_than(max_items)

    def kept_where(
        self, policy: RetentionPolicy, now: float, count: int | None = None
    ) -> dict[str, Any] | None:
        """A filter on the rows ``policy`` keeps, for reads that must not see what :meth:`evict` would
        delete without waiting to delete it (a run's recall). Past ``max_items`` (rare: a lowered limit,
        an import between its batch and its eviction) it reads every row's date, and keeps only rows newer
        than the newest memory eviction would take; memories of that same second go with it. ``count``:
        this namespace's rows, if known (see :meth:`_past`)."""
        clauses: list[dict[str, Any]] = []
        if (oldest := policy.oldest_kept(now)) is not None:
            clauses.append({"created": {"$gte": oldest}})
        if (
            policy.max_items is not None
            and self._past(policy.max_items, count)
            and (over := self._over(policy.max_items))
        ):
            clauses.append({"created": {"$gt": over[-1][0]}})
        return None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def evict(self, policy: RetentionPolicy, now: float, count: int | None = None) -> list[str]:
        """Delete what ``policy`` no longer allows, oldest whole memories first; the row ids deleted.
        ``count``: this namespace's rows, if known (see :meth:`_past`); an age eviction makes it stale,
        so it then reads."""
        removed: list[str] = []
        if (oldest := policy.oldest_kept(now)) is not None:
            removed += self.delete_where({"created": {"$lt": oldest}})
            count = None if removed else count
        if policy.max_items is not None and self._past(policy.max_items, count):
            doomed = [row for _, rows in self._over(policy.max_items) for row in rows]
            for i in range(0, len(doomed), PAGE * 5):
                removed += self.delete(doomed[i : i + PAGE * 5])
        if removed:
            log.info("memory.retention.evicted", namespace=self.namespace, rows=len(removed))
        return removed
