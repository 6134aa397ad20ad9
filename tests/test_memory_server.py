"""The CHROMA_HOST path: the same store against a real Chroma server (``chroma run``) on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.embeddings.minilm import MiniLMEmbedding
from agent.memory import ChromaMemory, NewMemory

A, B = "123456789012345678", "876543210987654321"


def _chroma_cli() -> str:
    beside = Path(sys.executable).with_name("chroma")
    found = str(beside) if beside.exists() else shutil.which("chroma")
    assert found, "the chroma CLI comes with chromadb; it should be installed beside this Python"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    proc = subprocess.Popen(
        [_chroma_cli(), "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "chroma server exited at start-up"
            assert time.monotonic() < deadline, "chroma server did not answer within 30 s"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_chroma_server_holds_memories_with_the_same_isolation(chroma_server: int) -> None:
    embedding = MiniLMEmbedding()
    env = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(chroma_server)}
    memory = ChromaMemory.from_env(None, env, embedding=embedding, buckets=2, dedicated_threshold=12)
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
    again = ChromaMemory.from_env(None, env, embedding=embedding, buckets=2, dedicated_threshold=12)
    await again.open()
    assert (await again.stats(A)).items == 13 and (await again.stats(B)).items == 1
    assert (await again.search(A, "what is the code for the vault", k=1))[0].id == secret.ids[0]
    await again.close()
