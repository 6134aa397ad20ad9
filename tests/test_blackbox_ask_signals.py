"""Stopping ``agentbot ask`` from outside while a tool runs: Ctrl-C, ``kill``, ``timeout``, a closed terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.test_blackbox_ask_tools import AGENTBOT


def _processes_naming(fragment: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if fragment.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # it ended while we looked
            pass
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_mid_tool_stops_in_one_line_and_kills_the_sandbox(
    sig: signal.Signals, llm: FakeLLM, tmp_path: Path
) -> None:
    llm.script(
        tool_call(
            "run_python",
            {"code": "open('half.txt', 'w').write('x')\nimport time\nwhile True: time.sleep(0.05)"},
        ),
        text("never reached"),
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path / "data"),
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-ask-test-key-0001",
        "MEMORY_ENABLED": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        "ask",
        "loop forever",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen = b""
    while b"run_python(" not in seen:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, seen
        seen += line
    workspace = str(tmp_path / "data" / "workspaces")
    for _ in range(200):  # the sandbox has started once the code's first write is there
        if list(Path(workspace).glob("*/half.txt")):
            break
        await asyncio.sleep(0.05)
    assert _processes_naming(workspace), "the sandbox never started"
    proc.send_signal(sig)
    out, rest = await asyncio.wait_for(proc.communicate(), 60)
    err = (seen + rest).decode()
    left = _processes_naming(workspace)
    for pid in left:  # never leave them behind, even when the assertion below fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert out == b"" and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "agentbot: interrupted", err
    assert left == [], f"sandboxed code still running after {sig.name}: {left}"
    assert len(llm.requests) == 1  # nothing more was asked (or paid for) after the signal
