"""What an operator meets on a first run, driven through the installed ``agentbot`` command as a user runs
it: a temp directory as the working directory, an explicit environment, a ``.env`` file, loopback servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.llm_server import FakeLLM, text
from tests.warm_agentbot import agentbot_process

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))


async def agentbot(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``agentbot ARGS`` in ``tmp_path`` (where its ``.env`` is read) with only ``env`` set."""
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    code, out, err = await agentbot_process(*args, cwd=tmp_path, env=base | (env or {}))
    return code, out.decode(), err.decode()


@pytest.mark.parametrize("command", ["ask", "doctor"])
async def test_an_env_file_that_is_not_utf8_is_one_line_not_a_traceback(
    command: str, llm: FakeLLM, tmp_path: Path
) -> None:
    # Windows Notepad's "Unicode" is UTF-16 (a \xff\xfe mark); a Latin-1 editor writes é as one byte.
    (tmp_path / ".env").write_bytes(
        f"OPENAI_BASE_URL={llm.base_url}\nAGENT_MODEL=gpt-4o-mini\n".encode() + b"BOT_PERSONA=caf\xe9\n"
    )
    llm.script(text("never asked"))
    code, out, err = await agentbot(tmp_path, command, *(["hello"] if command == "ask" else []))
    assert code != 0
    assert "Traceback" not in out + err and "UnicodeDecodeError" not in out + err, err[-2000:]
    said = (err if command == "ask" else out + err).strip().splitlines()
    line = next(x for x in said if ".env" in x)
    assert "UTF-8" in line, said
    assert llm.requests == []


async def test_an_endpoint_url_without_v1_is_named_as_the_problem_not_the_model(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # Ollama's docs give http://localhost:11434 as its address; its OpenAI API lives under /v1, and
    # POST /chat/completions at the root answers a plain 404 page.
    llm.script(text("never asked"))
    root = llm.base_url.removesuffix("/v1")
    env = {"OPENAI_BASE_URL": root, "AGENT_MODEL": "llama3.1"}
    code, out, err = await agentbot(tmp_path, "ask", "hello", env=env)
    assert code == 1 and out == ""
    line = next(x for x in err.splitlines() if "OPENAI_BASE_URL" in x)
    assert "/v1" in line, line  # what to fix
    assert "model 'llama3.1' was not found" not in line, line
    # doctor says the same, instead of "does not serve llama3.1 (none listed)"
    code, out, _ = await agentbot(tmp_path, "doctor", env=env | {"MEMORY_ENABLED": "false"})
    line = next(x for x in out.splitlines() if "provider openai" in x)
    assert code == 1 and line.startswith("FAIL") and "OPENAI_BASE_URL" in line and "/v1" in line, line
    assert "does not serve" not in line, line


async def test_a_backup_into_a_place_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "MEMORY_ENABLED": "false"}
    code, _, err = await agentbot(tmp_path, "doctor", env=env)  # creates and migrates the database
    assert (tmp_path / "data" / "agentbot.sqlite3").exists(), err
    (tmp_path / "a-file").write_text("not a directory")
    for dest in (tmp_path / "a-file" / "backup", Path("/proc/agentbot-backup/today")):
        code, out, err = await agentbot(tmp_path, "backup", str(dest), env=env)
        assert code == 1 and out == ""
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-1500:]
        assert str(dest) in err, err
    # and putting a good backup back into a DATA_DIR that cannot be created names DATA_DIR
    code, _, err = await agentbot(tmp_path, "backup", str(tmp_path / "good"), env=env)
    assert code == 0, err
    bad = env | {"DATA_DIR": "/proc/agentbot-restore"}
    code, out, err = await agentbot(tmp_path, "restore", str(tmp_path / "good"), env=bad)
    assert code == 1 and out == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-1500:]
    assert "DATA_DIR" in err and "/proc/agentbot-restore" in err, err


async def test_run_with_a_data_dir_it_cannot_create_names_data_dir_not_discord(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    # /proc passes a writability check as root, yet nothing can be created in it (as on a read-only mount).
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "gpt-4o-mini",
        "DATA_DIR": "/proc/agentbot-data",
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "MEMORY_ENABLED": "false",
    }
    code, _, err = await agentbot(tmp_path, "run", env=env)
    assert code != 0
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "DATA_DIR" in line and "/proc/agentbot-data" in line, line
    assert "could not reach Discord" not in line, line  # Discord was reached; the disk was the problem


@pytest.mark.parametrize("command", [["run"], ["sync", "--guild", "123456789012345678"]])
async def test_a_server_id_the_bot_is_not_in_is_named_not_blamed_on_the_api_url(
    command: list[str], fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "gpt-4o-mini",
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_SYNC_GUILD_ID": "123456789012345678",  # a server the bot was never invited to
        "MEMORY_ENABLED": "false",
    }
    code, _, err = await agentbot(tmp_path, *command, env=env)
    assert code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert ("--guild" if command[0] == "sync" else "DISCORD_SYNC_GUILD_ID") in line, line
    assert "DISCORD_API_BASE_URL" not in line, line  # the URL was right: Discord answered
