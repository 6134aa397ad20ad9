"""Operator mistakes end in one line naming the setting and what to do, with a non-zero exit (16.2).

Every setting of the tree gets a bad value and goes through ``agentbot run``, ``ask`` and ``doctor``
in process (typer's runner runs the real commands; fast enough for all of them); a lean set then goes
through real processes, in parallel, for the entry point and the two streams.
"""

from __future__ import annotations

import asyncio
import os
import sys
import typing
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr
from typer.testing import CliRunner

from agent.config import AgentSettings, ConfigError, load_agent_settings
from agent.tools.research import ResearchToolSettings
from bot.cli import app
from bot.config import BotSettings, load_bot_settings
from tests.settings_names import tree_fields
from tests.warm_agentbot import agentbot_process

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))
NON_ASCII_KEY = "sk-“pasted”-key"

SPECIAL = {
    "PRICES_FILE": "/nonexistent/prices.json",
    "ROUTER_TIERS_FILE": "/nonexistent/tiers.toml",
    "TOOL_RATE_LIMITS": "web_search=lots",
    "BOT_THREAD_ARCHIVE_MINUTES": "7",
    "DISCORD_SHARD_IDS": "zero,one",
    "DATA_DIR": "/dev/null/agentbot-data",
    "PYTHON_EXECUTABLE": "/nonexistent/python3",
    "SEARXNG_URL": "localhost:8888",
}
FREE_TEXT = {
    # Any text is a valid value here; what a wrong one breaks is checked where it is used.
    "AGENT_MODEL": "doctor checks the endpoint serves it (test_doctor.py)",
    "ROUTER_JUDGE_MODEL": "a model spec; an unusable one stops start-up naming it (test_router_tiers.py)",
    "READER_MODEL": "a model spec; an unusable one stops start-up naming it (test_doctor.py)",
    "MEMORY_EMBEDDING_MODEL": "the embedding server's model name",
    "FETCH_USER_AGENT": "any header text",
    "PYTHON_HIDE_PATHS": "paths that need not exist",
    "HEALTH_HOST": "an interface name or address",
    "CHROMA_HOST": "a host name; one that is down is named by doctor (below)",
    "VISION_MODELS": "model names or * patterns; an unknown name only means no images (test_bot_attach.py)",
}


def bad_value(key: str, annotation: object) -> str:
    if key in SPECIAL:
        return SPECIAL[key]
    args = typing.get_args(annotation)
    if SecretStr in args:
        return NON_ASCII_KEY
    if key.endswith("_URL"):
        return "localhost:11434/v1"  # no scheme
    if annotation is bool or bool in args:
        return "maybe"
    if annotation in (int, float) or int in args or float in args:
        return "lots"
    return "bogus"  # a choice or tier pairs


def all_fields() -> dict[str, object]:
    out = {}
    for cls in (AgentSettings, BotSettings):
        out |= {f.alias: f.annotation for f in cls.model_fields.values() if f.alias}
    return out


BAD = {k: bad_value(k, a) for k, a in all_fields().items() if k not in FREE_TEXT}


def test_every_setting_has_a_bad_value_or_a_reason_it_has_none() -> None:
    assert set(BAD) | set(FREE_TEXT) == set(tree_fields())


BASE = {
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "OPENAI_API_KEY": "sk-operator-test-0001",
    "DISCORD_TOKEN": "discord-token-operator-test",
    "DISCORD_API_BASE_URL": "http://127.0.0.1:9/api/v10",
    "MEMORY_ENABLED": "false",
    "PYTHON_SANDBOX": "off",
    "ROUTER_CLASSIFIER": "heuristic",
    "NO_COLOR": "1",
}
AGENT_KEYS = {f.alias for f in AgentSettings.model_fields.values()}
CASES = [
    (key, command)
    for key in sorted(BAD)
    for command in ("run", "ask", "doctor")
    if not (command == "ask" and key not in AGENT_KEYS)  # ask reads no bot setting
]


def check_one_line(key: str, command: str, code: int, out: str, err: str) -> None:
    where = f"agentbot {command} with {key}: exit {code}\nstdout: {out}\nstderr: {err}"
    assert code != 0 and "Traceback" not in out + err, where
    if command == "doctor":  # a report: the failing check is one line naming the setting
        assert any(line.startswith("FAIL") and key in line for line in out.splitlines()), where
    else:
        assert out == "" and len(err.strip().splitlines()) == 1 and key in err, where
    assert NON_ASCII_KEY not in out + err  # a key, even a bad one, is never echoed


