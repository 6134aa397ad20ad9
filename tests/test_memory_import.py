"""Issue 17.4: /memory import, through the real bot (discord.py against the fake Discord, which serves
the attached file on 127.0.0.1) and a real Chroma store; and the file checks on their own.

An export of server A is imported into server B: re-embedded, de-duplicated, counted; a bad file is
refused with what is wrong and writes nothing; a failure part-way removes what the import added.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.embeddings.minilm import MiniLMEmbedding
from agent.memory import ChromaMemory, MemoryStoreError
from agent.memory.transfer import ImportRefused, import_memories, read_export
from tests.e2e.harness import running_bot
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM
from tests.test_security_memory import run_command

LONG = "\n\n".join(
    f"Paragraph {i}: the tide tables for the northern harbour shift by about forty minutes each day, "
    "and the ferry timetable follows them from April to September." * 2
    for i in range(8)
)
NOTES = [
    ("The book club meets on Thursdays at 8 pm UTC in the library voice channel.", "note"),
    ("Sourdough starters want a daily feed of equal weights of flour and water.", "research"),
]
LIMITS = {"max_bytes": 1_000_000, "max_rows": 1000, "max_memories": 100}


def lines(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def row(text: str, **extra: Any) -> dict[str, Any]:
    return {"id": "0123456789abcdef", "text": text, "kind": "note", "created_ts": 1.7e9, **extra}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "holds no memories"),
        (b'{"text": "fine"}\nnot json\n', "line 2 is not JSON"),
        (b"[1, 2]\n", "line 1 is not a JSON object"),
        (lines(row("x", kind="secret")), "line 1: 'kind' must be one of"),
        (lines(row("")), "line 1: 'text' must be non-empty"),
        (lines(row("x", created_ts=float("1e300"))), "not a date between 1970 and 2100"),
        (lines(row("x", sources=["a b"])), "'sources' must hold URLs"),
        # ">" and a line break ended a footer's link and wrote a heading after it in the bot's voice
        (
            lines(row("x", sources=["https://a.example/x>\n##[claim](https://evil.example)"])),
            "'sources' must hold URLs",
        ),
        (lines(row("x", sources=["https://a.example/<x>"])), "'sources' must hold URLs"),
        (lines(row("x", author=7)), "'author' must be text"),
        (lines(row("part one", parent="p", chunk=0, chunks=3)), "lacks parts 2, 3"),
        (lines(row("a", parent="p", chunks=2), row("b", parent="p", chunks=2)), "differs from line 1"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"\x1f\x8b\x09\x00" + bytes(12), "damaged"),
        (gzip.compress(lines(row("cut")), mtime=0)[:-12], "cut short"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_memory_import_refuses_bad_files_naming_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(ImportRefused, match=problem):
        read_export(data, **LIMITS)


def test_memory_import_bounds_size_rows_memories_and_gzip_bombs() -> None:
    many = lines(*[row(f"note {i}", id=f"{i:016x}") for i in range(101)])
    with pytest.raises(ImportRefused, match="101 memories; the most this bot imports at once is 100"):
        read_export(many, **LIMITS)
    with pytest.raises(ImportRefused, match="more than 1,000 rows"):
        read_export(many * 10, **LIMITS)
    with pytest.raises(ImportRefused, match="the most this bot imports is 1,000,000"):
        read_export(b" " * 1_000_001, **LIMITS)
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    packed = bomb.compress(b"\n" * 20_000_000) + bomb.flush()  # 20 MB of blank lines in ~20 KB
    assert len(packed) < 1_000_000
    with pytest.raises(ImportRefused, match="more than 1,000,000 bytes once decompressed"):
        read_export(packed, **LIMITS)


def test_memory_import_joins_chunks_in_order_and_keeps_provenance() -> None:
    data = lines(
        row("second half.", parent="p1", chunk=1, chunks=2, author="42", session="s1", origin="agent-web"),
        row("First half,", parent="p1", chunk=0, chunks=2, author="42", session="s1", origin="agent-web"),
        row("Another note."),
        row("Another note.", id="fedcba9876543210"),
    )
    plan = read_export(gzip.compress(data), **LIMITS)
    assert [m.text for m in plan.memories] == ["First half,\n\nsecond half.", "Another note."]
    first = plan.memories[0]
    assert (first.author, first.session, first.origin, first.created) == (
        "42",
        "s1",
        "agent-web",
        1.7e9,
    )  # still unverified
    assert (plan.rows, plan.repeated) == (4, 1)


class SmallEmbedding:
    """Another embedding model (16 dimensions, a stable hash of words): the export carries no vectors,
    so an import re-embeds with whatever this store uses."""

    id = "test-words-16"
    dim = 16

    def load(self) -> None:
        return None

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(w.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


async def test_memory_import_into_another_embedding_and_rollback_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = ChromaMemory(tmp_path / "a", embedding=MiniLMEmbedding())
    target = ChromaMemory(tmp_path / "b", embedding=SmallEmbedding())  # type: ignore[arg-type]
    await source.open()
    await target.open()
    try:
        for text, kind in NOTES:
            await source.store("1", text, kind=kind, author="7")
        await source.store("1", LONG, kind="research", task="ferries")
        exported = lines(*[r async for r in source.export("1")])
        plan = read_export(exported, **LIMITS)
        done = await import_memories(target, "2", plan.memories)
        assert len(done.added) == 3 and (await target.stats("2")).memories == 3
        rows = [r async for r in target.export("2")]
        assert {r["origin"] for r in rows} == {"import"} and {r["task"] for r in rows} == {"", "ferries"}
        assert await target.search("2", "tide tables ferry timetable", k=1)  # searchable in its vectors
        again = await import_memories(target, "2", plan.memories)
        assert again.added == [] and len(again.ids) == 3

        # A failure while writing the second batch: the first batch's new memories go again.
        calls = 0
        real = target.store_many

        async def failing(ns: str, items: Any, **kw: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise MemoryStoreError("disk full")
            return await real(ns, items, **kw)

        monkeypatch.setattr(target, "store_many", failing)
        with pytest.raises(MemoryStoreError, match="disk full"):
            await import_memories(target, "3", plan.memories, batch=2)
        assert (await target.stats("3")).items == 0
    finally:
        await source.close()
        await target.close()


@pytest.fixture
def guild_a() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",), admins=("admin",))


@pytest.fixture
def guild_b() -> FakeGuild:
    return FakeGuild.create("Other", channels=("general",), members=("carol",), admins=("boss",))


@pytest.fixture
def guilds(guild_a: FakeGuild, guild_b: FakeGuild) -> list[FakeGuild]:
    return [guild_a, guild_b]


async def test_memory_import_e2e_export_from_one_server_into_another(
    fake: FakeDiscord, llm: FakeLLM, guild_a: FakeGuild, guild_b: FakeGuild, tmp_path: Path
) -> None:
    a, b = str(guild_a.id), str(guild_b.id)
    async with running_bot(fake, llm, tmp_path, guild_a, MEMORY_ENABLED=True, MEMORY_IMPORT_MAX_MB=1) as bot:
        memory = bot.services.memory
        assert memory is not None, bot.services.memory_error
        for text, kind in NOTES:
            await memory.store(a, text, kind=kind, author=str(guild_a.member("alice").id), session="s-a")
        await memory.store(a, LONG, kind="research", task="ferries")
        await memory.store(b, NOTES[0][0])  # B already has the book club note
        export = await run_command(fake, guild_a, "memory export", {}, "admin")
        data = export.attachments[0].data
        assert len(data.splitlines()) > 3  # the long memory is in several chunks

        refused = await run_command(fake, guild_b, "memory import", {"file": ("a.jsonl", data)}, "carol")
        assert "Manage Server" in refused.content and (await memory.stats(b)).memories == 1

        done = await run_command(fake, guild_b, "memory import", {"file": ("a.jsonl", data)}, "boss")
        assert "**2 new memories**" in done.content and "3 memories in the file" in done.content
        assert "Already in this server's memory, left as they were: 1." in done.content
        assert (await memory.stats(b)).memories == 3
        found = await run_command(fake, guild_b, "memory search", {"query": "ferry timetable tides"}, "carol")
        assert "imported" in found.content and "ferries" in found.content

        again = await run_command(fake, guild_b, "memory import", {"file": ("a.jsonl", data)}, "boss")
        assert "**0 new memories**" in again.content and "left as they were: 3" in again.content

        # A damaged file: the good rows before the damage are not imported either.
        cut = data.splitlines()
        bad = b"\n".join([json.dumps(row("A brand new note about otters.")).encode(), *cut[:-1], b"{oops"])
        refused = await run_command(fake, guild_b, "memory import", {"file": ("bad.jsonl", bad)}, "boss")
        assert "cannot be imported, so nothing was" in refused.content and "is not JSON" in refused.content
        assert f"line {len(cut) + 1}" in refused.content
        assert (await memory.stats(b)).memories == 3

        big = b" " * (1024 * 1024 + 1)
        too_big = await run_command(fake, guild_b, "memory import", {"file": ("big.jsonl", big)}, "boss")
        assert "MEMORY_IMPORT_MAX_MB" in too_big.content and (await memory.stats(b)).memories == 3
        assert (await memory.stats(a)).memories == 3  # the source server is untouched
