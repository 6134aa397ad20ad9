"""Reads over one namespace's scope: nearest rows for a search, statistics, retention eviction.

All functions are synchronous; the store calls them through ``asyncio.to_thread`` (eviction with the
namespace's write lock held).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import structlog

from agent.memory.chroma_collections import PAGE, Collections
from agent.memory.scope import NamespaceScope, Row
from agent.memory.types import KINDS, MemoryStats, RetentionPolicy

log = structlog.get_logger(__name__)

ROW_OVERHEAD_BYTES = 100
"""Per-row disk cost besides text, metadata and the vector, which Chroma keeps twice (SQLite and the
HNSW index); :func:`stats` estimates with it. bench/memory_recall.py compares the estimate with the
bytes really on disk."""


def kinds_where(kinds: Iterable[str] | None) -> dict[str, Any] | None:
    if kinds is None:
        return None
    wanted = list(dict.fromkeys(kinds))
    if not wanted or any(kd not in KINDS for kd in wanted):
        raise ValueError(f"kinds must be a non-empty subset of {', '.join(KINDS)}")
    return {"kind": {"$in": wanted}}


def nearest(
    cols: Collections, ns: str, vector: np.ndarray, k: int, where: dict[str, Any] | None, exact_max: int
) -> list[Row]:
    """The ``k`` rows closest to ``vector``. A small namespace in a shared bucket is scanned exactly
    (see :meth:`NamespaceScope.exact`)."""
    scope = cols.scope(ns)
    if scope.dedicated:
        return scope.query(vector, k, where)
    n = cols.count(scope)
    if n == 0:
        return []
    if n <= exact_max:
        return scope.exact(vector, k, where)
    return scope.query(vector, min(k, n), where)


def with_parents(scope: NamespaceScope, ids: list[str]) -> list[Row]:
    """The rows of these ids, and every chunk of those that are parents."""
    if not ids:
        return []
    found = {r.id: r for r in scope.get(ids=ids)}
    for r in scope.get(where={"parent": {"$in": ids}}):
        found.setdefault(r.id, r)
    return list(found.values())


def stats(scope: NamespaceScope, dim: int) -> MemoryStats:
    size = offset = 0
    parents: set[str] = set()
    kinds: Counter[str] = Counter()
    dates: list[float] = []
    while page := scope.get(limit=PAGE, offset=offset):
        offset += len(page)
        for r in page:
            m = r.metadata
            parents.add(str(m.get("parent", r.id)))
            kinds[str(m.get("kind", "note"))] += 1
            dates.append(float(m.get("created", 0.0)))
            size += len((r.document or "").encode()) + sum(len(str(v)) for v in m.values())
    size += len(dates) * (2 * dim * 4 + ROW_OVERHEAD_BYTES)
    return MemoryStats(
        namespace=scope.namespace,
        items=len(dates),
        memories=len(parents),
        bytes_estimate=size,
        oldest=min(dates, default=None),
        newest=max(dates, default=None),
        by_kind=dict(kinds),
        layout="dedicated" if scope.dedicated else "shared",
        collection=scope.name,
    )


def evict(scope: NamespaceScope, policy: RetentionPolicy, now: float) -> list[str]:
    """Delete what ``policy`` no longer allows, oldest whole memories first; the row ids deleted."""
    removed: list[str] = []
    if policy.max_age_days is not None:
        removed += scope.delete_where({"created": {"$lt": now - policy.max_age_days * 86400.0}})
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
    if removed:
        log.info("memory.retention.evicted", namespace=scope.namespace, rows=len(removed))
    return removed