@pytest.mark.parametrize(("key", "command"), CASES)
def test_every_bad_setting_through_every_command_is_one_line(
    key: str, command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for k, v in (BASE | {"DATA_DIR": str(tmp_path), key: BAD[key]}).items():
        monkeypatch.setenv(k, v)
    r = CliRunner().invoke(app, ["ask", "hello"] if command == "ask" else [command])
    assert isinstance(r.exception, SystemExit), r.exception  # anything else is a traceback
    check_one_line(key, command, r.exit_code, r.stdout, r.stderr)


def start_up() -> None:
    """What every command parses before it does anything."""
    s = load_agent_settings()
    load_bot_settings()
    ResearchToolSettings.from_settings(s, s.data_dir)


def test_combinations_that_cannot_work_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_BACKEND", "searxng")
    with pytest.raises(ConfigError, match="SEARCH_BACKEND=searxng needs SEARXNG_URL"):
        start_up()


# --- real processes -------------------------------------------------------------------------------

LEAN = {  # an agent and a bot-only setting (every setting went through the commands above)
    "PRICES_FILE": "/nonexistent/prices.json",
    "DISCORD_SHARD_IDS": "zero",
}
BOT_ONLY = {"DISCORD_SHARD_IDS"}


async def agentbot(*args: str, cwd: Path, within: float = 60, **env: str) -> tuple[int, str, str]:
    code, out, err = await agentbot_process(
        *args, cwd=cwd, env=os.environ | {"DATA_DIR": str(cwd)} | BASE | env, within=within
    )
    return code, out.decode(), err.decode()


async def test_bad_settings_through_run_ask_and_doctor(tmp_path: Path) -> None:
    jobs = []
    for key, value in LEAN.items():
        for command in ("run", "ask", "doctor"):
            if command == "ask" and key in BOT_ONLY:
                continue
            args = ("ask", "hello") if command == "ask" else (command,)
            jobs.append((key, command, agentbot(*args, cwd=tmp_path, **{key: value})))
    limit = asyncio.Semaphore(4)

    async def bounded(coro: typing.Awaitable[tuple[int, str, str]]) -> tuple[int, str, str]:
        async with limit:
            return await coro

    results = await asyncio.gather(*(bounded(c) for _, _, c in jobs))
    for (key, command, _), (code, out, err) in zip(jobs, results, strict=True):
        check_one_line(key, command, code, out, err)


async def test_ask_without_a_key_fails_at_once_naming_it(tmp_path: Path) -> None:
    code, out, err = await agentbot(
        "ask", "hi", cwd=tmp_path, OPENAI_BASE_URL="https://api.openai.com/v1", OPENAI_API_KEY=""
    )
    assert (code, out) == (2, "") and err.startswith("agentbot: OPENAI_API_KEY is not set")


async def test_an_unreachable_endpoint_is_named_on_stderr_only(tmp_path: Path) -> None:
    code, out, err = await agentbot("ask", "hi", cwd=tmp_path, MODEL_MAX_ATTEMPTS="1")
    assert code == 1 and out == ""  # nothing for $(agentbot ask ...) to mistake for an answer
    assert "could not be reached" in err and "check OPENAI_BASE_URL" in err and "Traceback" not in err


async def test_doctor_names_a_chroma_server_that_is_down(tmp_path: Path) -> None:
    code, out, _ = await agentbot(
        "doctor", cwd=tmp_path, MEMORY_ENABLED="true", CHROMA_HOST="127.0.0.1", CHROMA_PORT="9", within=120
    )
    line = next(ln for ln in out.splitlines() if ln.startswith(("FAIL memory", "ok   memory")))
    assert code == 1 and line.startswith("FAIL memory")
    assert "http://127.0.0.1:9" in line and "CHROMA_HOST" in line


async def _discord_answering(status: int) -> web.AppRunner:
    async def any_route(request: web.Request) -> web.Response:
        return web.json_response({"message": "Not Found", "code": 0}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_route)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.mark.parametrize(
    "status", [404, 503]
)  # 503: discord.py does not retry it (500/502/504 it does, ~16 s)
@pytest.mark.parametrize("command", ["run", "sync"])
async def test_discord_answering_404_or_unreachable_is_one_line(
    command: str, status: int, tmp_path: Path
) -> None:
    runner = await _discord_answering(status)
    try:
        port = runner.addresses[0][1]
        code, out, err = await agentbot(
            command, cwd=tmp_path, DISCORD_API_BASE_URL=f"http://127.0.0.1:{port}/api"
        )
    finally:
        await runner.cleanup()
    assert code == 1 and "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.startswith("agentbot:")]
    assert (
        len(lines) == 1
        and f"Discord answered HTTP {status}" in lines[0]
        and "DISCORD_API_BASE_URL" in lines[0]
    )
    # `sync` honours DISCORD_API_BASE_URL too: the closed port is reported, not discord.com.
    code, out, err = await agentbot(command, cwd=tmp_path)
    assert code == 1 and "could not reach Discord" in err and "Traceback" not in out + err
