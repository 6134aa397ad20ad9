"""What every embedding offers the memory store, and the errors it may raise.

An embedding is identified by ``id``: the memory store writes it into every collection it fills and
refuses to mix vectors of another id, so the id must change whenever the vectors would (another
model, another model file, another dimension).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from agent.logs import redact


class EmbeddingError(Exception):
    """An embedding failed for a reason worth telling the operator (message is safe to log)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact(message))  # the endpoint URL's userinfo and keys never shown (14.10)


class EmbeddingUnavailable(EmbeddingError):
    """The configured embedding cannot load (missing package, wrong hash, unreachable endpoint).

    Raised by :meth:`Embedding.load` at start-up, so a bad configuration stops the bot with a clear
    message instead of silently falling back to another model whose vectors would not match.
    """


@runtime_checkable
class Embedding(Protocol):
    """A sentence embedding: texts in, L2-normalised float32 rows out.

    ``embed_documents`` and ``embed_query`` are apart because some models (e5) want a prefix for
    queries; for the others they are the same. Both are synchronous and may take milliseconds to
    seconds: callers on an event loop go through ``asyncio.to_thread``.
    """

    @property
    def id(self) -> str:
        """Stable identity of the vector space, e.g. ``minilm-l6-v2-int8@8199be6f6993``."""
        ...

    @property
    def dim(self) -> int:
        """Length of each vector; known after :meth:`load`."""
        ...

    def load(self) -> None:
        """Load (or reach) the model now; raise :class:`EmbeddingUnavailable` with the reason."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


class PlainQuery:
    """For embeddings that embed a query like a document (all here: no query prefix)."""

    def embed_query(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"query is {type(text).__name__}, not str")
        return self.embed_documents([text])[0]  # type: ignore[attr-defined]


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Unit rows so cosine similarity is a dot product (a zero row stays zero instead of NaN)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def check_texts(texts: Sequence[str]) -> list[str]:
    """Reject what would otherwise fail deep inside a tokenizer with an unreadable message."""
    if isinstance(texts, str):
        raise TypeError("embed_documents takes a list of texts, not one string; use embed_query")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text #{i} is {type(t).__name__}, not str")
    return out
