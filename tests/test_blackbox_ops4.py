"""An operator's first contact with agentbot at scale (fourth round), driven through the installed
``agentbot`` command: signals, store moves, deployment files and endpoint quirks. Each test failed before
the fix its commit names."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import sqlite3
from pathlib import Path

import pytest

from bot.store import pg
from bot.store.db import Database, StoreError
from bot.store.pg import PgDatabase
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM
from tests.test_blackbox_operator import AGENTBOT
from tests.warm_agentbot import StillRunning, agentbot_process


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _agentbot(cwd: Path, *args: str, env: dict[str, str], within: float = 30) -> tuple[int, str, str]:
    """``agentbot ARGS`` that must end by itself within ``within`` seconds (killed and failed otherwise)."""
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "DATA_DIR": str(cwd), "COLUMNS": "200"}
    try:
        code, out, err = await agentbot_process(*args, cwd=cwd, env=base | env, within=within)
    except StillRunning as timeout:
        raise AssertionError(
            f"agentbot {' '.join(args)} still running after {within} s: {timeout.err.decode()[-800:]}"
        ) from timeout
    return code, out.decode(), err.decode()


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
    assert "--to: cannot connect" in err and "DATABASE_URL" not in err, err  # where the URL was given
    assert ":pw@" not in err, err  # the password is never printed


def _run_env(fake: FakeDiscord, llm: FakeLLM, tmp_path: Path, guild: FakeGuild) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path),
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-ops4-run-test-0001",
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_SYNC_GUILD_ID": str(guild.id),
        "MEMORY_ENABLED": "false",
        "LOG_FORMAT": "json",
    }


async def test_a_closed_terminal_stops_run_as_sigterm_does(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # `make run` in an SSH session or a terminal tab that is then closed: SIGHUP killed the bot on the spot,
    # exit 129 with not one log line, its running turns cut mid-step instead of paused at a step boundary
    # as SIGTERM and Ctrl-C do (and as `agentbot ask` treats SIGHUP).
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        "run",
        cwd=tmp_path,
        env=_run_env(fake, llm, tmp_path, guild),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        while b'"ready"' not in (line := await asyncio.wait_for(proc.stderr.readline(), 30)):
            assert line, "agentbot run ended before it was ready"
        proc.send_signal(signal.SIGHUP)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (proc.returncode, err.decode()[-2000:])
    stopped = [json.loads(x) for x in err.decode().splitlines() if "shutdown_started" in x]
    assert stopped and "SIGHUP" in stopped[0]["reason"], err.decode()[-2000:]


@pytest.mark.parametrize("store", ["postgresql", "chroma"])
async def test_sigterm_while_a_store_does_not_answer_stops_the_bot_at_once(
    store: str, fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # A PostgreSQL host that takes the connection and says nothing (a firewall, a server stuck in
    # recovery): SIGTERM logged "shutdown_done", then the bot waited out asyncpg's 60 s connect timeout,
    # past compose's 30 s stop grace period, so every `docker compose stop` ended in SIGKILL. The same
    # while memory's Chroma server did not answer: the store, already open, kept the process alive.
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        connected.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = _run_env(fake, llm, tmp_path, guild) | (
        {"DATABASE_URL": f"postgresql://a:b@127.0.0.1:{port}/agentbot"}
        if store == "postgresql"
        else {
            "MEMORY_ENABLED": "true",
            "CHROMA_HOST": "127.0.0.1",
            "CHROMA_PORT": str(port),
            "CHROMA_TIMEOUT": "3",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "run", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await asyncio.wait_for(connected.wait(), 30)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()
        for writer in held:
            writer.close()
    assert proc.returncode == 0, (proc.returncode, err.decode()[-2000:])
    assert b"Traceback" not in err and fake.identify_count == 0, err.decode()[-2000:]


async def test_a_chroma_server_that_takes_the_connection_and_never_answers_is_named(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # A Chroma container still loading, or a proxy in front of one that is down: TCP accepted (compose's
    # health check passes on that alone), no HTTP answer. chromadb's client waits forever, so doctor,
    # backup and the bot's start-up hung without a word, and SIGTERM could not end them.
    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(60)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "gpt-4o-mini",
        "CHROMA_HOST": "127.0.0.1",
        "CHROMA_PORT": str(port),
        "CHROMA_TIMEOUT": "1",
    }
    try:
        code, out, err = await _agentbot(tmp_path, "doctor", env=env, within=30)
    finally:
        server.close()
    assert code == 1 and "Traceback" not in out + err, (out + err)[-2000:]
    line = next(x for x in out.splitlines() if "CHROMA_HOST" in x)
    assert line.startswith("FAIL") and str(port) in line and "CHROMA_TIMEOUT" in line, out


async def test_an_empty_value_is_the_documented_default_for_every_setting(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # .env.example: "an empty value means the default". Blanked in .env, or empty from compose's
    # `${VAR}` of an unset variable: DATA_DIR= put the database in the current directory instead of
    # ./data, AGENT_MODEL= stopped `ask` ("model spec '' names no model"), and OPENAI_BASE_URL= skipped
    # the missing-key check (ask called OpenAI without a key) while doctor called "/models".
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / ".env").write_text("DATA_DIR=\nAGENT_MODEL=\nOPENAI_BASE_URL=\nFETCH_USER_AGENT=\n")
    env = {"DATA_DIR": "", "MEMORY_ENABLED": "false"}
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
    code, out, err = await _agentbot(cwd, "ask", "hello", env=env)
    assert code == 2 and out == "" and "OPENAI_API_KEY is not set" in err, err
    (cwd / ".env").write_text(f"DATA_DIR=\nAGENT_MODEL=\nOPENAI_BASE_URL={llm.base_url}\n")
    said = (await agentbot_process("doctor", cwd=cwd, env=base | env))[1].decode()
    assert (cwd / "data" / "agentbot.sqlite3").is_file(), said  # DATA_DIR's default, ./data
    assert not (cwd / "agentbot.sqlite3").exists()
    assert "gpt-4o-mini" in said, said  # AGENT_MODEL's default is the model checked


async def test_a_postgresql_host_that_never_answers_is_named_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # doctor (and run, migrate-store) said nothing for a minute, then "cannot connect to ...: TimeoutError: ".
    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(90)
        writer.close()

    monkeypatch.setattr(pg, "CONNECT_TIMEOUT", 1.0)  # 10 s in production; the test needs not wait them
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(StoreError) as caught:
            # asyncpg's default connect timeout (60 s) ends in wait_for's TimeoutError, not a StoreError
            await asyncio.wait_for(PgDatabase.open(f"postgresql://a:secret@127.0.0.1:{port}/agentbot"), 40)
    finally:
        server.close()
    said = str(caught.value)
    assert f"127.0.0.1:{port}" in said and "no answer within" in said and "secret" not in said, said


async def test_a_shell_left_in_a_deleted_directory_gets_one_line_naming_data_dir(tmp_path: Path) -> None:
    # `rm -rf agentbot && git clone ...` in one terminal, `agentbot ask` in another still inside the old
    # directory: typer's box of traceback (FileNotFoundError from os.getcwd) instead of a line.
    gone = tmp_path / "old-checkout"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{AGENTBOT}" ask hello'
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", script, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and out == b"", err.decode()[-1500:]
    assert len(err.decode().strip().splitlines()) == 1 and "DATA_DIR" in err.decode(), err.decode()[-1500:]


async def test_a_backup_stopped_by_sigterm_leaves_no_partial_copy(tmp_path: Path) -> None:
    # `timeout 10m agentbot backup /backups/$(date +%F)` from cron, or a container stopped meanwhile: the
    # default SIGTERM ended the process where it stood and left DEST.partial, a copy of every member's
    # sessions, beside the backups for good (each day's under a new name). It ends as Ctrl-C does now.
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "agentbot.sqlite3") as db:  # big enough that the copy takes a while
        db.execute("CREATE TABLE filler (b BLOB)")
        db.executemany("INSERT INTO filler VALUES (randomblob(1048576))", [()] * 100)
    dest = tmp_path / "backups" / "today"
    partial = dest.with_name("today.partial")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(data), "MEMORY_ENABLED": "false"}
    for _attempt in range(3):  # on a busy machine the copy may finish before the signal: try again
        proc = await asyncio.create_subprocess_exec(
            AGENTBOT, "backup", str(dest), cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        try:
            for _ in range(10_000):  # the copy starts in .partial: a file system has no event to wait on
                if partial.exists() or proc.returncode is not None:
                    break
                await asyncio.sleep(0.002)
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if not (proc.returncode == 0 and dest.exists()):
            break
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    assert proc.returncode == 130, (proc.returncode, err.decode()[-1500:])
    assert not partial.exists() and not dest.exists()
    assert err.decode().strip() == "agentbot: interrupted", err.decode()[-1500:]
