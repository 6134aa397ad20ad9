"""An operator deploying and scaling the bot for the first time, following README (Deploying, Scaling):
the commands as written, the scaled settings, ``agentbot migrate-store`` and ``doctor`` against a real
PostgreSQL set up a little differently from the test server's defaults. One throwaway PostgreSQL (the
worker's) for the file, each test a database of its own; commands run in-process (typer's runner), as
the process start is not what these tests are about.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.store import Database
from tests.fakes.postgres import PostgresServer


async def _foreign_database(postgres: PostgresServer, role: str) -> str:
    """A database owned by the server's admin, and a role of its own allowed to connect to it: on
    PostgreSQL 15 that role may not create tables in schema public (the default since 15)."""
    conn = await asyncpg.connect(postgres.url())
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        await conn.execute(f"CREATE DATABASE {role}_db")
    finally:
        await conn.close()
    return postgres.url(f"{role}_db").replace(f"{postgres.user}@", f"{role}@")


async def _sqlite_store(data: Path) -> None:
    async with await Database.open(data / "agentbot.sqlite3") as lite:
        await lite.write(
            "INSERT INTO guild_settings (guild_id, key, value, updated_at) VALUES (1, 'max_steps', '4', 0)"
        )


def test_migrate_store_into_a_database_its_user_may_not_write_names_the_to_option(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``migrate-store --to URL`` into a database the URL's user may not create tables in said "DATABASE_URL's
    user may not create tables there" while DATABASE_URL was not set at all: the operator was sent to fix
    a setting they never gave. The fix names ``--to``, where the URL came from."""
    data = tmp_path / "data"

    async def prepare() -> str:
        await _sqlite_store(data)
        return await _foreign_database(postgres, f"mover_{uuid.uuid4().hex[:8]}")

    url = asyncio.run(prepare())
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("MEMORY_ENABLED", "false")
    r = CliRunner().invoke(app, ["migrate-store", "--to", url])
    assert r.exit_code == 1, r.output
    said = r.output.strip()
    assert "permission denied for schema public" in said and "\n" not in said, said
    assert "--to's user may not create tables there" in said, said
    assert "DATABASE_URL" not in said, said
