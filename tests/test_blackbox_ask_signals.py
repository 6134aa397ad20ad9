"""Stopping ``agentbot ask`` from outside while a tool runs: Ctrl-C, ``kill``, ``timeout``, a closed terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.fakes.llm_server import FakeLLM, Reply, error, text, tool_call
from tests.test_blackbox_ask_tools import AGENTBOT, ask_env


def _processes_naming(fragment: str) -> list[int]:
    """Processes whose command line names ``fragment``, or that work in it (the sandbox's supervisor:
    its settings, the workspace's path among them, are on its stdin, never its command line)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cwd = os.readlink(cmdline.parent / "cwd")
            if fragment.encode() in cmdline.read_bytes() or cwd.startswith(fragment):
                found.append(int(cmdline.parent.name))
        except OSError:  # it ended while we looked
            pass
    return found


async def _stopped(
    llm: FakeLLM,
    tmp_path: Path,
    sig: signal.Signals,
    after: bytes,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> tuple[int, str, str]:
    """``agentbot ask``, sent ``sig`` once stderr shows ``after`` (and ``ready`` returned)."""
    env = ask_env(llm, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        "ask",
        "loop forever",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Sent SIGTERM, it runs as a script's background job (`agentbot ask ... & kill $!`), in which
        # the shell has SIGINT ignored: a SIGTERM turned into SIGINT was then ignored too.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sig == signal.SIGTERM else None,
    )
    assert proc.stderr is not None
    seen = b""
    while after not in seen:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, seen
        seen += line
    if ready is not None:
        await ready()
    proc.send_signal(sig)
    out, rest = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), (seen + rest).decode()


def _sandbox_that_runs_forever(llm: FakeLLM, tmp_path: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    """The model runs code that never ends; a marker in its command line (the sandbox's own command line
    no longer names the host's workspace), and a wait until the code runs."""
    marker = f"forever-{uuid.uuid4().hex}"
    llm.script(
        tool_call(
            "run_python",
            {
                "code": f"# {marker}\nopen('half.txt', 'w').write('x')\nimport time\nwhile True: time.sleep(0.05)"
            },
        ),
        text("never reached"),
    )
    workspace = str(tmp_path / "data" / "workspaces")

    async def sandbox_started() -> None:
        for _ in range(200):  # the sandbox has started once the code's first write is there
            if list(Path(workspace).glob("*/half.txt")):
                break
            await asyncio.sleep(0.05)
        assert _processes_naming(marker), "the sandbox never started"

    return marker, sandbox_started


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_mid_tool_stops_in_one_line_and_kills_the_sandbox(
    sig: signal.Signals, llm: FakeLLM, tmp_path: Path
) -> None:
    marker, sandbox_started = _sandbox_that_runs_forever(llm, tmp_path)

    code, out, err = await _stopped(llm, tmp_path, sig, b"run_python(", sandbox_started)
    left = _processes_naming(marker)
    for pid in left:  # never leave them behind, even when the assertion below fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert code == 130, err
    assert out == "" and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "agentbot: interrupted", err
    # What the run had spent is still said: the step's call was paid for before the signal.
    assert "100 prompt + 20 completion tokens · cost $0.000027" in err.strip().splitlines()[-2], err
    assert "estimated" not in err  # no model call was under way
    assert left == [], f"sandboxed code still running after {sig.name}: {left}"
    assert len(llm.requests) == 1  # nothing more was asked (or paid for) after the signal


async def test_a_signal_mid_model_call_counts_that_call_by_estimate(llm: FakeLLM, tmp_path: Path) -> None:
    # Stopped while the provider was answering, the total read "cost $0.0000": a paid call as free. Then
    # it said "not counted"; now the call's prompt is counted by estimate, as the bot's quota counts it.
    llm.script(Reply(hang=True))
    code, out, err = await _stopped(llm, tmp_path, signal.SIGINT, b"step 1")
    assert (code, out) == (130, ""), err
    said = err.strip().splitlines()
    assert said[-3].startswith("0 steps · estimated: ") and "status: cancelled" in said[-3], err
    assert " 0 prompt" not in said[-3] and "models gpt-4o-mini" in said[-3] and "$0.0000 " not in said[-3], (
        err
    )
    assert said[-2:] == ["estimated: the model call in progress when stopped", "agentbot: interrupted"], err


async def test_a_killed_ask_takes_its_sandboxed_code_along(llm: FakeLLM, tmp_path: Path) -> None:
    # kill -9 (or the OOM killer) gives agentbot no chance to stop the sandbox: it must die by itself.
    marker, sandbox_started = _sandbox_that_runs_forever(llm, tmp_path)

    code, _, _ = await _stopped(llm, tmp_path, signal.SIGKILL, b"run_python(", sandbox_started)
    assert code == -signal.SIGKILL
    for _ in range(100):  # the kernel kills them as their parents go; give it a moment
        if not _processes_naming(marker):
            break
        await asyncio.sleep(0.05)
    left = _processes_naming(marker)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"sandboxed code still running after agentbot was killed: {left}"


async def test_a_signal_while_a_refused_call_waits_to_be_retried_counts_no_call_in_progress(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # Stopped while waiting out a 429's Retry-After, it said a call was in progress and not counted:
    # nothing was being asked, so nothing can still be billed.
    llm.script(error(429, "slow down", headers={"Retry-After": "30"}), text("never reached"))
    code, out, err = await _stopped(llm, tmp_path, signal.SIGINT, b"retrying")
    assert (code, out) == (130, ""), err
    assert "estimated" not in err and err.strip().splitlines()[-1] == "agentbot: interrupted", err
    assert len(llm.requests) == 1
