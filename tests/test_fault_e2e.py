"""Faults injected around a live bot: each run still completes (or fails clearly) and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, error, text, tool_call


async def research(fake: FakeDiscord, guild: FakeGuild, task: str):
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": task}, user="alice", channel=general)
    return await fake.wait_for_thread(parent=general)


@pytest.mark.usefixtures("fast_write_window")
async def test_fault_model_gone_falls_back_to_the_next_model_and_says_so(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:

    def respond(body: dict) -> Reply:
        if body["model"] == "primary-model":
            return error(404, "The model `primary-model` does not exist")
        return text("Answer from the backup.")

    llm.responder = respond
    async with running_bot(fake, llm, tmp_path, guild, models=("primary-model", "backup-model")) as bot:
        thread = await research(fake, guild, "Anything")
        await fake.wait_for_message(thread, lambda m: m.content == "Answer from the backup.", within=20)
        await wait_idle(fake, bot)
        contents = "\n".join(m.content for m in fake.messages(thread))
    assert "switched from primary-model to backup-model" in contents
    assert "because openai does not know the model primary-model" in contents  # the reason is shown
    assert [r["model"] for r in llm.requests][-1] == "backup-model"


@pytest.mark.usefixtures("fast_write_window")
async def test_fault_discord_5xx_on_sends_loses_nothing_and_keeps_order(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(Reply(tool_calls=[("calculator", '{"expression": "3*3"}')], delay=0.5), text("Nine."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        thread = await research(fake, guild, "3*3?")
        await fake.wait_for_message(thread)  # the header
        fake.inject_error("POST", f"/channels/{thread.id}/messages", status=502, count=2)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=40)
        await wait_idle(fake, bot, within=40)
        contents = [m.content for m in fake.messages(thread)]
    step = next(i for i, c in enumerate(contents) if "calculator" in c)
    assert contents.index("Nine.") > step and "tokens" in contents[-1]
    assert fake.duplicates == []


@pytest.mark.usefixtures("fast_write_window")
async def test_fault_gateway_drop_resumes_and_the_run_goes_on(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(tool_call("calculator", {"expression": "5+5"}, delay=0.6), text("Ten."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        thread = await research(fake, guild, "5+5?")
        await fake.wait_for_message(thread)
        await fake.drop_connection()
        await fake.wait_for_message(thread, lambda m: m.content == "Ten.", within=20)
        await fake.wait_for(lambda: fake.resume_count >= 1, what="RESUME", within=20)
        fake.inject_message(thread, "alice", "thanks")  # the resumed gateway still delivers follow-ups
        llm.script(text("You're welcome."))
        await fake.wait_for_message(thread, lambda m: m.content == "You're welcome.", within=20)
        await wait_idle(fake, bot)
    assert fake.identify_count == 1


@pytest.mark.usefixtures("fast_write_window")
async def test_fault_chroma_unavailable_runs_without_memory_and_says_so(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", "9")  # nothing listens there
    monkeypatch.setenv("MEMORY_EMBEDDING", "openai")  # no local model to load for this test
    monkeypatch.setenv("MEMORY_EMBEDDING_URL", llm.base_url)
    monkeypatch.setenv("MEMORY_EMBEDDING_MODEL", "none")
    llm.script(text("Answered without memory."))
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=True) as bot:
        assert bot.services.memory is None and bot.services.memory_error
        thread = await research(fake, guild, "Remember this?")
        await fake.wait_for_message(thread, lambda m: m.content == "Answered without memory.", within=15)
        await wait_idle(fake, bot)
        header = fake.messages(thread)[0].content
    assert "memory unavailable" in header
    assert "recall" not in [t["function"]["name"] for t in llm.requests[0].get("tools", [])]


@pytest.mark.usefixtures("fast_write_window")
async def test_fault_health_endpoint_reports_gateway_and_database(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with running_bot(fake, llm, tmp_path, guild, HEALTH_PORT=port) as bot, httpx.AsyncClient() as http:
        ok = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert ok.status_code == 200 and ok.json()["discord"] == "connected" and ok.json()["database"] == "ok"
        await bot.services.db.close()  # the database goes away
        bad = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert bad.status_code == 503 and bad.json()["database"].startswith("error")


async def test_fault_database_refusing_writes_is_said_and_the_bot_carries_on(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Answer while the disk is sick.", delay=0.8), text("Healthy again."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        thread = await research(fake, guild, "Anything")
        await fake.wait_for(lambda: len(llm.requests) == 1, what="the model call")
        db = bot.services.db
        async with db.lock:  # from now on SQLite refuses every write on the bot's writer connection
            await db.conn.execute("PRAGMA query_only = 1")
        note = await fake.wait_for_message(
            thread, lambda m: "database refused a write" in m.content, within=15
        )
        assert "error id" in note.content
        await fake.wait_for_message(thread, lambda m: m.content.startswith("This turn failed"), within=15)
        await wait_idle(fake, bot)
        async with db.lock:
            await db.conn.execute("PRAGMA query_only = 0")
        fake.inject_message(thread, "alice", "again?")
        await fake.wait_for_message(thread, lambda m: m.content == "Healthy again.", within=15)
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None
        history = await bot.services.sessions.history(session.id)
    # The failed turn left nothing half-written; the later turn is whole.
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "again?"),
        ("assistant", "Healthy again."),
    ]


@pytest.mark.usefixtures("fast_write_window")
async def test_fault_provider_outage_is_waited_out_and_the_run_finishes(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(error(503, "upstream overloaded", headers={"Retry-After": "0.2"}), text("Back and answering."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        thread = await research(fake, guild, "Are you there?")
        await fake.wait_for_message(thread, lambda m: m.content == "Back and answering.", within=20)
        await wait_idle(fake, bot)
        contents = "\n".join(m.content for m in fake.messages(thread))
    assert "↻ retrying model" in contents and "HTTP 503" in contents
    assert len(llm.requests) == 2


async def test_fault_disk_full_is_said_and_nothing_half_written(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    big = "A long answer. " * 3000  # needs new database pages to store
    llm.script(text(big, delay=0.8), text("Room again."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        thread = await research(fake, guild, "Fill the disk")
        await fake.wait_for(lambda: len(llm.requests) == 1, what="the model call")
        db = bot.services.db
        async with db.lock:  # SQLite now answers SQLITE_FULL ("database or disk is full") to growth
            pages = (await (await db.conn.execute("PRAGMA page_count")).fetchone())[0]
            await db.conn.execute(f"PRAGMA max_page_count = {pages}")
        await fake.wait_for_message(
            thread, lambda m: "could not be saved" in m.content or "refused a write" in m.content, within=20
        )
        await wait_idle(fake, bot)
        async with db.lock:
            await db.conn.execute("PRAGMA max_page_count = 1073741823")
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None
        history = await bot.services.sessions.history(session.id)
        assert all(m["content"] != big for m in history) and len(history) in (0, 2)  # whole turns or nothing
        fake.inject_message(thread, "alice", "and now?")
        await fake.wait_for_message(thread, lambda m: m.content == "Room again.", within=15)
        await wait_idle(fake, bot)
