"""`agentbot migrate-store` as README's "Moving a store" has an operator run it when scaling out: the
SQLite store goes to PostgreSQL, and with ``CHROMA_HOST`` set (the Chroma server every shard process
shares) the embedded memory under DATA_DIR/memory goes to that server with it. Before, memory stayed
behind: the shard processes started with none, silently."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load_agent_settings
from agent.memory.chroma_store import ChromaMemory
from bot.store import Database, GuildSettingsStore, SettingsSchema
from bot.store.pg import PgDatabase
from tests.fakes.chroma_server import ChromaServer
from tests.fakes.postgres import PostgresServer
from tests.test_blackbox_operator import agentbot

SCHEMA = SettingsSchema(known_models=["gpt-4o-mini"], known_tools=["calculator"])
NOTES = {101: "The lab's sourdough starter is fed at 9 am.", 202: "Server two prefers metric units."}


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path / "chroma").start()
    yield server
    server.stop()


async def memories(data: Path, **env: str) -> dict[int, list[str]]:
    memory = ChromaMemory.from_settings(data / "memory", load_agent_settings(DATA_DIR=str(data), **env))
    await memory.open()
    try:
        return {g: [r.text async for r in memory.records(g)] for g in NOTES}
    finally:
        await memory.close()


async def test_migrate_store_moves_embedded_memory_to_the_chroma_server_once(
    postgres: PostgresServer, chroma: ChromaServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    db = await Database.open(data / "agentbot.sqlite3")
    await GuildSettingsStore(db, SCHEMA).set(101, 2, "max_steps", 4)
    await db.close()
    embedded = ChromaMemory.from_settings(data / "memory", load_agent_settings(DATA_DIR=str(data)))
    await embedded.open()
    for guild, note in NOTES.items():
        await embedded.store(guild, note, author="alice")
    await embedded.close()

    url = await postgres.fresh_database("move")
    server = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(chroma.port)}
    env = {"DATA_DIR": str(data), "DATABASE_URL": url, **server}
    code, out, err = await agentbot(tmp_path, "migrate-store", env=env)
    assert code == 0, err
    assert "guild_settings 1" in out and "memory 2 rows in " in out, out
    client = ChromaMemory.from_settings(None, load_agent_settings(**server)).connect()
    assert sorted(d for c in client.list_collections() for d in c.get()["documents"]) == sorted(
        NOTES.values()
    )

    code, out, err = await agentbot(tmp_path, "migrate-store", env=env)  # run twice by mistake
    assert code == 1 and "already holds" in err, err
    assert await memories(data, **server) == {g: [n] for g, n in NOTES.items()}  # nothing twice


async def test_migrate_store_refuses_while_the_bot_has_the_store_open(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """README: stop the bot first. Run while it ran, the move copied what the store held at that
    moment and said "moved": everything the bot wrote afterwards stayed in a file it no longer reads."""
    data = tmp_path / "data"
    running = await Database.open(data / "agentbot.sqlite3")  # as `agentbot run` holds it
    url = await postgres.fresh_database("busy")
    env = {"DATA_DIR": str(data), "DATABASE_URL": url, "MEMORY_ENABLED": "false"}
    try:
        await GuildSettingsStore(running, SCHEMA).set(101, 2, "max_steps", 4)
        code, out, err = await agentbot(tmp_path, "migrate-store", env=env)
        assert code == 1 and out == "", out
        assert err.strip().endswith(
            "agentbot.sqlite3 is open in another process (a running bot?): stop the bot, then move it"
        ), err
    finally:
        await running.close()
    pg = await PgDatabase.open(url)
    try:  # nothing was moved
        assert await pg.fetchall("SELECT * FROM guild_settings") == []
    finally:
        await pg.close()
