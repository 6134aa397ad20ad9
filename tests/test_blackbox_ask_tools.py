"""``agentbot ask`` with its tools, driven as a terminal user runs it: the real command in a subprocess,
the scripted OpenAI-compatible server on 127.0.0.1, a temp directory as the working directory."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.warm_agentbot import agentbot_process

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))


def ask_env(llm: FakeLLM, tmp_path: Path) -> dict[str, str]:
    """The only settings an ``agentbot ask`` under test sees: the scripted model, a data directory of its own."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path / "data"),
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-ask-test-key-0001",
        "MEMORY_ENABLED": "false",
    }


async def ask_cli(
    llm: FakeLLM,
    tmp_path: Path,
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    stdout: Any = asyncio.subprocess.PIPE,
    stderr: Any = asyncio.subprocess.PIPE,
    preexec_fn: Any = None,
) -> tuple[int, str, str]:
    """``agentbot ask ARGS`` with only these settings; ``stdin`` None means no input (/dev/null)."""
    base = ask_env(llm, tmp_path) | {"COLUMNS": "200"}
    if stdout is stderr is asyncio.subprocess.PIPE and preexec_fn is None:
        code, out_, err_ = await agentbot_process(
            *("ask", *args), cwd=tmp_path, env=base | (env or {}), stdin=stdin
        )
        return code, out_.decode(), err_.decode()
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        "ask",
        *args,
        cwd=tmp_path,
        env=base | (env or {}),
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=preexec_fn,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, (out or b"").decode(), (err or b"").decode()


async def test_files_and_python_work_in_a_workspace_the_user_is_told_about(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # `ask` offered write_file and run_python, then refused every call: "this session has no workspace".
    llm.script(
        tool_call("write_file", {"path": "data.csv", "content": "a,b\n1,2\n"}),
        tool_call(
            "run_python",
            {"code": "print(open('data.csv').read().count(','))\nopen('out.txt','w').write('3')"},
        ),
        text("Done: out.txt holds the answer."),
    )
    code, out, err = await ask_cli(llm, tmp_path, "make a csv and count its commas")
    assert (code, out) == (0, "Done: out.txt holds the answer.\n"), err
    assert "✗" not in err and "no workspace" not in err, err
    assert "✓ run_python" in err and "stdout: 2" in err, err
    kept = next(line for line in err.splitlines() if line.startswith("files"))
    where = Path(kept.split(" kept in ")[1])
    assert where.parent == tmp_path / "data" / "workspaces", kept  # under DATA_DIR, not the current directory
    assert sorted(p.name for p in where.iterdir()) == ["data.csv", "out.txt"]
    assert (where / "out.txt").read_text() == "3"
    assert not (tmp_path / "data.csv").exists()
    assert err.strip().splitlines()[-1].startswith("3 steps · ")  # the summary stays the last line


def test_a_workspace_left_without_files_is_removed(tmp_path: Path) -> None:
    import io

    from agent.ask import _keep_files
    from agent.terminal import TerminalRenderer

    err = io.StringIO()
    (tmp_path / "ws" / "empty-folder").mkdir(parents=True)  # list_files made it, nothing was written
    _keep_files(tmp_path / "ws", TerminalRenderer(err))
    assert not (tmp_path / "ws").exists() and err.getvalue() == ""


async def test_one_step_is_said_as_one_step(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    # `agentbot ask --max-steps 1` on a task that needs a tool: "Stopped after 1 steps ...".
    from agent.loop import Agent
    from agent.models.openai import OpenAIChatModel
    from agent.tools.builtin import builtin_tools
    from agent.tools.registry import ToolRegistry

    llm.script(tool_call("calculator", {"expression": "2+2"}))
    model = OpenAIChatModel("gpt-4o-mini", base_url=llm.base_url, api_key="sk-t", client=http, max_attempts=1)
    result = await Agent(model, ToolRegistry(builtin_tools()), max_iterations=1).ask("2+2?")
    assert (result.status, result.text) == ("max_iterations", "Stopped after 1 step without a final answer.")


def test_progress_lines_drop_direction_overrides_that_would_disguise_a_tool_call() -> None:
    # U+202E in a tool's arguments (from a page or the model) reversed the rest of the progress line.
    import io

    from agent.events import ToolCallEvent, ToolResultEvent
    from agent.terminal import TerminalRenderer

    err = io.StringIO()
    renderer = TerminalRenderer(err)
    name = "invoice\u202egpj.exe"
    renderer.render(
        ToolCallEvent(step=1, call_id="c", name="read_file", arguments={"path": name}, raw_arguments="")
    )
    renderer.render(ToolResultEvent(step=1, call_id="c", name="read_file", output=f"read \u2067{name}\u2069"))
    shown = err.getvalue()
    assert "invoicegpj.exe" in shown and not any(
        c in shown for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    )
