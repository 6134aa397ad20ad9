"""Embeddings: the offline MiniLM, the multilingual USE, an OpenAI-compatible endpoint on 127.0.0.1,
and the store's refusal to mix vectors of two models."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from agent.config import MemoryEnv, parse_settings
from agent.embeddings import EmbeddingUnavailable, embedding_from_env
from agent.embeddings.base import Coalescer
from agent.embeddings.minilm import MiniLMEmbedding, _default_model_path
from agent.embeddings.multilingual import MultilingualEmbedding
from agent.embeddings.openai_compat import OpenAIEmbedding
from agent.memory import ChromaMemory, EmbeddingMismatch, NewMemory

GUILD = "777"


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedding:
    e = MiniLMEmbedding()
    e.load()
    return e


@pytest.fixture(scope="module")
def multilingual() -> MultilingualEmbedding:
    e = MultilingualEmbedding()
    e.load()
    return e


# -- MiniLM ----------------------------------------------------------------------------------------


def test_minilm_vectors_do_not_depend_on_their_batch(minilm: MiniLMEmbedding) -> None:
    short = "How do I reset my password?"
    long = " ".join(["A much longer text that forces padding of the whole batch."] * 12)
    alone = minilm.embed_query(short)
    batched = minilm.embed_documents([long, short, "x"])
    assert alone.shape == (384,) and abs(float(np.linalg.norm(alone)) - 1.0) < 1e-5
    np.testing.assert_allclose(batched[1], alone, atol=1e-4)
    assert minilm.embed_documents([]).shape == (0, 384)
    related = minilm.embed_query("Steps to recover a forgotten login password")
    unrelated = minilm.embed_query("The weather in Paris is sunny today")
    assert float(alone @ related) > 0.5 > float(alone @ unrelated)


def test_concurrent_calls_share_one_model_run_and_each_gets_its_own_rows(minilm: MiniLMEmbedding) -> None:
    texts = [f"question number {i} about {'long ' * (i % 7)}passwords" for i in range(24)]
    alone = [minilm.embed_query(t) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(minilm.embed_query, texts))
    np.testing.assert_allclose(np.array(together), np.array(alone), atol=1e-4)

    # While one batch runs, calls queue; the next run takes all of them at once. An error reaches
    # every call of its batch (none hangs), and later calls still run.
    release, runs = threading.Event(), []

    def run(batch: list[str]) -> np.ndarray:
        runs.append(batch)
        if batch == ["first"]:
            release.wait(5)
        if "bad" in batch:
            raise ValueError("bad text")
        return np.array([[float(len(t))] for t in batch])

    coalesce = Coalescer(run)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(coalesce, ["first"])
        while not runs:
            time.sleep(0.01)
        queued = [pool.submit(coalesce, t) for t in (["ab"], ["bad", "c"])]
        time.sleep(0.2)
        release.set()
        assert first.result(5).tolist() == [[5.0]]
        for f in queued:
            with pytest.raises(ValueError, match="bad text"):
                f.result(5)
        assert runs[0] == ["first"] and sorted(runs[1]) == ["ab", "bad", "c"] and len(runs) == 2
        assert coalesce(["xyz"]).tolist() == [[3.0]]


def test_a_query_embedded_again_is_not_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The router and memory recall both embed a turn's prompt: the second one reuses the first."""
    router, memory = MiniLMEmbedding(), MiniLMEmbedding()
    ask = f"What changed in the release notes? {time.time()}"
    first = router.embed_query(ask)
    runs: list[list[str]] = []
    real = MiniLMEmbedding._embed
    monkeypatch.setattr(
        MiniLMEmbedding, "_embed", lambda self, items: runs.append(items) or real(self, items)
    )
    memory._coalesced = Coalescer(memory._embed)
    again = memory.embed_query(ask)
    np.testing.assert_array_equal(again, first)
    again[:] = 0  # a caller's change stays in its copy
    assert runs == [] and float(np.linalg.norm(memory.embed_query(ask))) > 0.99
    memory.embed_query(ask + " (edited)")
    assert runs == [[ask + " (edited)"]]
    with pytest.raises(TypeError, match="not str"):
        memory.embed_query(["a list"])  # type: ignore[arg-type]


def test_minilm_cuts_texts_at_256_tokens(minilm: MiniLMEmbedding) -> None:
    base = " ".join(f"word{i % 50}" for i in range(400))
    np.testing.assert_allclose(
        minilm.embed_query(base), minilm.embed_query(base + " completely different ending"), atol=1e-5
    )
    with pytest.raises(TypeError, match="not one string"):
        minilm.embed_documents("a string, not a list")


