"""An operator's first contact with agentbot at scale (fourth round), driven through the installed
``agentbot`` command: signals, store moves, deployment files and endpoint quirks. Each test failed before
the fix its commit names."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from bot.store.db import Database
from tests.test_blackbox_operator import AGENTBOT


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _agentbot(cwd: Path, *args: str, env: dict[str, str], within: float = 30) -> tuple[int, str, str]:
    """``agentbot ARGS`` that must end by itself within ``within`` seconds (killed and failed otherwise)."""
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "DATA_DIR": str(cwd), "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        *args,
        cwd=cwd,
        env=base | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError as timeout:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"agentbot {' '.join(args)} still running after {within} s: {err.decode()[-800:]}"
        ) from timeout
    return proc.returncode or 0, out.decode(), err.decode()


async def test_migrate_store_to_a_database_it_cannot_reach_says_so_and_exits(tmp_path: Path) -> None:
    # The error line was printed, then the command hung for good: the SQLite store it had opened first kept
    # its worker thread alive, so the operator's shell (or `docker compose run`) never got its prompt back.
    db = await Database.open(tmp_path / "agentbot.sqlite3")
    await db.close()
    url = f"postgresql://agentbot:pw@127.0.0.1:{_closed_port()}/agentbot"
    code, out, err = await _agentbot(
        tmp_path, "migrate-store", "--to", url, env={"MEMORY_ENABLED": "false"}, within=20
    )
    assert code == 1 and out == "" and "Traceback" not in err, err[-1500:]
    assert len(err.strip().splitlines()) == 1 and "cannot connect" in err, err
    assert ":pw@" not in err, err  # the password is never printed
