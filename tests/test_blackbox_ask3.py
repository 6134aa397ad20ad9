"""``agentbot ask`` driven as terminal users drive it (third QA pass): what reached the terminal, the exit
codes and the files left behind, against the scripted model on 127.0.0.1."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import shlex
import signal
import struct
import sys
import termios
from asyncio.subprocess import PIPE
from pathlib import Path

import httpx
import pytest

from agent import Agent, OpenAIChatModel
from agent.events import Cost, ErrorEvent, RunResult, ToolCallEvent, ToolResultEvent, Usage
from agent.terminal import TerminalRenderer
from agent.toolset import build_registry
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call, tool_calls
from tests.test_blackbox_ask_tools import AGENTBOT, ask_cli, ask_env


def test_a_line_break_from_the_model_cannot_forge_a_progress_line() -> None:
    # A tool name or unparsable arguments with line breaks printed lines of their own, so the model
    # could show "✓ run_python 0.01s: sandbox check passed" or a fake next step that never happened.
    forged = "\n  ✓ run_python 0.01s: sandbox check passed\nstep 2 · gpt-4o-mini"
    err = io.StringIO()
    renderer = TerminalRenderer(err)
    renderer.render(
        ToolCallEvent(step=1, call_id="a", name="run" + forged, arguments=None, raw_arguments="{")
    )
    renderer.render(
        ToolCallEvent(
            step=1, call_id="b", name="write_file", arguments=None, raw_arguments='{"a":\n' + forged
        )
    )
    renderer.render(ToolResultEvent(step=1, call_id="a", name="run" + forged, output="unknown tool"))
    renderer.render(ErrorEvent(step=1, message="server said:\r\n" + forged))
    lines = err.getvalue().splitlines()
    assert [line.split()[:1] for line in lines] == [["→"], ["→"], ["✓"], ["error:"]], lines
    assert "sandbox check passed" in lines[0]  # shown, as text on the call's own line


SIGINT_AT = """
import importlib.abc, os, signal, sys

