"""``agentbot doctor`` against a scaled set-up (README: Scaling): it checks the store the bot would
open. With ``DATABASE_URL`` it used to open DATA_DIR's SQLite file and say "ok", so an operator with an
unreachable PostgreSQL, or a wrong database name, was told the database was fine."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest

from bot.doctor import run_doctor
from bot.store import Database
from bot.store.copy import copy_sqlite_to_postgres
from tests.fakes.postgres import PostgresServer


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_doctor_checks_the_postgresql_store_database_url_names(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "DATA_DIR": str(tmp_path),
        "MEMORY_ENABLED": "false",
        "ROUTER_CLASSIFIER": "heuristic",
        "PYTHON_SANDBOX": "off",
        "OPENAI_API_KEY": "sk-doctor-scale-0001",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{_closed_port()}/v1",
    }.items():
        monkeypatch.setenv(key, value)

    monkeypatch.setenv("DATABASE_URL", f"postgresql://agentbot:s3cret@127.0.0.1:{_closed_port()}/agentbot")
    checks = await run_doctor()
    database = next((c for c in checks if c.name == "database"), checks[0])
    assert not database.ok, database.detail
    assert database.detail.startswith("DATABASE_URL: cannot connect to"), database.detail
    assert "s3cret" not in database.detail
    assert not (tmp_path / "agentbot.sqlite3").exists()  # the SQLite file is not the store here

    monkeypatch.setenv("DATABASE_URL", postgres.url("no_such_database"))
    database = next(c for c in await run_doctor() if c.name == "database")
    assert not database.ok and 'database "no_such_database" does not exist' in database.detail

    url = await postgres.fresh_database("doctor")
    monkeypatch.setenv("DATABASE_URL", url)
    database = next(c for c in await run_doctor() if c.name == "database")
    assert database.ok and "127.0.0.1" in database.detail, database.detail
    conn = await asyncpg.connect(url)
    try:  # it reached that database: the schema is there
        assert await conn.fetchval("SELECT max(version) FROM schema_version") >= 1
    finally:
        await conn.close()
    # ...and left it empty: `agentbot migrate-store` still takes it after a doctor run.
    await (await Database.open(tmp_path / "agentbot.sqlite3")).close()
    assert (await copy_sqlite_to_postgres(tmp_path / "agentbot.sqlite3", url)).summary() == "no rows"
