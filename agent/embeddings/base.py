"""What every embedding offers the memory store, and the errors it may raise.

An embedding is identified by ``id``: the memory store writes it into every collection it fills and
refuses to mix vectors of another id, so the id must change whenever the vectors would (another
model, another model file, another dimension).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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


class Coalescer:
    """Concurrent embed calls (each in its own worker thread) run as one batch.

    Measured on the MiniLM int8 model (one intra-op thread): a 13-token query alone costs 5.3 ms of
    CPU, in a batch of 8 such queries 3.4 ms each; sessions started together recall and store at
    the same moments (at 300 sessions half the texts went in runs of 4 to 6). No call waits for a
    batch to fill: one run at a time, and whoever gets the model next runs every text queued
    meanwhile; a call whose texts already ran returns their rows.
    """

    def __init__(self, run: Callable[[list[str]], np.ndarray]) -> None:
        self._run = run
        self._running, self._queuing = threading.Lock(), threading.Lock()
        self._queue: list[_Job] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        job = _Job(texts)
        with self._queuing:
            self._queue.append(job)
        with self._running:
            if not job.done:
                with self._queuing:
                    jobs, self._queue = self._queue, []
                try:
                    rows, at = self._run([t for j in jobs for t in j.texts]), 0
                    for j in jobs:
                        j.rows, at = rows[at : at + len(j.texts)], at + len(j.texts)
                except BaseException as e:
                    for j in jobs:
                        j.error = e
                for j in jobs:
                    j.done = True
        if job.error is not None:
            raise job.error
        return job.rows


class _Job:
    __slots__ = ("done", "error", "rows", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.done = texts, False
        self.rows: Any = None
        self.error: BaseException | None = None
