"""A turn that fails because PostgreSQL went away: its closing writes no longer fail one by one (each
logged with a traceback, about 4 s apiece on a busy machine, and then lost), and they are made once
PostgreSQL is back, so the session reads failed (with Retry) and the member's concurrency slot is free.
The real bot on the fake Discord and the worker's throwaway PostgreSQL, halted and resumed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.e2e.harness import running_bot
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.fakes.postgres import PostgresServer

CLOSED = "SELECT 1 FROM sessions WHERE status <> 'failed' UNION ALL SELECT 1 FROM active_sessions"
"""Anything not yet closed: the session not marked failed, or the member's concurrency slot still held."""


async def test_a_turn_failed_by_an_outage_says_it_once_and_is_closed_when_postgresql_is_back(
    fake: FakeDiscord,
    llm: FakeLLM,
    guild: FakeGuild,
    tmp_path: Path,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bot.store.ledger.UNREACHABLE_GIVE_UP", 0.3)  # the step's charge gives up (5 min)
    monkeypatch.setattr("bot.turn.log", structlog.get_logger("bot.turn"))
    calls: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> Reply:
        calls.append(body)
        if len(calls) == 1:
            postgres.halt()  # the outage starts while the first model call is answered
            return tool_call("current_time", {}, prompt_tokens=100, completion_tokens=20)
        return text("It is now.")

    llm.responder = respond
    url = await postgres.fresh_database()
    general = guild.channel("general")
    try:
        with structlog.testing.capture_logs() as logs:
            async with running_bot(fake, llm, tmp_path, guild, DATABASE_URL=url) as bot:
                fake.inject_interaction(
                    "research", {"task": "What time is it?"}, user="alice", channel=general
                )
                thread = await fake.wait_for_thread(parent=general)
                await fake.wait_for_message(thread, lambda m: "cannot be reached" in m.content, within=30)
                await asyncio.to_thread(postgres.resume)
                db = bot.services.db
                async with asyncio.timeout(30):  # a hang guard: the closing writes are made once it is back
                    while await db.fetchall(CLOSED):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                turns = [tuple(r) for r in await db.fetchall("SELECT status FROM turns")]
    finally:
        with contextlib.suppress(RuntimeError):  # already running
            postgres.resume()
    assert turns == [("error",)]
    said = [m.content for m in fake.messages(thread) if "database" in m.content]
    assert len(said) == 1 and "try again in a minute" in said[0], said  # once, by the turn's own note
    mine = [e for e in logs if e.get("logger") == "bot.turn" or e["event"].startswith("turn_")]
    assert [e["event"] for e in mine] == ["turn_failed", "turn_save_waiting", "turn_saved_after_outage"], mine
    assert "exc_info" not in mine[0] and "cannot be reached" in mine[0]["error"]  # one line, no traceback


async def test_the_pools_reconnection_tries_during_an_outage_are_one_line_each(
    postgres: PostgresServer,
) -> None:
    """asyncpg's pool re-opens its floor of connections after an outage and logged every failed try with
    a traceback (1 to 60 s apart, for the whole outage, in every process): now one line, the error named."""
    from bot.store.pg import PgDatabase

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    pool_log = logging.getLogger("asyncpg.pool")
    pool_log.addHandler(handler)
    db = await PgDatabase.open(await postgres.fresh_database())
    try:
        await asyncio.to_thread(postgres.halt)
        async with asyncio.timeout(30):  # a hang guard: the pool notices its lost connections and retries
            while not records:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        pool_log.removeHandler(handler)
        await asyncio.to_thread(postgres.resume)
        await db.close()
    said = records[0]
    assert said.exc_info is None and said.getMessage().startswith(
        "Failed to restore the pool connection floor"
    )
    assert "Connect" in said.getMessage(), said.getMessage()  # ConnectionRefusedError / CannotConnectNowError
