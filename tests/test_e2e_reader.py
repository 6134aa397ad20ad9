"""End to end: a complex run in a Discord thread researches on the medium tier's model, reads a long page
with the simple tier's model, and hands over to the complex tier's model for the answer.

The bot, the fake Discord, the scripted model server and the page server are all real processes'
worth of parts on 127.0.0.1; the model server answers by model name (researcher, reader or writer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.fakes.web_server import FakeWeb

NOTES = "- The page says otters swim in cold water, 200 times over."
TIERS = {"simple": ("gpt-4.1-nano",), "medium": ("gpt-5-mini",), "complex": ("gpt-5",)}


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",), admins=("admin",))


@pytest.fixture(autouse=True)
def page_server_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page server is on 127.0.0.1; a 2,000-character window makes the reader's notes stand out."""
    monkeypatch.setenv("FETCH_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv("FETCH_MAX_CHARS", "2000")


async def test_e2e_a_complex_run_researches_cheaply_reads_with_notes_and_the_strong_model_writes(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, web: FakeWeb, tmp_path: Path
) -> None:

    def respond(body: dict[str, Any]) -> Reply:
        if body["model"] == "gpt-4.1-nano":
            return text(NOTES, prompt_tokens=11_000, completion_tokens=40)
        if body["model"] == "gpt-5":
            return text("Otters cope with cold water, according to the page.")
        if not any(m["role"] == "tool" for m in body["messages"]):
            return tool_call("fetch_url", {"url": web.url("/long")})
        return text("READY-LINE: the page is read.")

    llm.responder = respond
    # Clearly complex (46% against the 27% bar): the test is about the complex pipeline, not the bar.
    task = (
        "Research and compare in depth how otters cope with cold water across all the studies on this page, "
        "weighing their methods and evidence"
    )
    async with running_bot(fake, llm, tmp_path, guild, tiers_table=TIERS) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": task}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, name=None)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=20)
        await wait_idle(fake, bot)

    research = [r for r in llm.requests if r["model"] == "gpt-5-mini"]
    reads = [r for r in llm.requests if r["model"] == "gpt-4.1-nano"]
    writes = [r for r in llm.requests if r["model"] == "gpt-5"]
    assert (len(research), len(reads), len(writes)) == (2, 1, 1)
    assert "stronger model will write the final answer" in research[0]["messages"][0]["content"]
    assert (
        task in reads[0]["messages"][1]["content"] and "Paragraph 199:" in reads[0]["messages"][1]["content"]
    )
    # The writer sees what the researcher found (the reader's notes, not the page), is not told it is a
    # researcher, and never sees the researcher's "done" line.
    seen = next(m["content"] for m in writes[0]["messages"] if m["role"] == "tool")
    assert NOTES in seen and "Paragraph 0:" not in seen
    assert "stronger model" not in writes[0]["messages"][0]["content"]
    assert not any("READY-LINE" in str(m.get("content")) for m in writes[0]["messages"])

    contents = [m.content for m in fake.messages(thread)]
    # The header names what runs (routed before it is posted), so no separate routing note.
    assert "tier complex (auto" in contents[0] and "model gpt-5-mini researches, gpt-5 writes" in contents[0]
    assert not any("🧭" in c for c in contents)
    assert any(
        "switched from gpt-5-mini to gpt-5 because gpt-5-mini gathered the material" in c for c in contents
    )
    assert not any("READY-LINE" in c for c in contents)
    step = next(c for c in contents if "fetch_url" in c)
    assert "chars read by gpt-4.1-nano" in step
    answer_and_footer = "\n".join(contents[-2:])
    assert "Otters cope with cold water, according to the page." in answer_and_footer
    footer = contents[-1]
    assert all(m in footer for m in ("gpt-5-mini", "gpt-5", "gpt-4.1-nano"))


async def test_e2e_a_server_that_turned_the_reader_off_gets_the_page_itself(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, web: FakeWeb, tmp_path: Path
) -> None:

    def respond(body: dict[str, Any]) -> Reply:
        if body["model"] == "gpt-5" or any(m["role"] == "tool" for m in body["messages"]):
            return text("Done from the page itself.")
        return tool_call("fetch_url", {"url": web.url("/long")})

    llm.responder = respond
    # Clearly complex (46% against the 27% bar): the test is about the complex pipeline, not the bar.
    task = (
        "Research and compare in depth how otters cope with cold water across all the studies on this page, "
        "weighing their methods and evidence"
    )
    async with running_bot(fake, llm, tmp_path, guild, tiers_table=TIERS) as bot:
        general = guild.channel("general")
        inter = fake.inject_interaction(
            "config routing", {"page_reader": False}, user="admin", channel=general
        )
        await fake.wait_for(lambda: inter.original_message_id, what="the /config routing reply")
        fake.inject_interaction("research", {"task": task}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, name=None)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=20)
        await wait_idle(fake, bot)

    assert not [r for r in llm.requests if r["model"] == "gpt-4.1-nano"]
    seen = [m["content"] for r in llm.requests for m in r["messages"] if m["role"] == "tool"]
    assert seen and "Paragraph 0:" in seen[0]  # the page's own text, as fetch_url returned it
    assert not any("chars read by" in m.content for m in fake.messages(thread))
