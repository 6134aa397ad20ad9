"""What a member reads when a turn stops on the bot's database: PostgreSQL down longer than a charge waits
for it (a restart, an outage) is said as such, not as SQLite's "locked or out of space" (real errors from
the throwaway PostgreSQL and a real SQLite file)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agent.events import Cost, Usage
from bot.limits import Limits
from bot.notes import TurnFailed
from bot.store import QuotaStore, StoreUnavailable
from bot.store.pg import PgDatabase
from tests.fakes.postgres import PostgresServer


async def test_a_turn_stopped_by_an_unreachable_database_says_so_and_sqlites_own_errors_keep_their_words(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.store.ledger.UNREACHABLE_GIVE_UP", 0.1)  # 5 minutes in production
    db = await PgDatabase.open(await postgres.fresh_database())
    budget = QuotaStore(db, None, Limits()).budget(1, 7, (), "s")
    token = await budget.reserve("m", Usage(10, 10), None)
    await asyncio.to_thread(postgres.halt)
    try:  # the step's charge: what a run meets when PostgreSQL stays down
        with pytest.raises(StoreUnavailable) as down:
            await budget.settle(token, "m", "openai", Usage(10, 10), Cost(0.0))
    finally:
        await asyncio.to_thread(postgres.resume)
        await db.close()
    said = TurnFailed.of(down.value, "e1").text
    assert "cannot be reached" in said and "try again" in said and "locked" not in said, said

    path = tmp_path / "bot.db"
    holder, writer = sqlite3.connect(path), sqlite3.connect(path, timeout=0)
    holder.execute("CREATE TABLE t (x TEXT)")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked") as locked:
        writer.execute("INSERT INTO t VALUES ('x')")
    holder.rollback()
    pages = holder.execute("PRAGMA page_count").fetchone()[0]
    holder.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError, match="full") as full:
        holder.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    holder.close()
    writer.close()
    for e in (locked.value, full.value):
        assert "refused a write (locked or out of space?)" in TurnFailed.of(e, "e2").text
