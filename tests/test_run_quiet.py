"""A default start of ``agentbot run`` says each thing once (16.8): no voice warnings from discord.py (the
bot has no voice), no warning per unconfigured tier model, nothing repeated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
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


async def test_a_default_start_prints_no_repeated_or_voice_warnings(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    env = os.environ | {  # what README's quick start asks for, nothing more
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_API_KEY": "sk-quiet-start-0001",
        "AGENT_MODEL": "llama3.1",
        "DATA_DIR": str(tmp_path),
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "run", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await fake.wait_ready(within=90)
        await asyncio.sleep(1.0)  # let start-up finish saying what it says
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "voice will NOT be supported" not in text
    assert "router_model_unconfigured" not in text
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line).get("event"))
        except ValueError:
            events.append(line)
    repeated = {e for e in events if events.count(e) > 1}
    assert not repeated, text
