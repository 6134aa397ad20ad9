"""Small bugs other engineers found in session 11 and left (gaps8): each reproduced through the installed
``agentbot`` command or the bot against fake servers on 127.0.0.1. Each test failed before the fix its
commit names."""

from __future__ import annotations

import asyncio
import resource
import signal
from pathlib import Path

import pytest
from aiohttp import web

from agent.config import ConfigError, load_agent_settings
from agent.embeddings.minilm import MiniLMEmbedding
from agent.memory import ChromaMemory
from bot.backup import backup
from bot.store.db import Database
from tests.e2e.harness import running_bot
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.served import served
from tests.test_blackbox_operator import AGENTBOT, agentbot
from tests.test_blackbox_ops5 import _llama_server
from tests.test_e2e_config import flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


@pytest.fixture
def other() -> FakeGuild:
    return FakeGuild.create("Other", channels=("general",), members=("dave",), admins=("boss",))


@pytest.fixture
def guilds(guild: FakeGuild, other: FakeGuild) -> list[FakeGuild]:
    return [guild, other]


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2500:]


async def test_write_file_on_a_full_disk_leaves_no_file_and_is_not_counted_as_kept(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # A disk that filled up mid-write (RLIMIT_FSIZE: writes past 64 KiB fail with EFBIG, as ENOSPC does):
    # write_file left a cut 64 KiB report.md, the model read 'OSError: [Errno 27] File too large', and the
    # summary said "files (1) kept in .../ask-..." for a file holding a third of what was written.
    llm.script(tool_call("write_file", {"path": "report.md", "content": "x" * 200_000}), text("done"))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
        "PYTHONDONTWRITEBYTECODE": "1",  # else the child leaves cut .pyc files in the venv
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "gpt-4o-mini",
        "MEMORY_ENABLED": "false",
    }
    log = tmp_path / "ask.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            AGENTBOT,
            "ask",
            "write the report",
            cwd=tmp_path,
            env=env,
            preexec_fn=limit,
            stdout=sink,
            stderr=sink,
        )
        await asyncio.wait_for(proc.wait(), 60)
    said = _tail(log)
    assert proc.returncode == 0 and "Traceback" not in said, said
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == [], said
    assert "kept in" not in said, said
    told = [m["content"] for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert "not written: the disk is full" in told[0] and "report.md was not saved" in told[0], told


@pytest.mark.parametrize(
    "pasted", ["http://127.0.0.1:8080/v1/chat/completions", "http://127.0.0.1:8080/v1/Chat/Completions/"]
)
def test_a_base_url_pasted_with_chat_completions_says_to_drop_it(
    pasted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The endpoint as provider pages show it: every call went to .../v1/chat/completions/chat/completions
    # and failed with "no Chat Completions API at ... (HTTP 404): check OPENAI_BASE_URL (its path usually
    # ends in /v1 ...)", a URL whose path does end in /v1 before the part to remove.
    monkeypatch.setenv("OPENAI_BASE_URL", pasted)
    with pytest.raises(ConfigError) as refused:
        load_agent_settings()
    said = str(refused.value)
    assert "OPENAI_BASE_URL" in said and "ends in /chat/completions" in said, said
    assert "drop it and set http://127.0.0.1:8080/v1 " in said, said


async def test_doctor_names_llama_cpp_without_jinja_when_agent_model_is_its_listed_file(
    tmp_path: Path,
) -> None:
    # AGENT_MODEL set to the GGUF path llama-server lists (as its /v1/models shows it): doctor probed only
    # unlisted names, so it said "ok provider openai: serves every model the tiers name" and every run
    # then failed with HTTP 500 "tools param requires --jinja flag".
    app = web.Application()
    app.router.add_route("*", "/v1/{path:.*}", _llama_server)
    async with served(app) as url:
        env = {
            "OPENAI_BASE_URL": f"{url}/v1",
            "AGENT_MODEL": "/models/llama-3.1-8b-q4_k_m.gguf",
            "MEMORY_ENABLED": "false",
        }
        code, out, err = await agentbot(tmp_path, "doctor", env=env)
    assert code == 1 and "Traceback" not in out + err, out + err[-1500:]
    provider = next((x for x in out.splitlines() if "provider openai" in x), "")
    assert provider.startswith("FAIL ") and "start llama-server with --jinja" in provider, out


async def test_a_memory_imported_from_another_server_shows_no_foreign_author(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, other: FakeGuild, tmp_path: Path
) -> None:
    # Other's admin imports Lab's export: /memory list in Other said "by <@100000000000000077>" under each
    # memory, a mention of a Lab member who is no member of Other (rendered as an unknown user there).
    author = "100000000000000077"
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=True) as bot:
        memory = bot.services.memory
        assert memory is not None, bot.services.memory_error
        await memory.store(str(guild.id), "Our club bakes on Saturdays.", author=author, thread="4242")
        export = (await run(fake, guild, "memory export")).attachments[0]
        await run(fake, other, "memory import", {"file": (export.filename, export.data)}, user="boss")
        there = flat(await run(fake, other, "memory list", user="dave"))
        here = flat(await run(fake, guild, "memory list", user="bob"))
    assert "Our club bakes on Saturdays." in there and "imported from another server" in there, there
    assert f"<@{author}>" not in there, there
    assert f"by <@{author}>" in here, here  # in Lab, where the author is a member, it is still said


async def test_restore_ended_by_a_closed_terminal_says_so_and_leaves_the_store_as_it_was(
    tmp_path: Path,
) -> None:
    # `agentbot restore --force bk` in an SSH session that closed while it waited for the Chroma server:
    # SIGHUP killed it (exit -1) without a line. Now it ends as Ctrl-C does, the store untouched.
    data = tmp_path / "data"
    await (await Database.open(data / "agentbot.sqlite3")).close()
    memory = ChromaMemory(data / "memory", embedding=MiniLMEmbedding())
    await memory.open()
    await memory.store("100000000000000001", "Raid night is Friday.", kind="note")
    await memory.close()
    assert backup(
        data, tmp_path / "bk", ChromaMemory(data / "memory", embedding=MiniLMEmbedding())
    ).collections
    before = (data / "agentbot.sqlite3").read_bytes()
    files = sorted(p.name for p in data.iterdir())

    reached, ended = asyncio.Event(), asyncio.Event()

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.set()  # restore is connecting to the memory store: it checked the backup, wrote nothing yet
        await ended.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(data),
        "CHROMA_HOST": "127.0.0.1",
        "CHROMA_PORT": str(port),
        "CHROMA_TIMEOUT": "60",
    }
    log = tmp_path / "restore.log"
    try:
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                AGENTBOT, "restore", "--force", "bk", cwd=tmp_path, env=env, stdout=sink, stderr=sink
            )
            try:
                await asyncio.wait_for(reached.wait(), 60)
            finally:
                proc.send_signal(signal.SIGHUP)
                try:
                    code = await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                    raise AssertionError(f"restore still running 30 s after SIGHUP: {_tail(log)}") from None
    finally:
        ended.set()
        server.close()
    said = _tail(log)
    assert code == 130 and said.strip().splitlines() == ["agentbot: interrupted"], (code, said)
    assert sorted(p.name for p in data.iterdir()) == files, said  # no agentbot.sqlite3.restoring
    assert (data / "agentbot.sqlite3").read_bytes() == before
