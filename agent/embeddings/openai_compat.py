"""Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, Ollama, vLLM, llama.cpp).

For deployments that already run an embedding server or want a bigger or multilingual model than
the built-in ones. Synchronous httpx on purpose: the memory store calls embeddings from worker
threads (``asyncio.to_thread``), never on the event loop.

The API key is sent as a bearer token and never appears in errors, logs or :meth:`get_config`.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from agent.embeddings.base import EmbeddingError, EmbeddingUnavailable, PlainQuery, check_texts, l2_normalise
from agent.inflate import ACCEPT_ENCODING, READABLE, Inflater, encoding_layers
from agent.retry import RetryPolicy, parse_retry_after

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_DIMENSIONS = 16_384
"""More than any embedding model offers (OpenAI's largest: 3,072; 4,096 for 8B models)."""
BYTES_PER_NUMBER = 32
"""A float as JSON writes it, with its comma and spaces: ``-0.0123456789012345678, ``."""
ERROR_BYTES = 64 * 1024


def answer_cap(texts: int) -> int:
    """Most (decoded) bytes an answer for ``texts`` texts is read to: httpx inflated gzip with no
    limit, so 200 KB of gzip from the endpoint (or a proxy before it) became 200 MB in the worker thread."""
    return texts * MAX_DIMENSIONS * BYTES_PER_NUMBER + 2**20


class _Retryable(EmbeddingError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def embeddings_url(base_url: str) -> str:
    """Accept ``http://host:11434/v1``, ``.../v1/`` or the full ``.../v1/embeddings``."""
    url = (base_url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EmbeddingUnavailable(
            f"MEMORY_EMBEDDING_URL must be an http(s) URL such as http://localhost:11434/v1, got {base_url!r}"
        )
    return url if url.endswith("/embeddings") else url + "/embeddings"


class OpenAIEmbedding(PlainQuery):
    """Vectors from a remote model, L2-normalised here (not every server normalises)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        batch_size: int = 64,
        max_attempts: int = 3,
        retry_wait: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not model or not model.strip():
            raise EmbeddingUnavailable(
                "MEMORY_EMBEDDING_MODEL must name the embedding model (e.g. nomic-embed-text)"
            )
        self.url = embeddings_url(base_url)
        self.model = model.strip()
        self._api_key = api_key or None
        self.batch_size = max(1, batch_size)
        self.max_attempts = max(1, max_attempts)
        self.retry_wait = max(0.0, retry_wait)
        self._timeout, self._transport = timeout, transport
        self._http: httpx.Client | None = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    @property
    def _client(self) -> httpx.Client:
        """Made at the first request, not here: Chroma rebuilds the collection's embedding function from
        its record (``chroma_embedding.build_from_config``) at every write, only to read its settings, and
        an httpx client loads the CA bundle: 24 ms of CPU, each memory the bot stored (4 ms an agent step
        at 100 sessions with MEMORY_EMBEDDING=openai, ``bench/bot_load.py --scaled``)."""
        if self._http is None:
            with self._lock:
                if self._http is None:
                    headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
                    self._http = httpx.Client(
                        timeout=self._timeout, headers=headers, transport=self._transport
                    )
        return self._http

    @property
    def id(self) -> str:
        return f"openai-compatible:{self.model}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise EmbeddingError("the endpoint's dimension is known only after load()")
        return self._dim

    def load(self) -> None:
        """Embed one probe text: proves the URL, key and model work, and learns the dimension."""
        if self._dim is not None:
            return
        try:
            vec = self._request(["agentbot embedding probe"])
        except EmbeddingError as e:
            raise EmbeddingUnavailable(
                f"embedding endpoint {self.url} (model {self.model}) is not usable: {e}"
            ) from e
        with self._lock:
            self._dim = int(vec.shape[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        parts = [self._request(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        out = np.concatenate(parts, axis=0)
        if self._dim is not None and out.shape[1] != self._dim:
            raise EmbeddingError(f"endpoint returned {out.shape[1]} dimensions, expected {self._dim}")
        return out

    def _request(self, batch: list[str]) -> np.ndarray:
        # Empty strings are refused by some servers; a single space embeds to "nothing" everywhere.
        payload = {"model": self.model, "input": [t if t.strip() else " " for t in batch]}
        policy = RetryPolicy(self.max_attempts, self.retry_wait, 8.0)
        for attempt in policy.sync(lambda e: isinstance(e, _Retryable)):
            with attempt:
                return self._post(payload, len(batch))
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, payload: dict[str, Any], n: int) -> np.ndarray:
        try:
            with self._client.stream(
                "POST", self.url, json=payload, headers={"Accept-Encoding": ACCEPT_ENCODING}
            ) as resp:
                body = self._read(resp, answer_cap(n) if resp.status_code == 200 else ERROR_BYTES, n)
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out after {self._timeout} s") from e
        except httpx.TransportError as e:
            raise _Retryable(f"cannot reach {self.url}: {type(e).__name__}: {self._scrub(str(e))}") from e
        if resp.status_code != 200:
            detail = self._scrub(body[:300].decode("utf-8", "replace").strip())
            msg = f"HTTP {resp.status_code} from {self.url}" + (f": {detail}" if detail else "")
            if resp.status_code in (401, 403):
                msg += " (check MEMORY_EMBEDDING_API_KEY)"
            elif resp.status_code == 404:
                msg += " (check MEMORY_EMBEDDING_URL and MEMORY_EMBEDDING_MODEL)"
            if resp.status_code in _RETRY_STATUS:
                raise _Retryable(msg, parse_retry_after(resp.headers))
            raise EmbeddingError(msg)
        try:
            data = json.loads(body)["data"]
            rows = sorted(data, key=lambda d: d.get("index", 0))
            vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise EmbeddingError(f"{self.url} did not answer in the OpenAI embeddings format: {e}") from e
        if vectors.ndim != 2 or vectors.shape[0] != n or vectors.shape[1] == 0:
            raise EmbeddingError(f"{self.url} returned {vectors.shape} vectors for {n} texts")
        if not np.isfinite(vectors).all():  # json reads NaN: a NaN query matched nothing, silently
            raise EmbeddingError(f"{self.url} returned a vector that is not a number (NaN or infinity)")
        return l2_normalise(vectors)

    def _read(self, resp: httpx.Response, cap: int, n: int) -> bytes:
        """The body inflated by hand (:mod:`agent.inflate`) to at most ``cap`` bytes: an error's is cut
        there, an answer's is refused past it."""
        layers = encoding_layers(resp.headers)
        if len(layers) > 1 or (layers and layers[0] not in READABLE):
            raise EmbeddingError(f"{self.url} sent a body encoded {', '.join(layers)}, which is not read")
        inflater = Inflater(layers[0]) if layers else None
        out = bytearray()
        for chunk in resp.iter_raw():
            room = cap + 1 - len(out)
            try:
                out += inflater.feed(chunk, room) if inflater else chunk[:room]
            except zlib.error as e:
                raise EmbeddingError(f"{self.url} sent a corrupt {layers[0]} body ({e})") from None
            if len(out) > cap:
                if resp.status_code != 200:
                    return bytes(out[:cap])
                raise EmbeddingError(
                    f"{self.url} answered more than {cap / 2**20:.1f} MiB for {n} text{'s' if n > 1 else ''} "
                    f"(at most {MAX_DIMENSIONS:,} numbers a text are read); the rest was not read"
                )
        return bytes(out)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text
