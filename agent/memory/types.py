"""Plain data the memory store takes and gives back, and its errors."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Literal

Kind = Literal["research", "fact", "note"]
KINDS: tuple[str, ...] = ("research", "fact", "note")
"""research: a finished research answer; fact: a fact the agent kept; note: something a user asked to keep."""


class MemoryStoreError(Exception):
    """A memory operation failed; the message is safe to show an operator."""


class IsolationError(MemoryStoreError):
    """Code tried to write a row of one namespace through another namespace's scope."""


class NamespaceError(MemoryStoreError, ValueError):
    """The namespace (guild id) is missing or malformed."""


class EmbeddingMismatch(MemoryStoreError):
    """A collection was filled by another embedding than the one configured: vectors would not mix."""


@dataclass(slots=True, frozen=True)
class NewMemory:
    """One thing to remember. Long texts are cut into chunks that share a parent id."""

    text: str
    kind: Kind = "note"
    author: str = ""
    thread: str = ""
    task: str = ""
    sources: tuple[str, ...] = ()
    created: float | None = None
    """Unix time; the store's clock when None."""
    session: str = ""
    """The agentbot session that stored it (provenance)."""
    origin: str = ""
    """Provenance (issue 14.9): auto, auto-web, agent, agent-web, published, import or private; '' when
    unknown."""


WEB_ORIGINS = frozenset({"agent-web", "auto-web"})
"""Written by a run after it read web pages or tool output: what a page said may be in it."""


def unverified(origin: str, sources: tuple[str, ...] | list[str] = ()) -> bool:
    """Whether a memory may carry what a web page said, so it must never come back looking like a fact.
    An ``auto`` answer with sources was stored before answers built from pages became ``auto-web``."""
    return origin in WEB_ORIGINS or (origin == "auto" and bool(sources))


@dataclass(slots=True, frozen=True)
class MemoryRecord:
    """One stored row: a whole memory, or one chunk of a long one (``chunks`` > 1)."""

    id: str
    text: str
    kind: str
    created: float
    author: str = ""
    thread: str = ""
    task: str = ""
    sources: tuple[str, ...] = ()
    parent: str = ""
    """Id of the whole memory; equals ``id`` for a memory stored in one piece."""
    chunk: int = 0
    chunks: int = 1
    session: str = ""
    origin: str = ""
    glued: bool = False
    """This chunk continues the previous one with no space between (a text without spaces, cut hard)."""

    @property
    def unverified(self) -> bool:
        return unverified(self.origin, self.sources)

    @property
    def date(self) -> str:
        """UTC day the memory was stored, as people cite it (``2026-11-24``)."""
        return dt.datetime.fromtimestamp(self.created, tz=dt.UTC).strftime("%Y-%m-%d")

    def to_row(self) -> dict[str, object]:
        """A JSON-ready dict (one JSONL line of an export)."""
        created = dt.datetime.fromtimestamp(self.created, tz=dt.UTC).isoformat()
        return asdict(self) | {"sources": list(self.sources), "created": created, "created_ts": self.created}


@dataclass(slots=True, frozen=True)
class MemoryHit(MemoryRecord):
    """A record found by a search, with its cosine similarity to the query (1 = same meaning)."""

    relevance: float = 0.0


@dataclass(slots=True, frozen=True)
class StoreResult:
    ids: list[str]
    """Parent id of each memory given, in order (already-known memories included)."""
    added: int
    """Rows (chunks) written."""
    duplicates: int
    """Rows skipped because the same text was already stored in this namespace."""


@dataclass(slots=True, frozen=True)
class MemoryStats:
    namespace: str
    items: int
    """Rows, counting each chunk of a long memory."""
    memories: int
    """Distinct memories (parents)."""
    bytes_estimate: int
    oldest: float | None
    newest: float | None
    by_kind: dict[str, int] = field(default_factory=dict)
    layout: Literal["shared", "dedicated"] = "shared"
    collection: str = ""


@dataclass(slots=True, frozen=True)
class RetentionPolicy:
    """Per-namespace limits; ``None`` means no limit. Oldest memories go first."""

    max_items: int | None = None
    max_age_days: float | None = None

    def __post_init__(self) -> None:
        if self.max_items is not None and self.max_items < 0:
            raise ValueError("max_items must be 0 or more (None for no limit)")
        if self.max_age_days is not None and self.max_age_days <= 0:
            raise ValueError("max_age_days must be more than 0 (None for no limit)")

    def oldest_kept(self, now: float) -> float | None:
        """The earliest ``created`` time the age limit keeps at ``now`` (None: no age limit)."""
        return None if self.max_age_days is None else now - self.max_age_days * 86400.0
