"""Pick the embedding from the environment, refusing unknown or incomplete settings up front.

``MEMORY_EMBEDDING``: ``minilm`` (default; English, in-process, offline), ``multilingual`` (USE v3,
in-process, offline) or ``openai`` (any OpenAI-compatible ``/v1/embeddings`` endpoint, which then
needs ``MEMORY_EMBEDDING_URL`` and ``MEMORY_EMBEDDING_MODEL``, and ``MEMORY_EMBEDDING_API_KEY`` when
the server wants one).
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.config import ConfigError, MemoryEnv, parse_settings
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


def embedding_from_settings(m: MemoryEnv) -> Embedding:
    """The embedding the parsed settings (``MEMORY_EMBEDDING*``) ask for."""
    return embedding_from_config(
        m.memory_embedding,
        url=m.memory_embedding_url,
        model=m.memory_embedding_model,
        api_key=m.memory_embedding_api_key.get_secret_value() if m.memory_embedding_api_key else None,
    )


def embedding_from_env(env: Mapping[str, str] | None = None) -> Embedding:
    """For tests and library users: ``env`` (the process environment when None) parsed as
    :class:`~agent.config.MemoryEnv`; the bot passes its parsed settings to :func:`embedding_from_settings`."""
    try:
        m = parse_settings(MemoryEnv, None if env is None else dict(env))
    except ConfigError as e:
        raise EmbeddingUnavailable(str(e)) from None
    return embedding_from_settings(m)
