"""An operator installing agentbot on a real machine (fifth round), driven through the installed ``agentbot``
command and its settings: store URLs, the MCP servers file, backups. Each test failed before the fix its
commit names."""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import signal
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web

import agent.config
from agent.config import ConfigError, load_agent_settings
from agent.embeddings.minilm import MiniLMEmbedding
from agent.memory import ChromaMemory, NewMemory
from agent.memory.chroma_client import chroma_client
from agent.memory.types import MemoryStoreError
from agent.toolset import operator_mcp
from bot.backup import BackupError, backup, restore
from bot.config import load_bot_settings
from bot.store.db import Database
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply
from tests.fakes.served import served
from tests.test_blackbox_operator import AGENTBOT
from tests.test_blackbox_ops4 import _agentbot, _run_env
from tests.warm_agentbot import start_agentbot


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "postgresql://agentbot:pw@127.0.0.1:99999/agentbot",
            "its port '99999' is not a number from 1 to 65535",
        ),
        ("postgresql://agentbot:pw@127.0.0.1:5432x/agentbot", "its port '5432x'"),
        ("postgresql://agentbot:pw@[::1/agentbot", "not an IPv6 address in brackets"),
        ("postgresql://agentbot:pw@127.0.0.1/agentbot?sslmode=on", "sslmode=on is not one of"),
        # `openssl rand -base64` passwords hold / and +: the / ended the host, which became "agentbot:ab"
        ("postgresql://agentbot:ab/cd@127.0.0.1:5432/agentbot", "write / as %2F"),
    ],
)
def test_a_database_url_asyncpg_cannot_use_is_named_as_the_setting(
    url: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # doctor said "FAIL database: connect(): port must be 0-65535." (no setting named) and the bot
    # started, reached Discord, then failed opening the store.
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError) as refused:
        load_bot_settings()
    assert "DATABASE_URL" in str(refused.value) and said in str(refused.value), refused.value
    assert "pw" not in str(refused.value).replace("postgresql", "")  # the URL (its password) is not shown


async def test_migrate_store_to_a_url_asyncpg_cannot_use_is_one_line_naming_to(tmp_path: Path) -> None:
    # A port mistyped in --to: a 140-line traceback box ending in "OverflowError: connect(): port must be
    # 0-65535." (a non-number port: "ValueError: invalid literal for int()"), exit 1.
    await (await Database.open(tmp_path / "agentbot.sqlite3")).close()
    url = "postgresql://agentbot:pw@127.0.0.1:99999/agentbot"
    code, out, err = await _agentbot(tmp_path, "migrate-store", "--to", url, env={"MEMORY_ENABLED": "false"})
    assert code == 2 and out == "" and "Traceback" not in err, err[-1500:]
    assert err.strip().splitlines() == [
        "agentbot: --to: its port '99999' is not a number from 1 to 65535 (PostgreSQL's is 5432)"
    ], err


async def _llama_server(request: web.Request) -> web.StreamResponse:
    """llama.cpp's server as `llama-server -m model.gguf` starts it (no --jinja): it lists its file, answers
    any model name, and refuses every request offering tools with HTTP 500."""
    if request.method == "GET":
        return web.json_response({"object": "list", "data": [{"id": "/models/llama-3.1-8b-q4_k_m.gguf"}]})
    if "tools" in await request.json():
        error = {"code": 500, "message": "tools param requires --jinja flag", "type": "server_error"}
        return web.json_response({"error": error}, status=500)
    choice = {"index": 0, "message": {"role": "assistant", "content": "p"}, "finish_reason": "length"}
    return web.json_response({"object": "chat.completion", "choices": [choice]})


async def test_doctor_names_an_mcp_server_that_is_down_and_llama_cpp_refusing_tools(tmp_path: Path) -> None:
    # doctor had no MCP check: a file that run and ask refuse (bad TOML, url and command both) and a
    # server that dies at start both passed with "ok", and the operator learnt it from the first run.
    # Its one-token call offered no tool, so llama-server without --jinja passed too, and every run failed.
    (tmp_path / "mcp.toml").write_text('[servers.inventory]\ncommand = "/bin/false"\n')
    app = web.Application()
    app.router.add_route("*", "/v1/{path:.*}", _llama_server)
    async with served(app) as url:
        env = {"OPENAI_BASE_URL": f"{url}/v1", "AGENT_MODEL": "llama3.1", "MEMORY_ENABLED": "false"}
        code, out, err = await _agentbot(
            tmp_path, "doctor", env=env | {"MCP_SERVERS_FILE": "mcp.toml"}, within=60
        )
    assert code == 1 and "Traceback" not in out + err, out + err[-1500:]
    failed = {x.split(":", 1)[0]: x for x in out.splitlines() if x.startswith("FAIL ")}
    assert "inventory is left out" in failed.get("FAIL mcp", "") and "mcp.toml" in failed["FAIL mcp"], out
    assert "start llama-server with --jinja" in failed.get("FAIL provider openai", ""), out


