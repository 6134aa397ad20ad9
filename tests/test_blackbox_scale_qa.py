"""The scaled deployment (README: Scaling) as an operator meets it when its parts are set up a little
differently from the test servers: PostgreSQL short of connections, read-only (from the start, or turned
so while the bot runs), a URL with libpq's options; ``agentbot migrate-store`` with a long history or an
embedded memory left behind; a Chroma server that answers only after the bot started. One throwaway
PostgreSQL (the worker's) for the whole file, each test a database of its own; everything in-process
except the Chroma server, which is the product path there.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import tracemalloc
from pathlib import Path

import asyncpg
import pytest
import structlog
from aiohttp import web
from typer.testing import CliRunner

import bot.services
from agent.config import load_agent_settings
from agent.events import Cost, Usage
from agent.memory.chroma_store import ChromaMemory
from bot.cli import app
from bot.config import load_bot_settings, postgres_url_problem
from bot.limits import Limits
from bot.services import build_services
from bot.store import Database, GuildSettingsStore, QuotaStore, SettingsSchema, StoreError
from bot.store.copy import copy_sqlite_to_postgres
from bot.store.pg import PgDatabase
from bot.store.shard_claim import ShardClaim
from tests.fakes.chroma_server import ChromaServer
from tests.fakes.postgres import PostgresServer
from tests.fakes.served import served


async def _role_database(postgres: PostgresServer, role: str, options: str = "") -> str:
    """A database owned by a role of its own (``options``: ``CREATE ROLE`` options); its URL."""
    conn = await asyncpg.connect(postgres.url())
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN {options}")
        await conn.execute(f"CREATE DATABASE {role} OWNER {role}")
    finally:
        await conn.close()
    return postgres.url(role).replace(f"{postgres.user}@", f"{role}@")


async def test_a_server_out_of_connections_makes_calls_wait_for_the_processs_own(
    postgres: PostgresServer,
) -> None:
    """PostgreSQL with no room for another connection (here the role's CONNECTION LIMIT 3, one taken by
    another process; a small ``max_connections`` is the same error): every store call that needed a
    connection beyond the two the process held failed with "TooManyConnectionsError: sorry, too many
    clients already" (members read "Something went wrong"), 7 of 8 here. Now they wait for one of the
    process's own connections, and one warning line names the setting."""
    url = await _role_database(postgres, "qa_few", "CONNECTION LIMIT 3")
    db = await PgDatabase.open(url)
    other = await asyncpg.connect(url)  # another shard process's connection
    quotas = QuotaStore(db, None, Limits(tokens_per_day=100_000))
    try:

        async def member(i: int) -> int:
            await db.fetchall("SELECT pg_sleep(0.05)")  # a command's read, holding its connection a moment
            budget = quotas.budget(1, 7, (), f"s{i}")
            token = await budget.reserve("m", Usage(100, 10), None)
            await budget.settle(token, "m", "openai", Usage(100, 10), Cost(0.0))
            await db.write("INSERT INTO schema_version VALUES (?)", (1000 + i,))
            return i

        with structlog.testing.capture_logs() as logs:
            done = await asyncio.gather(*(member(i) for i in range(8)), return_exceptions=True)
        await quotas.flush()
        assert done == list(range(8)), done
        rows = await db.fetchall("SELECT tokens FROM usage_daily WHERE guild_id = 1 AND user_id = 7")
        assert rows[0][0] == 8 * 110  # every charge written once
        warned = [e for e in logs if e["event"] == "postgresql_out_of_connections"]
        assert len(warned) == 1 and "max_connections" in warned[0]["fix"], logs
        # One more shard process now finds no room at all: its start-up line said only "sorry, too
        # many clients already" (here the role's words), naming nothing to change.
        for start in (PgDatabase.open(url), ShardClaim.take(url, 2, [1])):
            with pytest.raises(StoreError) as e:
                await start
            said = str(e.value)
            assert said.startswith("DATABASE_URL: ") and "raise its max_connections" in said, said
    finally:
        await other.close()
        await db.close()


async def test_a_read_only_database_url_is_named_as_such_not_as_a_failed_upgrade(
    postgres: PostgresServer,
) -> None:
    """DATABASE_URL pointing at a standby replica, or at a server or role with default_transaction_read_only
    on: start-up said "Upgrading ... to schema version 1 (...) failed: cannot execute CREATE TABLE in a
    read-only transaction. The database is still at version 0", of a database at the newest version,
    naming neither the setting nor the fix."""
    url = await _role_database(postgres, "qa_ro")
    await (await PgDatabase.open(url)).close()  # the bot ran here before
    conn = await asyncpg.connect(postgres.url())
    await conn.execute("ALTER ROLE qa_ro SET default_transaction_read_only = on")
    await conn.close()
    with pytest.raises(StoreError) as e:
        await PgDatabase.open(url)
    said = str(e.value)
    assert said.startswith("DATABASE_URL: ") and "is read-only" in said and "primary" in said, said
    assert "version 0" not in said and "\n" not in said


