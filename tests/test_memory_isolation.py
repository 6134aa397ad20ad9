"""One server never sees, changes or counts another's memories: through search, recall, the tools,
forget, stats, export and clear, in a shared collection and after a move to a dedicated one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agent.embeddings.minilm import MiniLMEmbedding
from agent.memory import ChromaMemory, NewMemory, RetentionPolicy, recall_for_task
from agent.memory.records import record_id
from agent.memory.scope import IsolationError, NamespaceScope
from agent.messages import ToolCall
from agent.tools.memory_tools import MEMORY_TOOLS
from agent.tools.registry import ToolContext, ToolRegistry

A, B = "111111111111111111", "222222222222222222"
SECRET = "The launch code for guild A's treasure hunt is PURPLE-OTTER-42."
SECRET_QUERY = "what is the launch code for the treasure hunt"


@pytest.fixture(scope="module")
def embedding() -> MiniLMEmbedding:
    e = MiniLMEmbedding()
    e.load()
    return e


@pytest.fixture
async def memory(tmp_path: Path, embedding: MiniLMEmbedding) -> AsyncIterator[ChromaMemory]:
    # One bucket: both guilds share one collection, so only the namespace filter keeps them apart.
    m = ChromaMemory(tmp_path / "chroma", embedding=embedding, buckets=1, dedicated_threshold=30)
    await m.open()
    yield m
    await m.close()


def call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(id=f"call-{name}", name=name, arguments=json.dumps(arguments))


async def test_search_and_recall_stay_inside_the_guild(memory: ChromaMemory) -> None:
    secret = await memory.store(A, SECRET, kind="fact")
    await memory.store(B, "Guild B plays chess on Sundays.", kind="fact")

    assert (await memory.search(A, SECRET_QUERY, k=1))[0].id == secret.ids[0]
    for hit in await memory.search(B, SECRET, k=10):
        assert "PURPLE-OTTER" not in hit.text
    assert [h.text for h in await memory.search(B, SECRET, k=10)] == ["Guild B plays chess on Sundays."]
    assert await recall_for_task(memory, B, SECRET_QUERY, min_relevance=0.0) != []
    assert all(
        "PURPLE" not in h.text for h in await recall_for_task(memory, B, SECRET_QUERY, min_relevance=0.0)
    )
    assert await memory.get(B, secret.ids) == []


async def test_the_tools_take_the_guild_from_the_context_only(memory: ChromaMemory) -> None:
    registry = ToolRegistry(MEMORY_TOOLS)
    ctx_a = ToolContext(session_id="thread-a", namespace=A, user_id="alice", services={"memory": memory})
    ctx_b = ToolContext(session_id="thread-b", namespace=B, user_id="bob", services={"memory": memory})

    saved = await registry.execute(call("remember", note=SECRET), ctx_a)
    assert not saved.is_error and "Remembered as memory" in saved.output
    again = await registry.execute(call("remember", note=SECRET), ctx_a)
    assert "Already remembered" in again.output

    found = await registry.execute(call("recall", query=SECRET_QUERY), ctx_a)
    assert "PURPLE-OTTER-42" in found.output and "[memory " in found.output

    leaked = await registry.execute(call("recall", query=SECRET_QUERY, k=10), ctx_b)
    assert not leaked.is_error and "PURPLE" not in leaked.output

    # A model cannot name another guild: there is no such argument, and extra ones are refused.
    crossing = await registry.execute(call("recall", query=SECRET_QUERY, namespace=A), ctx_b)
    assert crossing.is_error and "unknown argument" in crossing.output and "PURPLE" not in crossing.output
    crossing = await registry.execute(call("remember", note="planted", namespace=A), ctx_b)
    assert crossing.is_error
    assert "planted" not in [r["text"] async for r in memory.export(A)]

    await registry.execute(call("remember", note="Guild B's own note about dragons."), ctx_b)
    rows_a = [r async for r in memory.export(A)]
    assert [r["text"] for r in rows_a] == [SECRET]
    assert rows_a[0]["author"] == "alice" and rows_a[0]["session"] == "thread-a"
    assert rows_a[0]["origin"] == "agent"


async def test_remember_applies_the_servers_retention(memory: ChromaMemory) -> None:
    registry = ToolRegistry(MEMORY_TOOLS)
    services = {"memory": memory, "memory_retention": RetentionPolicy(max_items=2)}
    for note in ("first note", "second note", "third note"):
        assert not (
            await registry.execute(call("remember", note=note), ToolContext(namespace=A, services=services))
        ).is_error
    assert sorted([r["text"] async for r in memory.export(A)]) == ["second note", "third note"]


async def test_the_tools_refuse_without_memory_or_guild(memory: ChromaMemory) -> None:
    registry = ToolRegistry(MEMORY_TOOLS)
    no_memory = await registry.execute(call("recall", query="x"), ToolContext(namespace=A))
    assert no_memory.is_error and "not enabled" in no_memory.output
    no_guild = await registry.execute(call("remember", note="x"), ToolContext(services={"memory": memory}))
    assert no_guild.is_error and "server" in no_guild.output
    assert (await memory.stats(A)).items == 0


async def test_forget_stats_export_and_clear_cannot_reach_another_guild(memory: ChromaMemory) -> None:
    secret = await memory.store(A, SECRET, kind="fact")
    await memory.store(B, "Guild B plays chess on Sundays.")

    assert await memory.forget(B, secret.ids) == []
    assert await memory.forget_by_query(B, SECRET, min_relevance=0.0) != secret.ids
    assert (await memory.stats(A)).items == 1
    assert (await memory.stats(B)).items == 0  # B's forget_by_query removed B's own best match only
    await memory.store(B, "Guild B plays chess on Sundays.")
    assert [r["text"] async for r in memory.export(B)] == ["Guild B plays chess on Sundays."]
    assert await memory.clear(B) == 1
    assert [r["id"] async for r in memory.export(A)] == secret.ids
    assert (await memory.stats(A)).items == 1


async def test_same_text_in_two_guilds_is_two_memories(memory: ChromaMemory) -> None:
    a = await memory.store(A, "Meeting moved to Friday.")
    b = await memory.store(B, "Meeting moved to Friday.")
    assert a.ids != b.ids and b.added == 1
    assert await memory.forget(A, a.ids) == a.ids
    assert [h.id for h in await memory.search(B, "meeting", k=5)] == b.ids


async def test_a_guild_moved_to_its_own_collection_stays_isolated(memory: ChromaMemory) -> None:
    await memory.store(B, SECRET.replace("guild A", "guild B").replace("PURPLE-OTTER-42", "GREEN-HERON-7"))
    await memory.store(A, SECRET, kind="fact")
    await memory.store_many(A, [NewMemory(f"Guild A patch note {i}: bridge {i} rebuilt.") for i in range(35)])

    stats_a, stats_b = await memory.stats(A), await memory.stats(B)
    assert (stats_a.layout, stats_a.items) == ("dedicated", 36)
    assert (stats_b.layout, stats_b.items) == ("shared", 1)
    # Every row of A left the shared collection (read straight from Chroma, bypassing the store).
    shared = memory._cols.client.get_collection(stats_b.collection)
    assert shared.get(where={"ns": A}, include=[])["ids"] == []

    hits_a = await memory.search(A, SECRET_QUERY, k=3)
    assert "PURPLE-OTTER-42" in hits_a[0].text and all("GREEN" not in h.text for h in hits_a)
    hits_b = await memory.search(B, SECRET_QUERY, k=10)
    assert [h.text for h in hits_b] == [
        SECRET.replace("guild A", "guild B").replace("PURPLE-OTTER-42", "GREEN-HERON-7")
    ]

    await memory.store(A, "A note written after the move.")
    assert (await memory.stats(A)).items == 37 and (await memory.stats(B)).items == 1

    assert await memory.clear(A) == 37  # drops A's own collection, nothing of B's
    assert (await memory.stats(A)).layout == "shared" and (await memory.stats(B)).items == 1
    assert await memory.search(A, SECRET_QUERY) == []
    await memory.store(A, "A fresh start.")
    assert [r["text"] async for r in memory.export(A)] == ["A fresh start."]


async def test_a_foreign_row_planted_in_a_guild_collection_is_never_returned(
    memory: ChromaMemory, embedding: MiniLMEmbedding
) -> None:
    await memory.store_many(A, [NewMemory(f"Guild A fact number {i} about castles.") for i in range(31)])
    name = (await memory.stats(A)).collection
    raw = memory._cols.client.get_collection(name)
    planted = "Guild B's planted secret about castles: GREEN-HERON-7."
    raw.add(
        ids=["ffffffffffffffff"],
        embeddings=embedding.embed_documents([planted]),
        documents=[planted],
        metadatas=[{"ns": B, "kind": "fact", "created": 1.0, "parent": "ffffffffffffffff"}],
    )
    hits = await memory.search(A, planted, k=10)
    assert hits and all("GREEN" not in h.text for h in hits)
    assert await memory.forget(A, ["ffffffffffffffff"]) == []
    assert all("GREEN" not in text for text in [r["text"] async for r in memory.export(A)])

    scope = NamespaceScope(raw, A, dedicated=True)
    with pytest.raises(IsolationError):
        scope.upsert(["0123456789abcdef"], np.zeros((1, 384)), ["x"], [{"ns": B}])


async def test_an_id_held_by_another_guild_is_never_overwritten(
    memory: ChromaMemory, embedding: MiniLMEmbedding
) -> None:
    await memory.store(B, "Guild B's first memory.")
    taken = record_id(A, SECRET)  # plant a row of B under the id A's text will get
    raw = memory._cols.client.get_collection((await memory.stats(B)).collection)
    raw.add(
        ids=[taken],
        embeddings=embedding.embed_documents(["B's row"]),
        documents=["B's row"],
        metadatas=[{"ns": B, "kind": "note", "created": 1.0, "parent": taken}],
    )
    with pytest.raises(IsolationError, match="taken by another namespace"):
        await memory.store(A, SECRET)
    assert raw.get(ids=[taken])["documents"] == ["B's row"]
    assert (await memory.stats(A)).items == 0
