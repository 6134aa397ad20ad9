"""The CHROMA_HOST path: the same store against a real Chroma server (``chroma run``) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.config import MemoryEnv, parse_settings
from agent.embeddings.minilm import MiniLMEmbedding
from agent.memory import ChromaMemory, NewMemory
from tests.fakes.chroma_server import ChromaServer

A, B = "123456789012345678", "876543210987654321"


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server")).start()
    try:
        yield server.port
    finally:
        server.stop()


async def test_a_chroma_server_holds_memories_with_the_same_isolation(chroma_server: int) -> None:
    embedding = MiniLMEmbedding()
    env = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(chroma_server)}
    memory = ChromaMemory.from_settings(
        None, parse_settings(MemoryEnv, env), embedding=embedding, buckets=2, dedicated_threshold=12
    )
    await memory.open()
    secret = await memory.store(A, "Guild A's vault code is 4417.", kind="fact")
    await memory.store(B, "Guild B raids on Wednesdays.")
    await memory.store_many(
        A, [NewMemory(f"Guild A log entry {i}: the mill was repaired.") for i in range(12)]
    )
    assert (await memory.stats(A)).layout == "dedicated"
    assert (await memory.search(A, "what is the code for the vault", k=1))[0].id == secret.ids[0]
    assert all("4417" not in h.text for h in await memory.search(B, "vault code", k=10))
    assert await memory.forget(B, secret.ids) == []
    await memory.close()

    # A second client (another bot process, say) sees the same memories and layout.
    again = ChromaMemory.from_settings(
        None, parse_settings(MemoryEnv, env), embedding=embedding, buckets=2, dedicated_threshold=12
    )
    await again.open()
    assert (await again.stats(A)).items == 13 and (await again.stats(B)).items == 1
    assert (await again.search(A, "what is the code for the vault", k=1))[0].id == secret.ids[0]
    await again.close()
