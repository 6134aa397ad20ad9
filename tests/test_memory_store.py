"""Long-term memory with a real PersistentClient in a temp dir and the real offline MiniLM model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.embeddings.minilm import MiniLMEmbedding
from agent.memory import (
    DEFAULT_MIN_RELEVANCE,
    ChromaMemory,
    MemoryStoreError,
    NamespaceError,
    NewMemory,
    RetentionPolicy,
    format_recalled,
    layout,
    recall_for_task,
    recalled_event,
    store_research,
)
from agent.memory.records import record_id
from agent.memory.transfer import import_memories, plan_import

GUILD = "100000000000000001"
DAY = 86400.0

MEMORIES = [
    "The Rust borrow checker refuses two mutable references to the same value at the same time.",
    "PostgreSQL VACUUM reclaims the space held by dead tuples and updates visibility maps.",
    "Our Minecraft server resets the nether every first Sunday of the month.",
    "Python's GIL lets only one thread execute bytecode at a time in CPython.",
    "The guild decided to hold the book club on Thursdays at 8 pm UTC.",
    "Kubernetes liveness probes restart a container when the check keeps failing.",
    "Sourdough starter needs feeding with equal weights of flour and water every day.",
    "The James Webb Space Telescope observes mainly in the infrared spectrum.",
    "Discord limits a single message to 2000 characters.",
    "Git rebase rewrites commit history by replaying commits onto a new base.",
    "Tomatoes grow best with six to eight hours of direct sunlight a day.",
    "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
    "HTTP status 429 means the client sent too many requests and must slow down.",
    "Electric cars lose some driving range in cold weather because batteries are less efficient.",
    "The moderators agreed that self-promotion is allowed only in the #showcase channel.",
    "Chess: the Sicilian Defence begins with 1.e4 c5.",
    "A Raspberry Pi 5 needs a 5 V 5 A USB-C power supply for full performance.",
    "Espresso is brewed by forcing hot water through finely ground coffee at about 9 bar.",
    "TLS 1.3 removed RSA key exchange and requires forward secrecy.",
    "The Great Barrier Reef is the largest coral reef system in the world, off Queensland, Australia.",
    "Vitamin D is produced in the skin when it is exposed to sunlight.",
    "Our raid team needs two healers and one tank for the weekly dungeon.",
    "SQLite allows many readers but only one writer at a time.",
    "The Fourier transform decomposes a signal into its frequencies.",
    "Marathon runners often carbohydrate-load in the days before a race.",
    "Photosynthesis turns carbon dioxide and water into glucose using light energy.",
    "The server's giveaway winner must claim the prize within 48 hours.",
    "Docker images are built in layers, and unchanged layers are cached between builds.",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "A leap year has 366 days and occurs every four years, except most century years.",
    "React's useEffect hook runs after the component renders.",
    "Bees communicate the location of flowers with a waggle dance.",
    "The speed of light in a vacuum is about 299,792 kilometres per second.",
    "Our Valheim world backup runs every night at 3 am.",
    "Mortgage interest rates rose sharply during 2022 as central banks fought inflation.",
    "Linux file permissions are read, write and execute for owner, group and others.",
    "The Amazon river carries more water than any other river on Earth.",
    "Watering succulents too often causes their roots to rot.",
    "The Linux OOM killer terminates processes when the system runs out of memory.",
    "Mount Everest is 8,849 metres tall according to the 2020 survey.",
    "Redis keeps its dataset in memory and can persist it with snapshots or an append-only file.",
    "Cats purr both when content and sometimes when stressed or in pain.",
    "The Apollo 11 mission landed humans on the Moon in July 1969.",
    "Our Friday movie night picks are voted on with the /poll command.",
    "Binary search finds an item in a sorted list in logarithmic time.",
    "Caffeine blocks adenosine receptors, which reduces the feeling of tiredness.",
    "The Roman Empire in the west fell in 476 AD.",
    "Wi-Fi 6 uses OFDMA to serve several devices in one transmission.",
    "Olive oil's smoke point is lower than that of most refined vegetable oils.",
    "A 3D printer's first layer sticks better on a clean, level, heated bed.",
]
PARAPHRASES = {
    "why won't the compiler let me borrow something mutably twice": 0,
    "how does postgres clean up deleted rows": 1,
    "when is the nether wiped on our minecraft server": 2,
    "can python threads run in parallel": 3,
    "which day do we meet for reading club": 4,
    "is it ok to advertise my own project here": 14,
    "how many letters can a discord post have": 8,
    "what happens if I send requests too fast to an API": 12,
    "how often do we back up the viking game world": 33,
    "my 3d prints won't stick to the plate": 49,
}


class Clock:
    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def embedding() -> MiniLMEmbedding:
    e = MiniLMEmbedding()
    e.load()
    return e


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def memory(tmp_path: Path, embedding: MiniLMEmbedding, clock: Clock) -> AsyncIterator[ChromaMemory]:
    m = ChromaMemory(tmp_path / "chroma", embedding=embedding, buckets=4, clock=clock)
    await m.open()
    yield m
    await m.close()


async def test_a_paraphrased_question_finds_the_right_memory_among_50(memory: ChromaMemory) -> None:
    result = await memory.store_many(GUILD, [NewMemory(t, kind="fact") for t in MEMORIES])
    assert result.added == 50 and len(set(result.ids)) == 50

    for query, index in PARAPHRASES.items():
        hits = await memory.search(GUILD, query, k=3)
        assert hits[0].id == result.ids[index], f"{query!r} found {hits[0].text!r}"
        assert hits[0].relevance >= DEFAULT_MIN_RELEVANCE
        assert hits[0].relevance > hits[1].relevance

    recalled = await recall_for_task(memory, GUILD, "which day do we meet for reading club")
    assert recalled[0].id == result.ids[4]
    block = format_recalled(recalled)
    assert f"[memory {result.ids[4]}, {recalled[0].date}" in block
    assert "Thursdays at 8 pm UTC" in block
    assert recalled_event(recalled).count == len(recalled)


async def test_the_same_fact_is_stored_once(memory: ChromaMemory) -> None:
    first = await memory.store(GUILD, "Backups run nightly at 3 am.", kind="fact")
    again = await memory.store(GUILD, "  backups RUN   nightly at 3 AM. ", kind="fact", author="someone else")
    assert again.ids == first.ids
    assert (first.added, again.added, again.duplicates) == (1, 0, 1)
    assert (await memory.stats(GUILD)).items == 1


async def test_long_research_is_chunked_under_one_parent_id(memory: ChromaMemory) -> None:
    paragraphs = [
        "Solar panels convert sunlight into electricity using photovoltaic cells. " * 11,
        "Inverters turn the panels' direct current into alternating current for the house. " * 11,
        "Net metering lets a household sell surplus power back to the grid operator. " * 11,
        "Panel efficiency drops slightly as the temperature of the cells rises in summer. " * 11,
    ]
    answer = "\n\n".join(p.strip() for p in paragraphs)
    result = await store_research(
        memory,
        GUILD,
        "How do home solar installations work?",
        answer,
        ["https://example.org/solar"],
        "u1",
        "t1",
    )
    assert result is not None
    parent = result.ids[0]
    assert result.added == 4  # one chunk per paragraph of about 900 characters

    hits = await memory.search(GUILD, "selling extra electricity back to the utility", k=1)
    assert hits[0].parent == parent and hits[0].id.startswith(parent + "-")
    assert "Net metering" in hits[0].text
    assert hits[0].task == "How do home solar installations work?"
    assert hits[0].sources == ("https://example.org/solar",)

    chunks = await memory.get(GUILD, [parent])
    assert [c.chunk for c in chunks] == list(range(result.added))
    assert "\n\n".join(c.text for c in chunks) == answer

    assert sorted(await memory.forget(GUILD, [parent])) == sorted(c.id for c in chunks)
    assert (await memory.stats(GUILD)).items == 0


async def test_memories_survive_a_new_client(tmp_path: Path, embedding: MiniLMEmbedding) -> None:
    path = tmp_path / "chroma"
    m = ChromaMemory(path, embedding=embedding, buckets=2, dedicated_threshold=20)
    await m.open()
    big, small = "200000000000000002", "300000000000000003"
    await m.store_many(
        big, [NewMemory(f"Patch note {i}: the bridge in sector {i} was rebuilt.") for i in range(25)]
    )
    stored = await m.store(small, "The tavern quest gives a silver sword as its reward.", kind="fact")
    await m.close()

    again = ChromaMemory(path, embedding=embedding, buckets=2, dedicated_threshold=20)
    await again.open()
    assert (await again.stats(big)).layout == "dedicated"
    assert (await again.stats(big)).items == 25
    hits = await again.search(small, "what do you get for finishing the inn mission", k=1)
    assert hits[0].id == stored.ids[0]
    await again.close()


async def test_an_interrupted_move_is_undone_or_finished_at_start_up(
    tmp_path: Path, embedding: MiniLMEmbedding
) -> None:
    path = tmp_path / "chroma"
    m = ChromaMemory(path, embedding=embedding, buckets=1)
    await m.open()
    a, b = "400000000000000004", "500000000000000005"
    await m.store_many(a, [NewMemory(t) for t in MEMORIES[:3]])
    await m.store_many(b, [NewMemory(t) for t in MEMORIES[3:5]])
    shared = m._cols.client.get_collection(layout.shared_name(m.prefix, 0))
    rows_a = shared.get(where={"ns": a}, include=["embeddings", "documents", "metadatas"])
    rows_b = shared.get(where={"ns": b}, include=["embeddings", "documents", "metadatas"])
    # A crashed while copying (one row copied, still marked migrating); B crashed after the switch,
    # before its rows left the shared collection.
    half = m._cols.collection(
        layout.dedicated_name(m.prefix, a), m._cols.dedicated_meta(a, layout.STATE_MIGRATING)
    )
    half.add(ids=rows_a["ids"][:1], embeddings=rows_a["embeddings"][:1], metadatas=rows_a["metadatas"][:1])
    done = m._cols.collection(
        layout.dedicated_name(m.prefix, b), m._cols.dedicated_meta(b, layout.STATE_READY)
    )
    done.add(
        ids=rows_b["ids"],
        embeddings=rows_b["embeddings"],
        documents=rows_b["documents"],
        metadatas=rows_b["metadatas"],
    )
    await m.close()

    again = ChromaMemory(path, embedding=embedding, buckets=1)
    await again.open()
    stats_a, stats_b = await again.stats(a), await again.stats(b)
    assert (stats_a.layout, stats_a.items) == ("shared", 3)
    assert (stats_b.layout, stats_b.items) == ("dedicated", 2)
    names = {c.name for c in again._cols.client.list_collections()}
    assert layout.dedicated_name(again.prefix, a) not in names
    assert (
        again._cols.client.get_collection(layout.shared_name(again.prefix, 0)).get(where={"ns": b})["ids"]
        == []
    )
    assert (await again.search(b, "can python threads run in parallel", k=1))[0].text == MEMORIES[3]
    await again.close()


def test_memories_survive_a_new_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from agent.embeddings.minilm import MiniLMEmbedding
        from agent.memory import ChromaMemory

        async def main(path, mode):
            m = ChromaMemory(path, embedding=MiniLMEmbedding())
            await m.open()
            if mode == "write":
                r = await m.store("42", "The office wifi password rotates every Monday.", kind="fact")
                print(json.dumps(r.ids))
            else:
                hits = await m.search("42", "when does the wireless passphrase change", k=1)
                print(json.dumps([h.id for h in hits]))
            await m.close()

        asyncio.run(main(sys.argv[1], sys.argv[2]))
        """
    )
    root = Path(__file__).resolve().parent.parent
    path = str(tmp_path / "chroma")

    def run(mode: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", script, path, mode], cwd=root, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    written = run("write")
    assert run("read") == written


async def test_concurrent_stores_and_searches_of_one_guild(memory: ChromaMemory) -> None:
    stores = [memory.store(GUILD, text) for text in MEMORIES[:20]] + [memory.store(GUILD, MEMORIES[0])]
    searches = [memory.search(GUILD, query, k=3) for query in PARAPHRASES]
    results = await asyncio.gather(*stores, *searches)
    assert sum(r.added for r in results[: len(stores)]) == 20  # the duplicate was stored once
    assert (await memory.stats(GUILD)).items == 20
    hits = await memory.search(GUILD, "can python threads run in parallel", k=1)
    assert hits[0].text == MEMORIES[3]


async def test_forget_by_id_and_by_query(memory: ChromaMemory) -> None:
    ids = (await memory.store_many(GUILD, [NewMemory(t) for t in MEMORIES[:10]])).ids
    assert await memory.forget(GUILD, [ids[0]]) == [ids[0]]
    assert await memory.forget(GUILD, [ids[0]]) == []  # already gone
    assert all(h.id != ids[0] for h in await memory.search(GUILD, MEMORIES[0], k=10))

    removed = await memory.forget_by_query(GUILD, "how does postgres clean up deleted rows", k=1)
    assert removed == [ids[1]]
    left = {r["id"] async for r in memory.export(GUILD)}
    assert left == set(ids[2:])


async def test_eviction_by_count_removes_the_oldest_first(memory: ChromaMemory, clock: Clock) -> None:
    for i, text in enumerate(MEMORIES[:8]):
        clock.now = 1_790_000_000.0 + i * DAY
        await memory.store(GUILD, text)
    evicted = await memory.apply_retention(GUILD, RetentionPolicy(max_items=5))
    assert sorted(evicted) == sorted(record_id(GUILD, t) for t in MEMORIES[:3])
    stats = await memory.stats(GUILD)
    assert stats.items == 5 and stats.oldest == 1_790_000_000.0 + 3 * DAY


async def test_eviction_by_age(memory: ChromaMemory, clock: Clock) -> None:
    clock.now = 1_790_000_000.0
    old = await memory.store(GUILD, "An announcement from long ago.")
    clock.now += 40 * DAY
    recent = await memory.store(GUILD, "A fresh announcement.")
    assert await memory.apply_retention(GUILD, RetentionPolicy(max_age_days=30)) == old.ids
    assert [r["id"] async for r in memory.export(GUILD)] == recent.ids
    clock.now += 31 * DAY
    assert await memory.apply_retention(GUILD, RetentionPolicy(max_age_days=30)) == recent.ids


async def test_store_research_applies_the_retention_it_is_given(memory: ChromaMemory, clock: Clock) -> None:
    for i in range(3):
        clock.now = 1_790_000_000.0 + i
        await store_research(memory, GUILD, f"task {i}", MEMORIES[i], retention=RetentionPolicy(max_items=2))
    assert {r["text"] async for r in memory.export(GUILD)} == {MEMORIES[1], MEMORIES[2]}
    assert await store_research(memory, None, "t", "answer") is None
    assert await store_research(memory, GUILD, "t", "   ") is None
    # an answer already kept writes nothing, and retention still applies (it runs in the write's own
    # worker-thread call when something is written, on its own otherwise)
    clock.now += 40 * DAY
    again = await store_research(
        memory, GUILD, "task 2", MEMORIES[2], retention=RetentionPolicy(max_age_days=30)
    )
    assert again is not None and again.added == 0
    assert [r["text"] async for r in memory.export(GUILD)] == []


async def test_a_runs_recall_and_stored_answer_read_chroma_twice_each(
    memory: ChromaMemory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a run costs memory, in Chroma calls (each read ~1 ms of CPU however small): its recall reads
    the vectors, then the best rows by id; its answer's store reads which ids exist once, then writes.
    Retention's "past max_items?" comes from the row count the store keeps (it was a read at each)."""
    from chromadb.api.models.Collection import Collection

    policy = RetentionPolicy(max_items=2)
    await store_research(memory, GUILD, "warm-up", MEMORIES[0], retention=policy)  # counts the rows once
    calls: list[str] = []
    for name in ("get", "query", "upsert", "delete", "count"):
        real = getattr(Collection, name)
        monkeypatch.setattr(
            Collection, name, lambda self, *a, _n=name, _r=real, **k: calls.append(_n) or _r(self, *a, **k)
        )
    recalled = await recall_for_task(memory, GUILD, MEMORIES[0], min_relevance=0.0, retention=policy)
    assert [h.text for h in recalled] == [MEMORIES[0]] and calls == ["get", "get"]
    calls.clear()
    clock.now += 1
    await store_research(memory, GUILD, "task 1", MEMORIES[1], retention=policy)
    assert calls == ["get", "upsert"]  # two memories: nothing to evict, and no read to learn it
    calls.clear()
    clock.now += 1
    await store_research(memory, GUILD, "task 2", MEMORIES[2], retention=policy)
    assert calls[:2] == ["get", "upsert"] and calls[-1] == "delete"  # the third evicts the first
    assert {r["text"] async for r in memory.export(GUILD)} == {MEMORIES[1], MEMORIES[2]}


async def test_stats_export_and_import(memory: ChromaMemory, clock: Clock) -> None:
    clock.now = 1_790_000_000.0
    await memory.store(GUILD, MEMORIES[0], kind="fact", author="alice", sources=["https://a.example/x"])
    clock.now += DAY
    await memory.store(GUILD, MEMORIES[1], kind="note", thread="999")
    stats = await memory.stats(GUILD)
    assert (stats.items, stats.memories, stats.by_kind) == (2, 2, {"fact": 1, "note": 1})
    assert (stats.oldest, stats.newest) == (1_790_000_000.0, 1_790_000_000.0 + DAY)
    assert stats.bytes_estimate > 2 * 384 * 4 and stats.layout == "shared"

    rows = [r async for r in memory.export(GUILD)]
    lines = [json.dumps(r) for r in rows]  # JSONL-ready
    assert {json.loads(line)["author"] for line in lines} == {"alice", ""}

    other = "555"
    plan = plan_import(enumerate((json.loads(line) for line in lines), 1), max_memories=10)
    imported = await import_memories(memory, other, plan.memories)
    assert imported.rows == 2
    hits = await memory.search(other, "why won't the compiler let me borrow something mutably twice", k=1)
    assert hits[0].text == MEMORIES[0] and hits[0].sources == ("https://a.example/x",)
    assert hits[0].created == 1_790_000_000.0


async def test_clear_and_kind_filter(memory: ChromaMemory) -> None:
    await memory.store(GUILD, MEMORIES[0], kind="fact")
    await memory.store(GUILD, MEMORIES[1], kind="note")
    hits = await memory.search(GUILD, "rust borrow checker", k=5, kinds=["note"])
    assert [h.kind for h in hits] == ["note"]
    assert await memory.clear(GUILD) == 2
    assert await memory.search(GUILD, "rust borrow checker") == []


async def test_bad_input_gets_clear_errors(
    tmp_path: Path, embedding: MiniLMEmbedding, memory: ChromaMemory
) -> None:
    with pytest.raises(NamespaceError, match="guild id"):
        await memory.store("  ", "text")
    with pytest.raises(NamespaceError):
        await memory.search(None, "q")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty text"):
        await memory.store(GUILD, "   ")
    with pytest.raises(ValueError, match="kind must be one of"):
        await memory.store(GUILD, "x", kind="gossip")
    with pytest.raises(ValueError, match="not a memory id"):
        await memory.forget(GUILD, ["'; drop table"])
    with pytest.raises(ValueError, match="k must be"):
        await memory.search(GUILD, "q", k=0)
    with pytest.raises(ValueError, match="kinds"):
        await memory.search(GUILD, "q", kinds=["gossip"])
    with pytest.raises(ValueError, match="max_items"):
        RetentionPolicy(max_items=-1)
    closed = ChromaMemory(tmp_path / "other", embedding=embedding)
    with pytest.raises(MemoryStoreError, match="open"):
        await closed.search(GUILD, "q")
    assert await memory.store(int(GUILD), "int guild ids are the same namespace") is not None
    assert (await memory.stats(GUILD)).items == 1


async def test_a_runs_recall_sees_only_what_retention_keeps_without_the_write_lock(
    memory: ChromaMemory, clock: Clock
) -> None:
    """Retention used to run before every recall too (a write, under the namespace's lock, so a run's
    recall waited behind a memory import's batch). Recall now reads only what retention keeps, deletes
    nothing, and retention runs once, after the run stores its answer."""
    policy = RetentionPolicy(max_items=2, max_age_days=30)
    now = 1_790_000_000.0
    for text, days in zip(MEMORIES[:4], (40, 3, 2, 1), strict=True):
        clock.now = now - days * DAY
        await memory.store(GUILD, text)
    clock.now = now
    async with memory._locks[GUILD]:  # what an import holds while it writes a batch
        async with asyncio.timeout(20):  # a hang guard (it waited here for ever), not a timing
            seen = {
                h.text
                for q in MEMORIES[:4]
                for h in await recall_for_task(memory, GUILD, q, k=4, min_relevance=0.0, retention=policy)
            }
    # 40 days old: expired; of the three left, the oldest is past max_items.
    assert seen == set(MEMORIES[2:4])
    assert (await memory.stats(GUILD)).items == 4  # nothing deleted by a read
    await store_research(memory, GUILD, "task", MEMORIES[5], retention=policy)
    assert {r["text"] async for r in memory.export(GUILD)} == {MEMORIES[3], MEMORIES[5]}


async def test_a_private_threads_expired_notes_are_never_recalled_or_listed(
    memory: ChromaMemory, clock: Clock
) -> None:
    """A private thread's notes were evicted only when that thread saved another note: one that never
    wrote again kept recalling (and listing) notes past the server's max_age_days."""
    from agent.messages import ToolCall
    from agent.tools.memory_tools import MEMORY_TOOLS, MemoryRunPolicy, private_namespace
    from agent.tools.registry import ToolContext, ToolRegistry
    from bot.memory_import import publish_note

    private = private_namespace(GUILD, "s1")
    clock.now = 1_790_000_000.0
    await memory.store(private, MEMORIES[0], kind="note", author="7")
    await memory.store(private, MEMORIES[1], kind="note", author="7")
    clock.now += 20 * DAY
    fresh = await memory.store(private, MEMORIES[2], kind="note", author="7")
    clock.now += 15 * DAY  # the first two are 35 days old now, the third 15
    policy = RetentionPolicy(max_age_days=30)
    services = {
        "memory": memory,
        "memory_retention": policy,
        "memory_run": MemoryRunPolicy(private_namespace=private),
    }
    ctx = ToolContext(namespace=GUILD, services=services)
    for q in MEMORIES[:3]:
        out = await ToolRegistry(MEMORY_TOOLS).execute(ToolCall("r", "recall", json.dumps({"query": q})), ctx)
        assert MEMORIES[0] not in out.output and MEMORIES[1] not in out.output
    assert MEMORIES[2] in out.output
    listed = await publish_note(memory, GUILD, "s1", None, 7, policy)
    assert fresh.ids[0] in listed and "borrow checker" not in listed and "VACUUM" not in listed
    assert [r["text"] async for r in memory.export(private)] == [MEMORIES[2]]
