"""README's Backups and Scaling sections together: once ``DATABASE_URL`` points at PostgreSQL, the store
is there ("Backups of a PostgreSQL store are pg_dump's job"), and the SQLite file ``migrate-store`` left in
``DATA_DIR`` is stale. ``agentbot backup`` / ``restore`` must say so instead of copying that stale file
(a backup that restores last month) or writing one the bot never reads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bot.store import Database
from tests.warm_agentbot import agentbot_process

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))
# Never contacted: the commands must refuse before touching any store.
PG_URL = "postgresql://agentbot:s3cretpw@127.0.0.1:9/agentbot"


async def agentbot(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": PG_URL,
        "MEMORY_ENABLED": "false",
    }
    code, out, err = await agentbot_process(*args, cwd=tmp_path, env=env)
    return code, out.decode(), err.decode()


@pytest.mark.parametrize("command", ["backup", "restore"])
async def test_backup_and_restore_with_a_postgresql_store_name_database_url_and_copy_nothing(
    command: str, tmp_path: Path
) -> None:
    # What `agentbot migrate-store` leaves behind: the old SQLite file, no longer the bot's store.
    stale = tmp_path / "data" / "agentbot.sqlite3"
    await (await Database.open(stale)).close()
    before = stale.read_bytes()
    target = tmp_path / "bk"
    if command == "restore":  # a backup made earlier, from the SQLite days
        target.mkdir()
    code, out, err = await agentbot(tmp_path, command, str(target))
    assert code == 2, (code, out, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "DATABASE_URL" in err and "pg_dump" in err
    assert "s3cretpw" not in err
    assert not (target / "manifest.json").exists() and stale.read_bytes() == before
