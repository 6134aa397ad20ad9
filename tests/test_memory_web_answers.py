"""Answers the bot stores into a server's memory after reading web pages come back unverified.

They were recalled with only their sources listed, so what a page said returned to the next run's model
looking like a trusted fact, while a note the agent saved after the same pages was marked. A member's
own notes, and answers built without reading anything, stay as they were. Real Chroma, real MiniLM.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.embeddings.minilm import MiniLMEmbedding
from agent.events import RunResult
from agent.memory import ChromaMemory
from agent.memory.integration import format_recalled, recall_for_task
from agent.memory.transfer import read_export
from agent.memory.types import MemoryRecord
from agent.messages import Message
from agent.tools.memory_tools import RUN_SERVICE, MemoryRunPolicy
from bot.memory_text import provenance
from bot.run_policy import remember_answer

GUILD = "4242"


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[ChromaMemory]:
    m = ChromaMemory(tmp_path / "chroma", embedding=MiniLMEmbedding())
    await m.open()
    yield m
    await m.close()


def _services(memory: ChromaMemory) -> SimpleNamespace:
    async def settings(_gid: int) -> SimpleNamespace:
        return SimpleNamespace(memory_auto_store=True)

    return SimpleNamespace(
        memory=memory,
        guild_settings=SimpleNamespace(get=settings),
        retention_for=lambda _gs: None,
    )


def _turn(prompt: str) -> SimpleNamespace:
    session = SimpleNamespace(id=f"s-{len(prompt)}", guild_id=int(GUILD), thread_id=77)
    return SimpleNamespace(session=session, channel=None, prompt=prompt, requester_id=5, supersedes=None)


def _result(text: str, sources: list[str], messages: list[Message]) -> RunResult:
    return RunResult(text, "completed", 1, None, None, [], sources=sources, messages=messages)  # type: ignore[arg-type]


async def test_recalled_answers_built_from_web_pages_are_marked_unverified(memory: ChromaMemory) -> None:
    sv = _services(memory)
    tool_said = Message(role="tool", content="Otter count: 400 pairs", tool_call_id="c", name="fetch_url")
    # 1. An answer built from a fetched page (its sources are listed).
    await remember_answer(
        sv,
        _turn("How many otters live on the Baltic coast?"),  # type: ignore[arg-type]
        _result("About 400 otter pairs live on the Baltic coast.", ["https://otters.example/"], [tool_said]),
    )
    # 2. An answer after tool output with no URL (an MCP tool, a recalled unverified memory).
    policy = MemoryRunPolicy(read_untrusted=lambda: True)
    await remember_answer(
        sv,
        _turn("When do the otters in the harbour hunt?"),  # type: ignore[arg-type]
        _result("The harbour otters hunt eelpout at dawn.", [], []),
        {RUN_SERVICE: policy},
    )
    # 3. An answer the model wrote without reading anything, and a member's own note.
    await remember_answer(
        sv,
        _turn("What colour are otters?"),  # type: ignore[arg-type]
        _result("Otters are brown.", [], []),
        {RUN_SERVICE: MemoryRunPolicy()},
    )
    await memory.store(GUILD, "Otter survey meetings are on Tuesdays.", kind="note", author="5", origin="")

    hits = await recall_for_task(memory, GUILD, "otters on the Baltic coast and in the harbour", k=10)
    block = format_recalled(hits)
    headers = {line.split(",")[0]: line for line in block.splitlines() if line.startswith("[memory ")}
    by_text = {h.text: headers[f"[memory {h.id}"] for h in hits}
    assert len(by_text) == 4, block
    assert "unverified" in by_text["About 400 otter pairs live on the Baltic coast."]
    assert "unverified" in by_text["The harbour otters hunt eelpout at dawn."]
    assert "unverified" not in by_text["Otters are brown."]
    assert "unverified" not in by_text["Otter survey meetings are on Tuesdays."]
    origins = {h.text: h.origin for h in hits}
    assert origins["About 400 otter pairs live on the Baltic coast."] == "auto-web"
    assert origins["Otters are brown."] == "auto"
    # Members see the warning too (/memory list, search, show).
    web = next(h for h in hits if h.origin == "auto-web" and h.sources)
    assert provenance(web).startswith("-# ⚠️ research, stored automatically, built from web content")
    assert "<https://otters.example/>" in provenance(web)


def test_an_answer_stored_before_the_mark_and_exports_of_web_answers_stay_unverified() -> None:
    old = MemoryRecord(
        id="00000000000000aa",
        text="Otters returned in the 1990s.",
        kind="research",
        created=1.7e9,
        origin="auto",
        sources=("https://otters.example/",),
    )
    own = MemoryRecord(
        id="00000000000000bb", text="My own words.", kind="research", created=1.7e9, origin="auto"
    )
    assert old.unverified and not own.unverified  # answers stored earlier: sources mean pages were read
    data = b"".join(json.dumps(r.to_row()).encode() + b"\n" for r in (old, own))
    web, plain = read_export(data, max_bytes=1 << 20, max_rows=100, max_memories=100).memories
    assert web.origin == "auto-web" and plain.origin == "import"
