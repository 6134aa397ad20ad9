"""The agent-side gaps the last closing note named, each driven as its user meets it: a start-up stopped
while an MCP server is slow to answer, a provider's error text in the bot's voice, an answer far past
``max_tokens``, a timed-out ``run_python`` in ``ask``, a failure at step 1, and an empty variable that
hides ``.env``'s key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.llm_server import FakeLLM
from tests.test_blackbox_ask_tools import AGENTBOT, ask_env


def _processes_naming(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # it ended while we looked
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def _slow_server_file(tmp_path: Path, marker: str) -> Path:
    """An operator's stdio MCP server started through a wrapper (as ``npx``/``uvx``/``sh -c`` start
    theirs) that never answers its handshake within the start-up."""
    inner = f"{sys.executable} -c 'import time; time.sleep(300)' {marker}; true"
    servers = tmp_path / "mcp.toml"
    servers.write_text(
        f'[servers.slow]\ncommand = "sh"\nargs = ["-c", {json.dumps(inner)}]\nconnect_timeout = 120\n'
    )
    return servers


@pytest.mark.parametrize("command", ["ask", "run"])
async def test_a_start_up_stopped_while_an_mcp_server_handshakes_leaves_no_server_process(
    command: str, llm: FakeLLM, fake: FakeDiscord, tmp_path: Path
) -> None:
    """Ctrl-C in ``ask`` (SIGTERM in ``run``) while a wrapped stdio server had not answered: the
    wrapper was killed, the server it started kept running after ``agentbot`` exited (1 of 2 processes
    left each time, for good)."""
    marker = f"slow-mcp-{uuid.uuid4().hex}"
    env = ask_env(llm, tmp_path) | {"MCP_SERVERS_FILE": str(_slow_server_file(tmp_path, marker))}
    if command == "run":
        env |= {
            "DISCORD_TOKEN": fake.token,
            "DISCORD_API_BASE_URL": fake.api_url,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
        }
    log = tmp_path / "agentbot.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            AGENTBOT,
            command,
            *(["hello"] if command == "ask" else []),
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    try:
        for _ in range(600):  # both the wrapper and the server it started are up
            if len(_processes_naming(marker)) == 2 or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert len(_processes_naming(marker)) == 2, log.read_text()[-3000:]
        proc.send_signal(signal.SIGINT if command == "ask" else signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        left = _processes_naming(marker)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    said = log.read_text()
    assert left == [], f"MCP server processes left after agentbot {command} exited: {said[-3000:]}"
    assert code == (130 if command == "ask" else 0) and "Traceback" not in said, said[-3000:]
    assert llm.requests == []


async def test_a_stdio_server_writing_without_end_is_left_out_with_the_reason() -> None:
    """A stdio server that wrote 3 MiB without a newline: the SDK's transport held all it wrote (its
    buffer grew without a bound). It is cut at 2 MiB and the server left out, saying why."""
    from agent.tools.mcp import McpServer, McpTools

    flood = "head -c 3145728 /dev/zero | tr '\\0' x; sleep 60"
    async with McpTools([McpServer("flood", command="sh", args=("-c", flood), connect_timeout=10)]) as mcp:
        assert mcp.tools() == []
        assert "message of more than 2,097,152 bytes" in mcp.problems["flood"], mcp.problems
