"""``agentbot run`` stops in every state (16.3): SIGTERM while the gateway cannot be reached exits 0,
and after DISCORD_CONNECT_ATTEMPTS failed connects the bot exits 1 with one line, not a traceback
every 5 s forever."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord, FakeGuild

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord([FakeGuild.create("Lab")]) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start(fake: FakeDiscord, tmp_path: Path, **extra: str) -> asyncio.subprocess.Process:
    """The bot with a working REST API (login succeeds) and a gateway nobody listens on."""
    env = os.environ | {
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_API_KEY": "sk-stop-test-0001",
        "DATA_DIR": str(tmp_path),
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{closed_port()}/",
        "MEMORY_ENABLED": "false",
        "PYTHON_SANDBOX": "off",
        "ROUTER_CLASSIFIER": "heuristic",
        "LOG_FORMAT": "json",
        "BOT_SHUTDOWN_GRACE_SECONDS": "5",
    }
    return await asyncio.create_subprocess_exec(
        AGENTBOT,
        "run",
        cwd=tmp_path,
        env=env | extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_after_n_failed_gateway_connects_the_bot_exits_1_with_one_line(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    proc = await start(fake, tmp_path, DISCORD_CONNECT_ATTEMPTS="2")
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    text = err.decode()
    assert proc.returncode == 1, text
    assert "Traceback" not in text and out == b""
    last = text.strip().splitlines()[-1]
    assert last.startswith("agentbot: could not connect to the Discord gateway") and "in 2 attempts" in last
    assert "DISCORD_GATEWAY_URL" in last and "DISCORD_CONNECT_ATTEMPTS" in last
    assert text.count("gateway_connect_failed") == 1  # one line per failed attempt, then the verdict


async def test_sigterm_while_the_gateway_cannot_connect_exits_0(fake: FakeDiscord, tmp_path: Path) -> None:
    proc = await start(fake, tmp_path, DISCORD_CONNECT_ATTEMPTS="0")  # keep trying forever
    assert proc.stderr is not None
    seen = b""
    while b"gateway_connect_failed" not in seen:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, seen.decode()
        seen += line
    proc.send_signal(signal.SIGTERM)
    _, rest = await asyncio.wait_for(proc.communicate(), 30)  # the grace is 5 s; SIGKILL was needed before
    text = (seen + rest).decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text