def test_a_model_file_with_another_hash_is_refused(tmp_path: Path) -> None:
    tampered = tmp_path / "model.onnx"
    shutil.copyfile(_default_model_path(), tampered)
    with tampered.open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(EmbeddingUnavailable, match="sha256"):
        MiniLMEmbedding(tampered).load()
    # The store says so at start-up instead of falling back to another model.
    with pytest.raises(EmbeddingUnavailable, match="refusing to run a different model"):
        asyncio.run(ChromaMemory(tmp_path / "chroma", embedding=MiniLMEmbedding(tampered)).open())
    with pytest.raises(EmbeddingUnavailable, match="not found"):
        MiniLMEmbedding(tmp_path / "missing.onnx").load()


# -- configuration ---------------------------------------------------------------------------------


def test_configuration_errors_say_what_to_set() -> None:
    assert isinstance(embedding_from_env({}), MiniLMEmbedding)
    assert isinstance(embedding_from_env({"MEMORY_EMBEDDING": "multilingual"}), MultilingualEmbedding)
    with pytest.raises(EmbeddingUnavailable, match="'minilm', 'multilingual' or 'openai'"):
        embedding_from_env({"MEMORY_EMBEDDING": "bert"})
    with pytest.raises(EmbeddingUnavailable, match="MEMORY_EMBEDDING_URL"):
        embedding_from_env({"MEMORY_EMBEDDING": "openai", "MEMORY_EMBEDDING_MODEL": "m"})
    with pytest.raises(EmbeddingUnavailable, match="MEMORY_EMBEDDING_MODEL"):
        embedding_from_env({"MEMORY_EMBEDDING": "openai", "MEMORY_EMBEDDING_URL": "http://127.0.0.1:1/v1"})
    with pytest.raises(EmbeddingUnavailable, match="http"):
        embedding_from_env(
            {"MEMORY_EMBEDDING": "openai", "MEMORY_EMBEDDING_URL": "ftp://x", "MEMORY_EMBEDDING_MODEL": "m"}
        )
    with pytest.raises(ValueError, match="CHROMA_PORT"):
        parse_settings(MemoryEnv, {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": "http"})


# -- an OpenAI-compatible server on 127.0.0.1 -------------------------------------------------------


def bag_of_words(text: str, dim: int = 64) -> list[float]:
    """A crude but real embedding: hashed word counts, deliberately not normalised."""
    v = np.zeros(dim)
    for w in re.findall(r"[a-z]+", text.lower()):
        v[int(hashlib.sha256(w.encode()).hexdigest(), 16) % dim] += 3.0
    return v.tolist()


class FakeEmbeddingServer:
    def __init__(self, key: str = "sk-test-123") -> None:
        self.key = key
        self.fail_next = 0
        self.retry_after: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(
            {"auth": request.headers.get("Authorization"), "input": body["input"], "at": time.monotonic()}
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response({"error": "overloaded"}, status=503, headers=headers)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            # Some servers echo what they got; the client must not pass that on.
            return web.json_response(
                {"error": f"invalid key {request.headers.get('Authorization')}"}, status=401
            )
        data = [{"index": i, "embedding": bag_of_words(t)} for i, t in enumerate(body["input"])]
        return web.json_response({"object": "list", "data": data[::-1], "model": body["model"]})

    async def __aenter__(self) -> FakeEmbeddingServer:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[FakeEmbeddingServer]:
    async with FakeEmbeddingServer() as s:
        yield s


async def test_an_openai_compatible_endpoint_backs_the_store(
    server: FakeEmbeddingServer, tmp_path: Path
) -> None:
    emb = OpenAIEmbedding(server.url + "/", "bow-64", api_key=server.key, batch_size=2)
    memory = ChromaMemory(tmp_path / "chroma", embedding=emb)
    await memory.open()
    assert (emb.id, emb.dim) == ("openai-compatible:bow-64", 64)
    texts = [
        "cats sleep on warm sofas",
        "rockets need fuel to reach orbit",
        "bread needs yeast and flour",
        "rivers flow into the sea",
        "chess openings start with pawns",
    ]
    await memory.store_many(GUILD, [NewMemory(t) for t in texts])
    hits = await memory.search(GUILD, "how much fuel does a rocket need", k=1)
    assert hits[0].text == texts[1]
    vectors = await asyncio.to_thread(emb.embed_documents, texts)
    # Normalised here, and in the order asked although the server answers in reverse order.
    expected = np.asarray([bag_of_words(t) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert max(len(r["input"]) for r in server.requests) <= 2
    assert {r["auth"] for r in server.requests} == {f"Bearer {server.key}"}
    await memory.close()
    emb.close()


async def test_endpoint_failures_are_retried_or_reported_without_the_key(server: FakeEmbeddingServer) -> None:
    server.fail_next = 2
    emb = OpenAIEmbedding(server.url, "bow-64", api_key=server.key, retry_wait=0.01)
    await asyncio.to_thread(emb.load)  # two 503s, then a success
    assert len(server.requests) == 3

    wrong = OpenAIEmbedding(server.url, "bow-64", api_key="sk-wrong-secret")
    with pytest.raises(EmbeddingUnavailable, match="401") as err:
        await asyncio.to_thread(wrong.load)
    assert "MEMORY_EMBEDDING_API_KEY" in str(err.value) and "sk-wrong-secret" not in str(err.value)

    gone = OpenAIEmbedding("http://127.0.0.1:9/v1", "bow-64", max_attempts=1)
    with pytest.raises(EmbeddingUnavailable, match="cannot reach"):
        await asyncio.to_thread(gone.load)
    for e in (emb, wrong, gone):
        e.close()


async def test_an_endpoint_asking_to_retry_later_is_not_asked_sooner(server: FakeEmbeddingServer) -> None:
    server.fail_next, server.retry_after = 1, "0.3"
    emb = OpenAIEmbedding(server.url, "bow-64", api_key=server.key, retry_wait=0.01)
    await asyncio.to_thread(emb.load)
    first, second = server.requests
    assert second["at"] - first["at"] >= 0.3
    emb.close()


# -- one vector space per collection ---------------------------------------------------------------


async def test_a_store_filled_by_one_model_refuses_another(
    tmp_path: Path, minilm: MiniLMEmbedding, multilingual: MultilingualEmbedding, server: FakeEmbeddingServer
) -> None:
    path = tmp_path / "chroma"
    memory = ChromaMemory(path, embedding=minilm)
    await memory.open()
    await memory.store(GUILD, "Stored with MiniLM.")
    await memory.close()

    other = ChromaMemory(path, embedding=multilingual)
    with pytest.raises(EmbeddingMismatch) as err:
        await other.open()
    message = str(err.value)
    assert minilm.id in message and "use-multilingual-v3@" in message and "MEMORY_EMBEDDING" in message

    remote = OpenAIEmbedding(server.url, "bow-64", api_key=server.key)
    with pytest.raises(EmbeddingMismatch, match="openai-compatible:bow-64"):
        await ChromaMemory(path, embedding=remote).open()
    remote.close()

    same = ChromaMemory(path, embedding=minilm)
    await same.open()
    assert [r["text"] async for r in same.export(GUILD)] == ["Stored with MiniLM."]
    await same.close()


async def test_chroma_rebuilds_our_embedding_from_the_collection_record(
    tmp_path: Path, minilm: MiniLMEmbedding
) -> None:
    path = tmp_path / "chroma"
    memory = ChromaMemory(path, embedding=minilm, buckets=1)
    await memory.open()
    stored = await memory.store_many(
        GUILD,
        [
            NewMemory("Our Valheim world backup runs every night at 3 am."),
            NewMemory("The book club meets on Thursdays."),
        ],
    )
    name = (await memory.stats(GUILD)).collection
    await memory.close()

    # A plain Chroma client that is given no embedding function at all. (chromadb imported here: ~0.6 s
    # of CPU that each xdist worker paid while collecting this file, used by this test only.)
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    col = client.get_collection(name)
    assert col.configuration_json["embedding_function"]["name"] == "agentbot"
    found = col.query(query_texts=["when is the viking game saved"], n_results=1, where={"ns": GUILD})
    assert found["ids"][0] == [stored.ids[0]]
    client.close()


# -- multilingual ----------------------------------------------------------------------------------


async def test_the_multilingual_embedding_matches_across_languages(
    tmp_path: Path, multilingual: MultilingualEmbedding
) -> None:
    memory = ChromaMemory(tmp_path / "chroma", embedding=multilingual)
    await memory.open()
    facts = [
        "The book club meets on Thursdays at 8 pm.",
        "Server backups run every night at 3 am.",
        "Self-promotion is only allowed in the showcase channel.",
        "The Minecraft nether is reset on the first Sunday of each month.",
    ]
    ids = (await memory.store_many(GUILD, [NewMemory(f) for f in facts])).ids
    questions = {
        "¿Qué día se reúne el club de lectura?": 0,
        "À quelle heure se font les sauvegardes du serveur ?": 1,
        "Darf ich hier Werbung für mein eigenes Projekt machen?": 2,
        "Quando viene resettato il nether di Minecraft?": 3,
    }
    for question, index in questions.items():
        assert (await memory.search(GUILD, question, k=1))[0].id == ids[index], question
    await memory.close()