async def test_a_servers_table_misspelt_in_the_mcp_file_is_named_not_read_as_no_servers(
    tmp_path: Path,
) -> None:
    # `[server.lab]` (one s): the file read as holding no server, so run and ask went on without its tools
    # and without a word.
    (tmp_path / "mcp.toml").write_text('[server.lab]\ncommand = "lab-mcp"\n')
    with pytest.raises(ConfigError) as refused:
        await operator_mcp(str(tmp_path / "mcp.toml"))
    assert "unknown table [server]" in str(refused.value) and "[servers.<name>]" in str(refused.value)


async def _agentbot_limited(cwd: Path, *args: str, env: dict[str, str], file_bytes: int) -> tuple[int, str]:
    """``agentbot ARGS`` that may write no file past ``file_bytes`` (RLIMIT_FSIZE: a disk that fills up
    mid-write, as writes then fail with EFBIG; Python ignores SIGXFSZ). Its stderr comes back."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))

    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "DATA_DIR": str(cwd / "data"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        *args,
        cwd=cwd,
        env=base | env,
        preexec_fn=limit,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, err.decode()


async def test_a_backup_onto_a_disk_that_fills_up_is_one_line_naming_where_it_wrote(tmp_path: Path) -> None:
    # The memory rows' file on a full disk: a traceback box (OSError: File too large), exit 1. The
    # database's copy there: "could not copy DATA_DIR/agentbot.sqlite3: disk I/O error", which read as
    # the live store being broken. With memory off, "no memory" hid the memory left out.
    data = tmp_path / "data"
    await (await Database.open(data / "agentbot.sqlite3")).close()
    memory = ChromaMemory(data / "memory", embedding=MiniLMEmbedding())
    await memory.open()
    notes = [
        NewMemory(text=f"Raid night {i}: the guild meets at {i % 12 + 1} pm UTC.", kind="note")
        for i in range(24)
    ]
    await memory.store_many("100000000000000001", notes)
    await memory.close()
    db_bytes = (
        (data / "agentbot.sqlite3").stat().st_size
    )  # the copy fits, the memory rows (~8 KB each) do not

    code, err = await _agentbot_limited(tmp_path, "backup", "bk", env={}, file_bytes=db_bytes + 16384)
    assert code == 1 and "Traceback" not in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and "cannot write the backup into " in err, err
    assert "bk: File too large" in err and not (tmp_path / "bk.partial").exists(), err

    code, err = await _agentbot_limited(tmp_path, "backup", "bk", env={}, file_bytes=db_bytes // 2)
    assert code == 1 and "Traceback" not in err, err[-2000:]
    assert "agentbot.sqlite3 into bk: " in err and "is there room there?" in err, err

    code, out, err = await _agentbot(
        tmp_path, "backup", "bk", env={"MEMORY_ENABLED": "false", "DATA_DIR": str(data)}
    )
    assert code == 0 and "no memory" in out, out + err
    assert "memory was not copied: MEMORY_ENABLED=false" in err, err


@pytest.mark.parametrize("name", ["CHROMA_URL", "CHROMA_SERVER_HOST"])
def test_a_chroma_server_named_as_other_tools_name_it_is_pointed_to_chroma_host(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CHROMA_URL=http://chroma:8000 was met with "did you mean CHROMA_SSL?"; Chroma's own client setting
    # CHROMA_SERVER_HOST passed without a word, and memory went on in the embedded store.
    env = tmp_path / ".env"
    env.write_text(f"{name}=chroma\n")
    monkeypatch.setattr(agent.config, "ENV_FILE", str(env))
    with pytest.raises(ConfigError) as refused:
        load_agent_settings()
    assert f"{name} in {env} is not a setting" in str(refused.value), refused.value
    assert "did you mean CHROMA_HOST (the host name alone: the port goes in CHROMA_PORT" in str(refused.value)


async def test_a_restore_force_repeated_keeps_the_store_the_first_one_replaced(tmp_path: Path) -> None:
    # `restore --force` stopped in its memory rows (Ctrl-C on a long restore, the Chroma server gone)
    # and run again: the second moved the first one's fresh copy of the backup over
    # agentbot.sqlite3.before-restore, and the store it held, the one before any restore, was gone.
    live = tmp_path / "data"
    db = await Database.open(live / "agentbot.sqlite3")
    await db.write("CREATE TABLE before_restore_probe (note TEXT)")
    await db.write("INSERT INTO before_restore_probe VALUES ('the store before the restore')")
    await db.close()
    old = tmp_path / "old"
    await (await Database.open(old / "agentbot.sqlite3")).close()
    assert backup(old, tmp_path / "bk", None).collections == {}
    env = {"MEMORY_ENABLED": "false", "DATA_DIR": str(live)}
    for _ in range(2):
        code, out, err = await _agentbot(tmp_path, "restore", "--force", "bk", env=env)
        assert code == 0 and out.startswith("restored "), out + err
    kept = sqlite3.connect(live / "agentbot.sqlite3.before-restore")
    try:
        assert kept.execute("SELECT note FROM before_restore_probe").fetchall() == [
            ("the store before the restore",)
        ]
    finally:
        kept.close()


async def test_a_second_ctrl_c_ends_the_wait_for_running_turns(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # `make run` in a terminal, Ctrl-C, and Ctrl-C again: the second was ignored and the bot sat out
    # BOT_SHUTDOWN_GRACE_SECONDS (20 s by default) waiting for a model call, without a word.
    llm.script(Reply(hang=True))
    log = tmp_path / "run.log"
    env = _run_env(fake, llm, tmp_path, guild) | {
        "BOT_SHUTDOWN_GRACE_SECONDS": "600",
        "PYTHON_SANDBOX": "off",
    }
    with log.open("wb") as sink:
        proc = await start_agentbot(
            "run", cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=sink
        )
    try:
        ready = lambda: fake.identify_count > 0 and fake.commands(guild)  # noqa: E731
        await fake.wait_for(ready, within=30, what="the bot to connect")
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, within=20)
        await fake.wait_for(lambda: len(llm.requests) == 1, within=20, what="the model call under way")
        proc.send_signal(signal.SIGINT)
        await fake.wait_for(lambda: b"shutdown_started" in log.read_bytes(), within=20, what="the first stop")
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)  # the grace is 600 s
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, _tail(log)
    assert b"shutdown_now" in log.read_bytes() and b"shutdown_done" in log.read_bytes(), _tail(log)
    assert any("resumes when it is back" in m.content for m in fake.messages(thread)), _tail(log)


def _tail(log: Path) -> str:
    return log.read_bytes().decode(errors="replace")[-2000:]


async def test_chroma_ssl_to_a_plain_http_server_says_to_turn_chroma_ssl_off() -> None:
    # CHROMA_SSL=1 (copied from a hosted setup) to compose's plain-HTTP Chroma: doctor, backup and the bot
    # said "Could not connect to a Chroma server. Are you sure it is running?" of a server that ran.
    async def heartbeat(request: web.Request) -> web.Response:
        return web.json_response({"nanosecond heartbeat": 1})

    app = web.Application()
    app.router.add_get("/api/v2/heartbeat", heartbeat)
    async with served(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(MemoryStoreError) as refused:
            await asyncio.to_thread(
                chroma_client, None, host="127.0.0.1", port=port, ssl=True, headers=None, timeout=10
            )
    assert str(refused.value) == (
        f"Chroma server 127.0.0.1:{port} (CHROMA_HOST) answered plain HTTP to https: set CHROMA_SSL=0, "
        "or serve it over TLS"
    )


async def test_a_backup_from_a_newer_agentbot_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # Restoring a newer release's backup with an older agentbot said "restored ... schema v8" and put it in
    # place (with --force, moving the working store aside); the bot then refused to start on it.
    await (await Database.open(tmp_path / "old" / "agentbot.sqlite3")).close()
    backup(tmp_path / "old", tmp_path / "bk", None)
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    newer = manifest["schema_version"] + 1
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest | {"schema_version": newer}))
    with pytest.raises(BackupError) as refused:
        restore(tmp_path / "bk", tmp_path / "data", None, force=True)
    assert f"holds database schema version {newer}, but this agentbot knows up to {newer - 1}" in str(
        refused.value
    )
    assert "upgrade agentbot" in str(refused.value) and not (tmp_path / "data").exists()


async def test_a_backup_embedded_by_another_model_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A MiniLM bot's backup restored where MEMORY_EMBEDDING=multilingual: "restored ... 1 memory row", the
    # database replaced, and the bot then refused to start (EmbeddingMismatch) until the operator set it back.
    await (await Database.open(tmp_path / "old" / "agentbot.sqlite3")).close()
    backup(tmp_path / "old", tmp_path / "bk", None)
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    (tmp_path / "bk" / "memory").mkdir()
    (tmp_path / "bk" / "memory" / "agentbot-mem-shared-000.jsonl").write_bytes(b"")
    manifest["files"]["memory/agentbot-mem-shared-000.jsonl"] = {
        "bytes": 0,
        "sha256": hashlib.sha256().hexdigest(),
    }
    embedded = {"agentbot_embedding": "minilm-l6-v2-int8@8199be6f699a", "agentbot_dim": 384}
    manifest["memory"] = {
        "prefix": "agentbot-mem",
        "collections": [
            {"name": "agentbot-mem-shared-000", "metadata": embedded, "space": "cosine", "rows": 0}
        ],
    }
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("MEMORY_EMBEDDING", "multilingual")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    here = ChromaMemory.from_settings(tmp_path / "data" / "memory", load_agent_settings())
    with pytest.raises(BackupError) as refused:
        restore(tmp_path / "bk", tmp_path / "data", here)
    assert "embedded by 'minilm-l6-v2-int8', but this agentbot is set to 'use-multilingual-v3'" in str(
        refused.value
    )
    assert "set MEMORY_EMBEDDING=minilm" in str(refused.value) and not (tmp_path / "data").exists()