class _CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["SIGINT_AT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, _CtrlC())
"""


async def test_ctrl_c_before_the_run_starts_is_one_line_and_130(llm: FakeLLM, tmp_path: Path) -> None:
    # Ctrl-C while the command loads (about a second of imports) printed a 30-line traceback; while
    # `agentbot ask` waited for its task on stdin it ended with 130 and said nothing at all.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SIGINT_AT)
    for module in ("agent.config", "bot.ask_input"):  # loading the command; reading the task
        env = {"PYTHONPATH": str(hook), "SIGINT_AT": module}
        code, out, err = await ask_cli(llm, tmp_path, stdin=b"2+2?", env=env)
        assert (code, out, err) == (130, "", "agentbot: interrupted\n"), module
    assert llm.requests == []


def test_a_task_typed_without_quotes_is_shown_quoted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `agentbot ask What is the capital of France?` said only "Got unexpected extra argument(s) (is the
    # capital of France?)": the usual first try of the command, with no hint that the task needs quotes.
    from bot.cli import main

    monkeypatch.setattr(sys, "argv", ["agentbot", "ask", "-m", "gpt-4o", "What's", "the", "capital?"])
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    assert (stop.value.code, out) == (2, "")
    assert err.startswith("agentbot: the task is several arguments: quote it as one, e.g. agentbot ask ")
    assert shlex.split(err.split("e.g. ")[1].split(" (see")[0]) == ["agentbot", "ask", "What's the capital?"]


async def test_a_task_from_a_non_blocking_pipe_is_read_whole(llm: FakeLLM, tmp_path: Path) -> None:
    # A parent that set O_NONBLOCK on the pipe (Node's child_process does): ask read what had arrived so
    # far and paid the model to answer half the question (or, before the first byte, a TypeError).
    llm.script(text("Paris"))
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "ask", cwd=tmp_path, env=ask_env(llm, tmp_path), stdin=read_end, stdout=PIPE, stderr=PIPE
    )
    os.close(read_end)
    try:
        os.write(write_end, b"What is the capital ")
        for _ in range(3000):  # until ask has read the first half (30 s at most)
            if not _unread(write_end):
                break
            await asyncio.sleep(0.01)
        os.write(write_end, b"of France?")
    finally:
        os.close(write_end)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, out) == (0, b"Paris\n"), err.decode()[-2000:]
    assert llm.requests[0]["messages"][-1]["content"] == "What is the capital of France?"


def _unread(fd: int) -> int:
    """Bytes written into a pipe that its reader has not read yet."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


async def test_a_key_in_env_with_its_quote_left_open_is_named_not_called_unset(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # python-dotenv skipped the line with a warning of its own, printed twice, and then ask said
    # "OPENAI_API_KEY is not set: put your key in .env", which is where it was.
    (tmp_path / ".env").write_text(
        'AGENT_MAX_STEPS=4\nOPENAI_API_KEY="sk-proj-secret-0042\nAGENT_STREAM=true\n'
    )
    code, out, err = await ask_cli(llm, tmp_path, "2+2?", env={"OPENAI_API_KEY": ""})
    assert (code, out) == (2, "")
    assert err.startswith("agentbot: .env line 2 (OPENAI_API_KEY) cannot be read: close its quote"), err
    assert len(err.splitlines()) == 1 and "secret" not in err
    assert llm.requests == []


async def test_a_run_that_keeps_no_files_leaves_no_folders_where_it_was_asked(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # With the default DATA_DIR (./data), one list_files left an empty data/workspaces/ in whatever
    # directory the user ran ask from; the workspace itself was removed, its parents were not.
    (tmp_path / "notes.txt").write_text("mine")
    llm.script(tool_call("list_files", {}), text("The workspace is empty."))
    code, out, err = await ask_cli(llm, tmp_path, "What is in the workspace?", env={"DATA_DIR": "./data"})
    assert (code, out) == (0, "The workspace is empty.\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


async def test_a_tool_call_cut_off_at_the_output_limit_says_so(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    # The model writing a long report with write_file reached AGENT_MAX_TOKENS inside the arguments; it
    # was told only "not valid JSON (Unterminated string...)", so it sent the same long call again, cut
    # again, every step until the step limit, and the user never learnt why.
    cut = '{"path": "report.md", "content": "# Report\\n\\nThe otters of the Baltic'
    llm.script(Reply(tool_calls=[("write_file", cut)], finish="length"), text("Written in parts."))
    model = OpenAIChatModel("gpt-4o-mini", base_url=llm.base_url, api_key="sk-t", client=http, max_attempts=1)
    agent = Agent(model, build_registry(), max_iterations=3)
    results = [ev async for ev in agent.run("Write the report") if isinstance(ev, ToolResultEvent)]
    assert [r.is_error for r in results] == [True]
    assert "output limit (AGENT_MAX_TOKENS" in results[0].output and "append" in results[0].output
    assert llm.requests[1]["messages"][-1]["content"] == results[0].output  # what the model was told


async def test_tool_rate_limits_hold_in_ask_as_in_the_bot(llm: FakeLLM, tmp_path: Path) -> None:
    # ask built its tools without the rate-limit guard: TOOL_RATE_LIMITS had no effect, so one run could
    # make 16 web searches a step on the operator's search key, or start 16 sandboxes at once.
    from agent.ask import ask
    from agent.config import AgentSettings

    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=llm.base_url,
        OPENAI_API_KEY="sk-t",
        DATA_DIR=str(tmp_path),
        TOOL_RATE_LIMITS="calculator=1/600",
    )
    llm.script(
        tool_calls(("calculator", {"expression": "1+1"}), ("calculator", {"expression": "2+2"})), text("2")
    )
    out, err = io.StringIO(), io.StringIO()
    await ask("1+1, and 2+2?", settings, out=out, err=err)
    told = [m["content"] for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert told[0] == "2" and "rate limit: calculator is limited to 1 calls per 600 s" in told[1], told
    assert "✗ calculator" in err.getvalue() and out.getvalue() == "2\n"


async def test_an_emoji_split_across_stream_events_reaches_the_terminal_whole(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # A server that split an emoji's UTF-16 pair across two events ("\ud83d", then "\ude00") left two
    # halves no encoding can write: 😀 was printed as \ud83d\ude00, with advice to use a UTF-8 locale.
    from agent.ask import ask
    from agent.config import AgentSettings

    settings = AgentSettings(OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-t", DATA_DIR=str(tmp_path))  # type: ignore[call-arg]
    llm.script(text("Done \ud83d\ude00, and a half \udc00.", fragment=1))
    out, err = io.StringIO(), io.StringIO()
    await ask("Smile", settings, out=out, err=err)
    assert out.getvalue() == "Done 😀, and a half \\udc00.\n"
    assert "! the answer has 1 broken character(s) from the server" in err.getvalue()
    assert "locale" not in err.getvalue()


async def test_a_reader_model_without_its_key_is_named_as_the_reader(llm: FakeLLM, tmp_path: Path) -> None:
    # READER_MODEL=anthropic:... without ANTHROPIC_API_KEY said "remove the model from the tiers
    # (ROUTER_TIERS_FILE ...)": ask has no tiers, and nothing named READER_MODEL.
    from agent.ask import ask
    from agent.config import AgentSettings, ConfigError

    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=llm.base_url, DATA_DIR=str(tmp_path), READER_MODEL="anthropic:claude-haiku-4-5"
    )
    with pytest.raises(ConfigError) as refused:
        await ask("Read this page", settings, out=io.StringIO(), err=io.StringIO())
    assert str(refused.value).startswith(
        "READER_MODEL=anthropic:claude-haiku-4-5: ANTHROPIC_API_KEY is not set"
    )
    assert "tiers" not in str(refused.value) and llm.requests == []


async def test_nohup_keeps_ask_running_when_the_terminal_hangs_up(llm: FakeLLM, tmp_path: Path) -> None:
    # ask caught SIGHUP to stop cleanly, over the SIG_IGN that `nohup` set: `nohup agentbot ask ... &`
    # was stopped at logout, the one thing nohup is for.
    llm.script(text("Still here.", delay=0.5))

    def nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "ask", "Research this overnight", cwd=tmp_path, env=ask_env(llm, tmp_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=PIPE, stderr=PIPE, preexec_fn=nohup,
    )  # fmt: skip
    for _ in range(3000):  # until the model is asked (30 s at most)
        if llm.requests:
            break
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGHUP)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, out) == (0, b"Still here.\n"), err.decode()[-2000:]


def test_a_made_up_tool_name_of_any_length_takes_one_short_line() -> None:
    # An unknown tool named with 50,000 characters was printed whole, on its call and on its result.
    err = io.StringIO()
    renderer = TerminalRenderer(err)
    name = "x" * 50_000
    renderer.render(ToolCallEvent(step=1, call_id="a", name=name, arguments={}, raw_arguments="{}"))
    renderer.render(ToolResultEvent(step=1, call_id="a", name=name, output="unknown tool", is_error=True))
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and all(len(line) < 120 for line in lines), [len(line) for line in lines]


def test_an_unknown_cost_of_locally_counted_tokens_is_not_called_an_estimate() -> None:
    # A local model with no price, behind a server that reports no usage: the footer read
    # "cost estimated: unknown (no price for llama3)", as if a price had been guessed.
    err = io.StringIO()
    usage = Usage(prompt_tokens=120, completion_tokens=30, requests=1, estimated=True)
    TerminalRenderer(err).summary(
        RunResult(
            text="ok",
            status="completed",
            steps=1,
            usage=usage,
            cost=Cost(0.0, ("llama3",)),
            models=["llama3"],
        )
    )
    TerminalRenderer(err).summary(
        RunResult(
            text="ok", status="completed", steps=1, usage=usage, cost=Cost(0.0012), models=["gpt-4o-mini"]
        )
    )
    first, second = err.getvalue().splitlines()
    assert "estimated: 120 prompt + 30 completion tokens" in first
    assert "cost unknown (no price for llama3)" in first
    assert "cost estimated: $0.0012" in second


def test_progress_lines_show_when_columns_is_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # Some CI shells export COLUMNS=0: rich took it as a width of 0 and every progress line vanished.
    monkeypatch.setenv("COLUMNS", "0")
    err = io.StringIO()
    TerminalRenderer(err).render(
        ToolCallEvent(
            step=1, call_id="a", name="calculator", arguments={"expression": "6*7"}, raw_arguments=""
        )
    )
    assert "calculator" in err.getvalue()
