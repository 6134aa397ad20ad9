"""The store commands an operator runs (`agentbot backup`, `restore`, `migrate-store`), through the
installed ``agentbot`` command with an explicit environment, against real SQLite files and a throwaway
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from bot.store import Database, GuildSettingsStore, SettingsSchema
from tests.fakes.postgres import PostgresServer
from tests.test_blackbox_operator import agentbot

SCHEMA = SettingsSchema(known_models=["gpt-4o-mini"], known_tools=["calculator"])


async def test_backup_and_restore_with_the_store_in_postgresql_refuse_instead_of_copying_a_stale_sqlite_file(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """After `migrate-store` the old SQLite file stays in DATA_DIR. `agentbot backup` with DATABASE_URL set
    used to copy that file and report success: a backup of the store as it was before the move, while
    every change since lived only in PostgreSQL. `restore` likewise "restored" into a file the bot no
    longer reads. Both now say that PostgreSQL is backed up with pg_dump, and write nothing."""
    data = tmp_path / "data"
    db = await Database.open(data / "agentbot.sqlite3")
    await GuildSettingsStore(db, SCHEMA).set(1, 2, "max_steps", 4)
    await db.close()
    url = await postgres.fresh_database()
    env = {"DATA_DIR": str(data), "MEMORY_ENABLED": "false", "DATABASE_URL": url}
    code, _, err = await agentbot(tmp_path, "migrate-store", env=env)
    assert code == 0, err

    code, out, err = await agentbot(tmp_path, "backup", str(tmp_path / "backup"), env=env)
    assert code != 0 and out == "", out
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-1500:]
    assert "DATABASE_URL" in err and "pg_dump" in err, err
    assert not (tmp_path / "backup").exists()

    plain = env | {"DATABASE_URL": ""}  # a SQLite backup, then restored while DATABASE_URL is set
    code, _, err = await agentbot(tmp_path, "backup", str(tmp_path / "sqlite-backup"), env=plain)
    assert code == 0, err
    before = (data / "agentbot.sqlite3").read_bytes()
    code, out, err = await agentbot(tmp_path, "restore", "--force", str(tmp_path / "sqlite-backup"), env=env)
    assert code != 0 and out == "", out
    assert "DATABASE_URL" in err and "pg_dump" in err, err
    assert (data / "agentbot.sqlite3").read_bytes() == before
    assert not (data / "agentbot.sqlite3.before-restore").exists()
