"""Pick the embedding from the environment, refusing unknown or incomplete settings up front.

``MEMORY_EMBEDDING``: ``minilm`` (default; English, in-process, offline), ``multilingual`` (USE v3,
in-process, offline) or ``openai`` (any OpenAI-compatible ``/v1/embeddings`` endpoint, which then
needs ``MEMORY_EMBEDDING_URL`` and ``MEMORY_EMBEDDING_MODEL``, and ``MEMORY_EMBEDDING_API_KEY`` when
the server wants one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from agent.embeddings.base import Embedding, EmbeddingUnavailable

CHOICES = ("minilm", "multilingual", "openai")


def embedding_from_config(
    kind: str = "minilm", *, url: str | None = None, model: str | None = None, api_key: str | None = None
) -> Embedding:
    """Build (not load) the named embedding. Call ``load()`` at start-up to fail early."""
    name = (kind or "minilm").strip().lower()
    if name == "minilm":
        from agent.embeddings.minilm import MiniLMEmbedding

        return MiniLMEmbedding()
    if name == "multilingual":
        from agent.embeddings.multilingual import MultilingualEmbedding

        return MultilingualEmbedding()
    if name == "openai":
        from agent.embeddings.openai_compat import OpenAIEmbedding

        if not url:
            raise EmbeddingUnavailable(
                "MEMORY_EMBEDDING=openai needs MEMORY_EMBEDDING_URL (e.g. http://localhost:11434/v1 for Ollama)"
            )
        if not model:
            raise EmbeddingUnavailable(
                "MEMORY_EMBEDDING=openai needs MEMORY_EMBEDDING_MODEL (e.g. nomic-embed-text)"
            )
        return OpenAIEmbedding(url, model, api_key)
    raise EmbeddingUnavailable(f"MEMORY_EMBEDDING={kind!r} is not one of: {', '.join(CHOICES)}")


def embedding_from_env(env: Mapping[str, str] | None = None) -> Embedding:
    """The embedding the environment asks for (``os.environ`` unless ``env`` is given)."""
    e = os.environ if env is None else env
    return embedding_from_config(
        e.get("MEMORY_EMBEDDING", "minilm"),
        url=e.get("MEMORY_EMBEDDING_URL") or None,
        model=e.get("MEMORY_EMBEDDING_MODEL") or None,
        api_key=e.get("MEMORY_EMBEDDING_API_KEY") or None,
    )
