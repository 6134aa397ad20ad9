"""The database file: created from empty, upgraded from the previous schema, refused when too new."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.events import Cost, Usage
from bot.limits import Limits
from bot.store import (
    MIGRATIONS,
    Database,
    DatabaseTooNew,
    GuildSettingsStore,
    QuotaStore,
    SessionRecord,
    SessionStore,
    SettingsSchema,
    StoreError,
)

SCHEMA = SettingsSchema(known_models=["gpt-4o-mini", "llama-3.1-8b"], known_tools=["web_search", "fetch"])


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_empty_file_is_created_at_the_newest_version_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "data" / "agentbot.sqlite3"  # the data directory does not exist yet
    async with await Database.open(path) as db:
        assert db.schema_version == len(MIGRATIONS) == 8
        (mode,) = await db.fetchone("PRAGMA journal_mode")  # type: ignore[misc]
        assert mode == "wal"
        rows = await db.conn.execute_fetchall("PRAGMA foreign_keys")
        assert next(iter(rows))[0] == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert {"sessions", "messages", "turns", "usage_ledger", "reservations", "audit_log"} <= tables(path)


async def test_a_v1_file_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    async with await Database.open(path, migrations=MIGRATIONS[:1]) as db:
        assert db.schema_version == 1
        sessions = SessionStore(db)
        await sessions.create(
            SessionRecord(id="s1", guild_id=1, channel_id=2, user_id=3, task="why", tier="fast", model="m")
        )
        await sessions.append_messages("s1", [{"role": "user", "content": "why"}])
        # a v1 file has settings but no audit log yet
        await db.write(
            "INSERT INTO guild_settings (guild_id, key, value, updated_at) VALUES (1, 'max_steps', '7', 0)"
        )
    assert "audit_log" not in tables(path)

    async with await Database.open(path) as db:
        assert db.schema_version == len(MIGRATIONS)
        sessions = SessionStore(db)
        assert (await sessions.get("s1")).task == "why"  # type: ignore[union-attr]
        assert await sessions.history("s1") == [{"role": "user", "content": "why"}]
        settings = GuildSettingsStore(db, SCHEMA)
        assert (await settings.get(1)).max_steps == 7
        await settings.set(1, 42, "max_steps", 9)  # the v2 audit table works on the upgraded file
        changes = await settings.history(1)
        assert [(e.key, e.old, e.new, e.actor_id) for e in changes] == [("max_steps", 7, 9, 42)]


async def test_a_v2_file_keeps_its_usage_and_then_counts_reasoning_tokens_per_model(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    limits = Limits(None, None, None, None, None)
    async with await Database.open(path, migrations=MIGRATIONS[:2]) as db:
        month = datetime.now(UTC).strftime("%Y-%m")  # a call settled by the version before this one
        await db.write(
            "INSERT INTO usage_ledger (guild_id, user_id, provider, model, day, month, prompt_tokens,"
            " completion_tokens, cached_tokens, cost_nusd, cost_known, at)"
            " VALUES (1, 7, 'openai', 'gpt-5', ?, ?, 1000, 300, 0, 4000000, 1, 0)",
            (f"{month}-01", month),
        )

    async with await Database.open(path) as db:
        assert db.schema_version == len(MIGRATIONS)
        store = QuotaStore(db, None, limits)
        await store.budget(1, 7, ()).settle(None, "gpt-5", "openai", Usage(2000, 900, 0, 1, 700), Cost(0.01))
        await store.budget(1, 7, ()).settle(
            None, "gpt-4.1-nano", "openai", Usage(500, 50, 0, 1), Cost(0.0001)
        )
        await store.flush()
        server = await store.server_usage(1)
    by_model = {m.model: (m.calls, m.completion_tokens, m.reasoning_tokens) for m in server.models}
    # the call made before the upgrade keeps its counts; reasoning is known from the upgrade on
    assert by_model == {"gpt-5": (2, 1200, 700), "gpt-4.1-nano": (1, 50, 0)}
    assert server.tokens == 1000 + 300 + 2000 + 900 + 500 + 50


async def test_a_file_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    async with await Database.open(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 2}")
    before = path.read_bytes()
    with pytest.raises(DatabaseTooNew) as err:
        await Database.open(path)
    message = str(err.value)
    newer, known = f"schema version {len(MIGRATIONS) + 2}", f"up to version {len(MIGRATIONS)}"
    assert newer in message and known in message and "newer agentbot" in message
    assert path.read_bytes() == before


async def test_a_file_that_is_not_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    path.write_text("these are my notes, not a database" * 100)
    with pytest.raises(StoreError, match="is not an agentbot database"):
        await Database.open(path)


async def test_writes_made_before_close_are_there_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    async with await Database.open(path) as db:
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO guild_settings (guild_id, key, value, updated_at) VALUES (5, 'persona', '\"hi\"', 0)"
            )
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute(
                    "INSERT INTO guild_settings (guild_id, key, value, updated_at) VALUES (5, 'max_steps', '3', 0)"
                )
                raise RuntimeError("handler failed half-way")
    async with await Database.open(path) as db:
        rows = await db.fetchall("SELECT key FROM guild_settings WHERE guild_id = 5")
        assert [r[0] for r in rows] == ["persona"]  # the failed transaction left nothing behind