async def test_migrate_store_moves_a_large_history_in_batches_not_whole_tables(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """A store with a long history: migrate-store read each table whole into memory before sending it;
    moving 12 MB of conversation peaked at 14.1 MB of Python memory (a year's store needs more than a small
    host has, and the move is killed). Now it reads and sends about 1 MB at a time (peak 2.9 MB);
    everything arrives, in one transaction as before."""
    data = tmp_path / "data"
    async with await Database.open(data / "agentbot.sqlite3") as lite:
        await lite.write(
            "INSERT INTO sessions (id, guild_id, channel_id, user_id, task, tier, model, status, created_at,"
            " updated_at) VALUES ('s1', 1, 2, 3, 'long', 'simple', 'm', 'done', 0, 0)"
        )
        page = json.dumps({"role": "tool", "content": "x" * 8000})
        await lite.write_many(
            [
                (
                    "INSERT INTO messages (session_id, seq, data) VALUES ('s1', ?, ?)",
                    [(i, page) for i in range(1500)],
                )
            ]
        )
    url = await postgres.fresh_database()
    tracemalloc.start()
    try:
        report = await copy_sqlite_to_postgres(data / "agentbot.sqlite3", url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.rows["messages"] == 1500
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT sum(length(data)) FROM messages") == 1500 * len(page)
    finally:
        await conn.close()
    assert peak < 5_000_000, f"the move held {peak / 1e6:.1f} MB at once for 12 MB of history"


def test_migrate_store_without_chroma_host_says_the_embedded_memory_stays(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: memory moves with the store only when CHROMA_HOST is set. Without it migrate-store said
    "moved guild_settings 1; set DATABASE_URL ..." and nothing of the memory in DATA_DIR/memory, so shard
    processes were started on a Chroma server without it."""
    data = tmp_path / "data"

    async def prepare() -> str:
        async with await Database.open(data / "agentbot.sqlite3") as lite:
            await lite.write(
                "INSERT INTO guild_settings (guild_id, key, value, updated_at) VALUES (1, 'max_steps', '4', 0)"
            )
        memory = ChromaMemory.from_settings(data / "memory", load_agent_settings(DATA_DIR=str(data)))
        client = memory.connect()  # an embedded memory, as a bot with MEMORY_ENABLED leaves it
        client.get_or_create_collection("agentbot_notes", embedding_function=None)
        client.close()
        return await postgres.fresh_database("keep")

    url = asyncio.run(prepare())
    monkeypatch.setenv("DATA_DIR", str(data))
    r = CliRunner().invoke(app, ["migrate-store", "--to", url])
    assert r.exit_code == 0, r.output
    assert "moved guild_settings 1" in r.stdout, r.stdout
    assert f"memory stays in {data / 'memory'} (set CHROMA_HOST" in r.stdout, r.stdout


def _embedding_app() -> web.Application:
    """A remote embedding (MEMORY_EMBEDDING=openai): no model to load in the test."""

    async def embed(request: web.Request) -> web.Response:
        texts = (await request.json())["input"]
        return web.json_response({"data": [{"index": i, "embedding": [1.0, 0.5]} for i in range(len(texts))]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embed)
    return app


async def test_a_process_started_before_its_chroma_server_answers_gets_its_memory_once_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard process that starts while the Chroma server is down or still starting (a host's reboot
    starts containers in any order; compose's depends_on holds only for `up`) said "memory unavailable"
    and ran without memory until it was restarted, though the server answered seconds later: its servers
    got no recall and stored nothing. Now it opens the memory again every MEMORY_RETRY seconds (30 s; a
    fraction here) and uses it once it opens, saying so in one line."""

    chroma = ChromaServer(tmp_path / "chroma")  # its port, not yet answering
    monkeypatch.setenv("OPENAI_API_KEY", "sk-scale-qa-0001")
    monkeypatch.setattr(bot.services, "MEMORY_RETRY", 0.2, raising=False)
    monkeypatch.setattr(bot.services, "log", structlog.get_logger("bot.services"))
    async with served(_embedding_app()) as base:
        agent = load_agent_settings(
            DATA_DIR=str(tmp_path / "data"),
            PYTHON_SANDBOX="off",
            ROUTER_CLASSIFIER="heuristic",
            CHROMA_HOST="127.0.0.1",
            CHROMA_PORT=str(chroma.port),
            MEMORY_EMBEDDING="openai",
            MEMORY_EMBEDDING_URL=f"{base}/v1",
            MEMORY_EMBEDDING_MODEL="e",
        )
        with structlog.testing.capture_logs() as logs:
            sv = await build_services(agent, load_bot_settings(MEMORY_ENABLED=True), serving=False)
            try:
                assert sv.memory is None and "could not be opened" in str(sv.memory_error)
                await asyncio.to_thread(chroma.start)
                retry = getattr(sv, "memory_retry", None)
                assert retry is not None, "the process never opens its memory again"
                async with asyncio.timeout(60):
                    await retry
                assert sv.memory is not None and sv.memory_error is None
                await sv.memory.store(101, "The starter is fed at 9 am.", author="alice")
                assert [r.text async for r in sv.memory.records(101)] == ["The starter is fed at 9 am."]
            finally:
                await sv.close()
                chroma.stop()
    said = [e["event"] for e in logs if e["event"].startswith("memory_") and e["log_level"] != "debug"]
    assert said == ["memory_unavailable", "memory_available"], logs


async def test_a_database_url_with_libpqs_connect_timeout_works_and_other_libpq_options_are_named(
    postgres: PostgresServer,
) -> None:
    """``?connect_timeout=10`` (libpq's, in many operators' URLs and providers' examples) stopped start-up:
    'cannot connect ...: unrecognized configuration parameter "connect_timeout"' (asyncpg sends what it
    does not know to the server as a setting). It is now the connection timeout, for the store, the
    shard claim and the settings listener; libpq's options asyncpg cannot take are named before any
    connection is tried."""
    url = await postgres.fresh_database("opts") + "?connect_timeout=5&application_name=shard0"
    assert postgres_url_problem(url) is None
    db = await PgDatabase.open(url)
    claim = await ShardClaim.take(url, 2, [1])
    try:
        names = await db.fetchall(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        )
        assert {r[0] for r in names} == {"shard0"}
    finally:
        await claim.close()
        await db.close()
    assert postgres_url_problem(url + "&keepalives_idle=30") == (
        "keepalives_idle= is a libpq option the bot's driver (asyncpg) does not take: remove it"
    )
    assert (
        postgres_url_problem(url.replace("=5", "=soon")) == "connect_timeout=soon is not a number of seconds"
    )


async def test_a_database_turned_read_only_while_the_bot_runs_is_a_refused_write(
    postgres: PostgresServer,
) -> None:
    """A server that turns read-only at run time (managed PostgreSQL sets default_transaction_read_only
    when its storage is nearly full; a standby after a failover): every command that wrote said
    "Something went wrong" with a traceback, and a run's charge failed with ReadOnlySQLTransactionError.
    Both are now what the bot says of SQLite's full disk: "The bot's database refused a write (out of
    space or locked?), so nothing was done. Please tell an admin" (a sqlite3.OperationalError)."""
    url = await _role_database(postgres, "qa_full")
    db = await PgDatabase.open(url)
    quotas = QuotaStore(db, None, Limits(tokens_per_day=100_000))
    settings = GuildSettingsStore(db, SettingsSchema(known_models=["m"], known_tools=[]))
    try:
        conn = await asyncpg.connect(postgres.url())
        await conn.execute("ALTER DATABASE qa_full SET default_transaction_read_only = on")
        await conn.close()
        await db.pool.expire_connections()  # a reload reaches open sessions too; here, new ones
        with pytest.raises(sqlite3.OperationalError, match="read-only"):
            await settings.set(101, 2, "max_steps", 4)
        with pytest.raises(sqlite3.OperationalError, match="read-only"):
            await quotas.budget(101, 7, (), "s1").reserve("m", Usage(100, 10), None)
    finally:
        await db.close()


async def test_an_embedding_endpoint_that_answers_after_start_up_gives_the_embedded_memory_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with the embedded store and MEMORY_EMBEDDING=openai: an embedding endpoint (an Ollama
    container, say) that answered only after the bot started left the bot without memory until restart."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-scale-qa-0002")
    monkeypatch.setattr(bot.services, "MEMORY_RETRY", 0.2, raising=False)
    agent = load_agent_settings(
        DATA_DIR=str(tmp_path / "data"),
        PYTHON_SANDBOX="off",
        ROUTER_CLASSIFIER="heuristic",
        MEMORY_EMBEDDING="openai",
        MEMORY_EMBEDDING_URL=f"http://127.0.0.1:{port}/v1",
        MEMORY_EMBEDDING_MODEL="e",
    )
    sv = await build_services(agent, load_bot_settings(MEMORY_ENABLED=True), serving=False)
    runner = web.AppRunner(_embedding_app(), access_log=None)
    try:
        assert sv.memory is None and "could not be opened" in str(sv.memory_error)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()  # the endpoint comes up
        retry = getattr(sv, "memory_retry", None)
        assert retry is not None, "the process never opens its memory again"
        async with asyncio.timeout(60):
            await retry
        assert sv.memory is not None and sv.memory_error is None
    finally:
        await sv.close()
        await runner.cleanup()
