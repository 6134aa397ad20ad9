"""``agentbot backup`` / ``agentbot restore`` as an operator runs them: real processes, a database being
written while the copy is taken, a real embedded Chroma with the offline MiniLM model."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

from agent.embeddings.minilm import MiniLMEmbedding
from agent.memory import ChromaMemory, NewMemory
from bot.store import Database
from tests.warm_agentbot import agentbot_process

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))
GUILD_A, GUILD_B = "100000000000000001", "100000000000000002"


async def cli(tmp_path: Path, data_dir: Path, *args: str, memory: bool = False) -> tuple[int, str, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(data_dir),
        "MEMORY_ENABLED": "true" if memory else "false",
    }
    code, out, err = await agentbot_process(*args, cwd=tmp_path, env=env, within=120)
    return code, out.decode(), err.decode()


def count_rows(db_file: Path) -> tuple[int, str, int]:
    conn = sqlite3.connect(db_file)
    try:
        n = conn.execute("SELECT count(*) FROM backup_probe").fetchone()[0]
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return n, check, version


async def test_backup_while_the_bot_writes_is_consistent_and_restores(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = await Database.open(data / "agentbot.sqlite3")
    await db.write("CREATE TABLE backup_probe (batch INTEGER, i INTEGER)")
    stop, warmed_up = asyncio.Event(), asyncio.Event()
    batches = 0

    async def writer() -> None:  # the running bot: whole transactions of 10 rows, non-stop
        nonlocal batches
        while not stop.is_set():
            async with db.transaction() as conn:
                await conn.executemany(
                    "INSERT INTO backup_probe VALUES (?, ?)", [(batches, i) for i in range(10)]
                )
            batches += 1
            if batches == 50:
                warmed_up.set()
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        await warmed_up.wait()
        code, out, err = await cli(tmp_path, data, "backup", str(tmp_path / "bk"))
    finally:
        stop.set()
        await task
    written = batches
    await db.close()
    assert code == 0, err
    assert out.startswith("backed up ") and "schema v" in out and err == ""
    n, check, version = count_rows(tmp_path / "bk" / "agentbot.sqlite3")
    assert check == "ok" and version == db.schema_version
    assert n % 10 == 0 and 500 <= n <= written * 10  # whole transactions only, taken mid-stream
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["schema_version"] == version and manifest["memory"] is None

    fresh = tmp_path / "fresh"
    code, out, err = await cli(tmp_path, fresh, "restore", str(tmp_path / "bk"))
    assert code == 0, err
    assert count_rows(fresh / "agentbot.sqlite3")[0] == n
    reopened = await Database.open(fresh / "agentbot.sqlite3")  # the bot starts on the restored file
    await reopened.close()

    # A second restore onto a database that now exists is refused in one line, and changes nothing.
    code, out, err = await cli(tmp_path, fresh, "restore", str(tmp_path / "bk"))
    assert code == 1 and "--force" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = await cli(tmp_path, data, "backup", str(tmp_path / "bk"))
    assert code == 1 and "not empty" in err and len(err.strip().splitlines()) == 1


async def test_backup_restores_memory_with_its_embeddings(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await (await Database.open(data / "agentbot.sqlite3")).close()
    memory = ChromaMemory(data / "memory", embedding=MiniLMEmbedding())
    await memory.open()
    await memory.store_many(
        GUILD_A,
        [
            NewMemory(text="The guild's book club meets on Thursdays at 8 pm UTC.", kind="note"),
            NewMemory(
                text="Our raid team needs two healers and one tank for the weekly dungeon.", kind="note"
            ),
        ],
    )
    await memory.store_many(GUILD_B, [NewMemory(text="Sourdough starter wants daily feeding.", kind="note")])
    before = await memory.search(GUILD_A, "when is the book club?", k=1)
    # The copy is taken while the bot's own client has the store open.
    code, out, err = await cli(tmp_path, data, "backup", str(tmp_path / "bk"), memory=True)
    await memory.close()
    assert code == 0, err
    assert "3 memory rows" in out

    fresh = tmp_path / "fresh"
    code, out, err = await cli(tmp_path, fresh, "restore", str(tmp_path / "bk"), memory=True)
    assert code == 0, err
    restored = ChromaMemory(fresh / "memory", embedding=MiniLMEmbedding())
    await restored.open()
    try:
        after = await restored.search(GUILD_A, "when is the book club?", k=1)
        assert [(h.id, round(h.relevance, 4)) for h in after] == [
            (h.id, round(h.relevance, 4)) for h in before
        ]
        assert "Thursdays" in after[0].text
        assert (await restored.stats(GUILD_B)).memories == 1  # per-server separation survives the copy
    finally:
        await restored.close()


async def test_damaged_backup_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await (await Database.open(data / "agentbot.sqlite3")).close()
    code, _, err = await cli(tmp_path, data, "backup", str(tmp_path / "bk"))
    assert code == 0, err
    with (tmp_path / "bk" / "agentbot.sqlite3").open("r+b") as f:
        f.seek(200)
        f.write(b"\xff\xfe")
    fresh = tmp_path / "fresh"
    code, _, err = await cli(tmp_path, fresh, "restore", str(tmp_path / "bk"))
    assert code == 1 and "checksum" in err and "Traceback" not in err
    assert not (fresh / "agentbot.sqlite3").exists()
    code, _, err = await cli(tmp_path, fresh, "restore", str(tmp_path / "nowhere"))
    assert code == 1 and "not an agentbot backup" in err


async def test_restore_refuses_while_a_bot_has_the_store_open(tmp_path: Path) -> None:
    """README: stop the bot first. ``restore --force`` under a running bot replaced the file and deleted
    its WAL while the bot kept both open: the bot went on writing into the old file (its next checkpoint
    could overwrite the restored one), and the operator read "restored"."""
    data = tmp_path / "data"
    running = await Database.open(data / "agentbot.sqlite3")  # as `agentbot run` holds it
    try:
        await running.write("CREATE TABLE backup_probe (n INTEGER)")
        assert (await cli(tmp_path, data, "backup", str(tmp_path / "bk")))[0] == 0
        await running.write("INSERT INTO backup_probe VALUES (1)")
        code, out, err = await cli(tmp_path, data, "restore", "--force", str(tmp_path / "bk"))
        assert code == 1 and out == "", out
        assert err.strip().endswith("is open in another process (a running bot?): stop the bot, then restore")
        assert [tuple(r) for r in await running.fetchall("SELECT n FROM backup_probe")] == [(1,)]  # untouched
    finally:
        await running.close()
    assert not (data / "agentbot.sqlite3.before-restore").exists()
