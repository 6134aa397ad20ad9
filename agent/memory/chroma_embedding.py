"""Our embeddings as a Chroma embedding function, registered under the name ``agentbot``.

The store always hands Chroma finished vectors (so embedding time is measured and batched in one
place), but each collection still records this function in its configuration: a Chroma client
reading the collection later (a script, the Chroma CLI with agentbot importable) rebuilds the same
embedding from that record instead of Chroma's default one, which downloads a model on first use.

The record never holds a secret: for an OpenAI-compatible endpoint it names the environment
variable the key is read from.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from agent.embeddings.base import Embedding
from agent.embeddings.config import embedding_from_config

NAME = "agentbot"
API_KEY_ENV = "MEMORY_EMBEDDING_API_KEY"


def _kind_of(embedding: Embedding) -> dict[str, Any]:
    from agent.embeddings.minilm import MiniLMEmbedding
    from agent.embeddings.multilingual import MultilingualEmbedding
    from agent.embeddings.openai_compat import OpenAIEmbedding

    if isinstance(embedding, MiniLMEmbedding):
        return {"kind": "minilm"}
    if isinstance(embedding, MultilingualEmbedding):
        return {"kind": "multilingual"}
    if isinstance(embedding, OpenAIEmbedding):
        return {"kind": "openai", "url": embedding.url, "model": embedding.model, "api_key_env": API_KEY_ENV}
    return {"kind": "custom", "class": f"{type(embedding).__module__}.{type(embedding).__qualname__}"}


@register_embedding_function
class AgentbotEmbeddingFunction(EmbeddingFunction[Documents]):
    """Adapter: Chroma's ``EmbeddingFunction`` protocol over an :class:`~agent.embeddings.Embedding`."""

    def __init__(self, embedding: Embedding) -> None:
        self.embedding = embedding

    def __call__(self, input: Documents) -> Embeddings:
        return list(np.asarray(self.embedding.embed_documents(list(input)), dtype=np.float32))

    def embed_query(self, input: Documents) -> Embeddings:
        return [np.asarray(self.embedding.embed_query(t), dtype=np.float32) for t in input]

    @staticmethod
    def name() -> str:
        return NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine"]

    def get_config(self) -> dict[str, Any]:
        return _kind_of(self.embedding)

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> AgentbotEmbeddingFunction:
        kind = config.get("kind", "minilm")
        if kind == "custom":
            raise ValueError(
                f"collection was filled by a custom embedding ({config.get('class')}); pass it explicitly"
            )
        api_key = os.environ.get(str(config.get("api_key_env") or API_KEY_ENV)) or None
        return AgentbotEmbeddingFunction(
            embedding_from_config(kind, url=config.get("url"), model=config.get("model"), api_key=api_key)
        )

    def is_legacy(self) -> bool:
        return False
