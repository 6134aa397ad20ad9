"""The bot's CPU per agent step (``bench/bot_load.py``): work it did again and again for nothing.

Each test pins one cut by what the bot no longer does (no timed assertions): the figures are in the
bench and in the commit messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.embeddings.openai_compat import OpenAIEmbedding
from agent.memory import ChromaMemory, NewMemory
from tests.test_memory_embeddings import FakeEmbeddingServer

GUILD = "4242"


async def test_memories_stored_through_a_remote_embedding_build_no_http_client_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MEMORY_EMBEDDING=openai: Chroma rebuilds the collection's embedding function from its record at
    every write, and each rebuild made an httpx client (the CA bundle loaded: 24 ms of CPU a memory)."""
    async with FakeEmbeddingServer() as server:
        emb = OpenAIEmbedding(server.url, "bow-64", api_key=server.key)
        memory = ChromaMemory(tmp_path / "chroma", embedding=emb, buckets=1)
        await memory.open()
        made: list[Any] = []
        real_init = httpx.Client.__init__

        def counted(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs.get("timeout"))
            real_init(self, *args, **kwargs)

        monkeypatch.setattr(httpx.Client, "__init__", counted)
        for place, pier in (("Arran", "north"), ("Skye", "east"), ("Mull", "south")):
            stored = await memory.store_many(
                GUILD, [NewMemory(f"The {place} ferry leaves from the {pier} pier.")]
            )
            assert stored.ids, stored
        hits = await memory.search(GUILD, "where does the Skye ferry leave from", k=1)
        assert hits and "east pier" in hits[0].text
        assert made == [], f"{len(made)} HTTP clients made for 3 memories stored and one search"
        assert len(server.requests) >= 4  # the vectors still came from the endpoint
        await memory.close()
        emb.close()
