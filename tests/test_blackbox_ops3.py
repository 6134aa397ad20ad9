"""An operator's first contact with agentbot, its deployment and its growth (third round): providers'
own usage shapes, the store's upgrades, logs and the files an operator is handed. Each test failed before
the fix it names."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import aiosqlite
import httpx
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from agent.events import Usage
from agent.messages import Message
from agent.models.base import ContextOverflowError, ModelSettings
from agent.models.openai import OpenAIChatModel
from agent.run_state import RunState
from bot import cli, turn
from bot.backup import DB_NAME, backup, restore
from bot.checkpoint import checkpoint_meta, state_from
from bot.store.db import Database, StoreError
from bot.store.migrations import MIGRATIONS
from bot.store.pg import PgDatabase
from tests.e2e.harness import running_bot
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.fakes.postgres import PostgresServer
from tests.fakes.served import served
from tests.test_blackbox_operator import AGENTBOT, agentbot


def _sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    } | extra


# llama.cpp's llama-server ends a stream with ``timings`` (no ``usage`` unless asked in its own way);
# Groq puts a stream's usage in ``x_groq.usage`` on the last chunk. Shapes from their servers' answers.
_LLAMA_CPP = _sse(
    _chunk({"role": "assistant", "content": "Paris."}),
    _chunk({}, "stop", timings={"cache_n": 200, "prompt_n": 800, "prompt_ms": 90.1, "predicted_n": 100}),
)
_GROQ = _sse(
    _chunk({"role": "assistant", "content": "Paris."}, x_groq={"id": "req_01"}),
    _chunk(
        {},
        "stop",
        x_groq={
            "id": "req_01",
            "usage": {"queue_time": 0.01, "prompt_tokens": 1000, "completion_tokens": 100},
        },
    ),
)


async def test_llama_cpp_timings_and_groq_x_groq_usage_are_exact_counts_not_estimates(tmp_path: Path) -> None:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        stream = _LLAMA_CPP if body["model"] == "llama" else _GROQ
        return web.Response(body=stream, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    prices = tmp_path / "prices.json"
    prices.write_text(
        '{"models": {"llama": {"input": 100, "output": 1000}, "groq-llama": {"input": 100, "output": 1000}}}'
    )
    async with served(app) as base:
        for model in ("llama", "groq-llama"):
            env = {
                "OPENAI_BASE_URL": f"{base}/v1",
                "AGENT_MODEL": model,
                "PRICES_FILE": str(prices),
                "MEMORY_ENABLED": "false",
            }
            code, out, err = await agentbot(tmp_path, "ask", "Capital of France?", env=env)
            assert (code, out) == (0, "Paris.\n"), err[-1500:]
            summary = err.strip().splitlines()[-1]
            # 1000 in at $100/M + 100 out at $1000/M: exactly $0.2, counted as the server reported it.
            assert "estimated" not in summary and "cost $0.2000" in summary, (model, summary)
            assert "1,000" in summary or "1000" in summary, summary


async def test_a_store_the_bot_may_only_read_is_refused_at_start_naming_write_access(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A volume restored as root, a bind mount owned by another user, a read-only mount: SQLite opens such
    # a file read-only without a word, so doctor said "opened and migrated" and `agentbot run` started,
    # then died on its first write with a 200-line traceback. Opened read-only as SQLite does then:
    path = tmp_path / "agentbot.sqlite3"
    await (await Database.open(path)).close()
    connect = aiosqlite.connect
    monkeypatch.setattr(
        "bot.store.db.aiosqlite.connect", lambda p, **kw: connect(f"file:{p}?mode=ro", uri=True, **kw)
    )
    with pytest.raises(StoreError) as refused:
        await Database.open(path)
    assert f"{path} cannot be written" in str(refused.value)
    assert "write access" in str(refused.value) and "DATA_DIR" in str(refused.value)


@pytest.mark.usefixtures("fast_write_window")
async def test_run_logs_every_line_as_json_on_stderr_even_from_modules_loaded_before_logging(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # The bot's services and the quota ledger are imported while the settings are checked, before logging
    # is set up; their loggers were bound then, so "memory_unavailable" (a Chroma server down) went to
    # stdout as console text: not in the JSON log a collector reads, never filtered, never redacted.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path),
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "gpt-4o-mini",
        "OPENAI_API_KEY": "sk-ops3-log-test-0001",
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_SYNC_GUILD_ID": str(guild.id),
        "CHROMA_HOST": "127.0.0.1",
        "CHROMA_PORT": str(_closed_port()),
        "LOG_FORMAT": "json",
        "PYTHON_SANDBOX": "off",
    }
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "run", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await fake.wait_for(
            lambda: fake.identify_count > 0 or proc.returncode is not None, within=30, what="login"
        )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode() == ""
    lines = [json.loads(line) for line in err.decode().splitlines()]  # every line is JSON
    memory = next(rec for rec in lines if rec["event"] == "memory_unavailable")
    assert memory["level"] == "error" and "CHROMA_HOST" in memory["error"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_postgresql_user_that_may_not_create_tables_is_told_how_to_grant_it(
    postgres: PostgresServer,
) -> None:
    # PostgreSQL 15's usual set-up: CREATE DATABASE agentbot; GRANT ALL ON DATABASE agentbot TO agentbot.
    # Since 15 that user may not create tables in schema public: start-up said "permission denied for
    # schema public" and not what to do.
    import asyncpg

    url = await postgres.fresh_database("ops3")
    role = f"op_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres.url())
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT ALL ON DATABASE {url.rsplit('/', 1)[1]} TO {role}")
    finally:
        await admin.close()
    with pytest.raises(StoreError) as refused:
        await PgDatabase.open(url.replace(f"//{postgres.user}@", f"//{role}@"))
    said = str(refused.value)
    assert "permission denied for schema public" in said
    assert "DATABASE_URL's user" in said and "GRANT CREATE ON SCHEMA public" in said


async def test_doctor_says_an_unset_openai_key_is_unset_as_run_and_ask_do(tmp_path: Path) -> None:
    # A fresh .env from .env.example: `run` and `ask` say "OPENAI_API_KEY is not set", while doctor asked
    # api.openai.com and reported "rejected the API key (HTTP 401)" (offline: "could not be reached").
    env = {"MEMORY_ENABLED": "false", "PYTHON_SANDBOX": "off", "ROUTER_CLASSIFIER": "heuristic"}
    code, out, err = await agentbot(tmp_path, "doctor", env=env)
    provider = next(line for line in out.splitlines() if line.startswith("FAIL provider openai"))
    assert code == 1 and "OPENAI_API_KEY is not set" in provider, out + err
    # CHANGELOG's upgrade notes send operators to doctor for the store's schema version; it never said it.
    assert f"opened and migrated (schema version {len(MIGRATIONS)})" in out, out


def test_a_checkpoint_keeps_estimated_counts_and_cache_writes_for_the_resumed_turn() -> None:
    # A turn on llama-cpp-python (no usage reported: counted locally) or Anthropic (cache writes) resumed
    # after a crash: its footer and /usage read the checkpoint, which kept only the first five counts,
    # so the estimated counts of the steps before the crash came back as exact ones.
    state = RunState(task="t")
    state.usage = Usage(1000, 100, 0, 2, 0, cache_write_tokens=300, cache_write_1h_tokens=100, estimated=True)
    back = state_from("t", json.loads(json.dumps(checkpoint_meta(state))))
    assert back.usage == state.usage
    old = {"usage": [1000, 100, 50, 2, 10]}  # a checkpoint written before this change still reads
    assert state_from("t", old).usage == Usage(1000, 100, 50, 2, 10)


@pytest.mark.usefixtures("fast_write_window")
async def test_sigterm_while_the_bot_starts_up_exits_at_once_with_0(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # `docker compose restart` (or a deploy) seconds after a start: SIGTERM came while the store, the
    # tools, the classifier and memory were being built. close() found nothing to close, start-up went on
    # to sync commands over the closed HTTP session (a traceback), and the store's thread kept the process
    # alive until SIGKILL.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path),
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-ops3-start-test-0001",
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_SYNC_GUILD_ID": str(guild.id),
        "MEMORY_ENABLED": "false",
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "run", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        # The tools are built inside the services (the run_python line), before the classifier loads.
        while b"agent.tools.python_exec" not in (line := await asyncio.wait_for(proc.stderr.readline(), 30)):
            assert line, "agentbot run ended before building its tools"
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err and fake.identify_count == 0


async def test_a_workspace_that_cannot_be_made_is_said_to_the_member_and_logged_in_one_line(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DATA_DIR/workspaces on a full disk, a read-only mount, or owned by root from an earlier run: every
    # turn ended "something went wrong" with a traceback in the log. (A file in its place fails the same
    # mkdir as root can.)
    (tmp_path / "workspaces").write_text("not a directory")
    llm.script(text("Paris."))
    with capture_logs() as logs:
        monkeypatch.setattr(turn, "log", structlog.get_logger("bot.turn"))
        async with running_bot(fake, llm, tmp_path, guild):
            general = guild.channel("general")
            fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
            thread = await fake.wait_for_thread(parent=general)
            failed = await fake.wait_for_message(
                thread, lambda m: "This turn stopped" in m.content, within=15
            )
    assert "cannot create this session's workspace (Not a directory)" in failed.content
    assert "DATA_DIR/workspaces" in failed.content and str(tmp_path) not in failed.content
    line = next(rec for rec in logs if rec["event"] == "turn_failed")
    assert "exc_info" not in line and "workspace" in line["error"]


async def test_restore_force_after_a_crash_keeps_the_replaced_store_whole(tmp_path: Path) -> None:
    # The bot was killed (its last commits still in agentbot.sqlite3-wal), the operator restores a backup
    # with --force, which keeps the old store as agentbot.sqlite3.before-restore: its WAL was deleted, so
    # the kept copy silently lacked everything since the last checkpoint.
    data, saved = tmp_path / "data", tmp_path / "backup"
    await (await Database.open(data / DB_NAME)).close()
    backup(data, saved, None)
    killed = (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_autocheckpoint = 0');"
        "c.execute(\"INSERT INTO audit_log (guild_id, actor_id, key, at) VALUES (1, 2, 'limits', 0)\");"
        "c.commit(); os._exit(0)"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", killed, str(data / DB_NAME))
    assert await proc.wait() == 0 and (data / f"{DB_NAME}-wal").stat().st_size > 0
    restore(saved, data, None, force=True)
    with contextlib.closing(sqlite3.connect(data / f"{DB_NAME}.before-restore")) as kept:
        assert kept.execute("SELECT key FROM audit_log").fetchall() == [("limits",)]
    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as restored:
        assert restored.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


async def test_groqs_context_overflow_is_a_context_overflow(http: httpx.AsyncClient) -> None:
    # Groq (and Cerebras) name no context length: the router moves a conversation that outgrew a model to
    # a bigger tier only when told it is too long; this was a plain failed call.
    body = {
        "error": {
            "message": "Please reduce the length of the messages or completion.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }

    async def chat(request: web.Request) -> web.Response:
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_post("/openai/v1/chat/completions", chat)
    async with served(app) as url:
        model = OpenAIChatModel(
            "llama-3.1-8b-instant", base_url=f"{url}/openai/v1", client=http, max_attempts=1
        )
        with pytest.raises(ContextOverflowError, match="too long"):
            async for _ in model.stream([Message("user", "x")], [], ModelSettings(stream=False)):
                pass


def test_a_crash_of_run_is_one_redacted_json_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Anything unforeseen that escaped `agentbot run` was typer's rich traceback box: 170 lines of
    # box-drawing amid JSON lines a log collector splits into 170 records, and never redacted.
    token = "MTA4.ops3-crash-token.secret-part-0001"
    for name, value in {
        "DISCORD_TOKEN": token,
        "OPENAI_API_KEY": "sk-ops3-crash-0001",
        "DATA_DIR": str(tmp_path),
        "LOG_FORMAT": "json",
        "MEMORY_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)

    async def crash(*_: object) -> None:
        raise RuntimeError(f"unforeseen, while holding {token}")

    monkeypatch.setattr(cli, "_run_bot", crash)
    monkeypatch.setattr(sys, "argv", ["agentbot", "run"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    crashed = lines[-1]
    assert crashed["event"] == "crashed" and crashed["level"] == "critical"
    assert "RuntimeError: unforeseen, while holding ***" in crashed["exception"] and token not in err


async def test_an_env_that_is_a_directory_is_named_not_ignored(tmp_path: Path) -> None:
    # `docker run -v $PWD/.env:/home/agentbot/.env` with the file missing on the host makes a directory
    # there; it was read as empty, so every setting was ignored and ask said "put your key in .env".
    (tmp_path / ".env").mkdir()
    code, out, err = await agentbot(tmp_path, "ask", "hi")
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / '.env'} is not a file" in err and "directory" in err


@pytest.mark.usefixtures("fast_write_window")
async def test_memory_turned_off_by_the_operator_is_not_announced_as_unavailable(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # MEMORY_ENABLED=false is a choice; every thread header said "memory unavailable", as for an outage.
    llm.script(text("Paris."))
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=False):
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Paris.", within=15)
        header = fake.messages(thread)[0].content
    assert header.startswith("🔎 **Research**") and "memory" not in header
