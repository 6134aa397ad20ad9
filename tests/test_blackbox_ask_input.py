"""Where ``agentbot ask`` takes its task from: the argument, or standard input (a pipe, a file, `-`)."""

from __future__ import annotations

import asyncio
import io
import os
import pty
from pathlib import Path

import pytest

from tests.fakes.llm_server import FakeLLM, text
from tests.test_blackbox_ask_tools import AGENTBOT, ask_cli, ask_env


async def test_the_task_can_come_from_a_pipe_in_any_script(llm: FakeLLM, tmp_path: Path) -> None:
    # `agentbot ask < question.txt` ended in "Missing argument 'task'", and `agentbot ask -` sent the
    # model a paid question reading "-": a task longer than the OS allows an argument (128 KB) could
    # not be asked at all.
    task = "ما هي عاصمة فرنسا؟ 🇫🇷\nAnswer in one word, e.g. «Paris».\n" + "context " * 20_000
    llm.script(text("باريس 🇫🇷"), text("Paris"))
    code, out, err = await ask_cli(llm, tmp_path, stdin=task.encode())
    assert (code, out) == (0, "باريس 🇫🇷\n"), err
    code, out, err = await ask_cli(llm, tmp_path, "-", stdin=task.encode())
    assert (code, out) == (0, "Paris\n"), err
    assert [r["messages"][-1]["content"] for r in llm.requests] == [task, task]


async def test_no_task_anywhere_is_one_line_and_no_paid_call(llm: FakeLLM, tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        cases = {  # what stdin holds: what the one line says
            b"": "the task is empty",
            b"caf\xe9?": "is not UTF-8",
            terminal: "give the task as the argument",
        }
        for stdin, said in cases.items():
            if isinstance(stdin, int):  # a terminal: nothing is piped, so the task is missing
                code, out, err = await _ask_from(llm, tmp_path, stdin)
            else:
                code, out, err = await ask_cli(llm, tmp_path, stdin=stdin)
            assert (code, out) == (2, ""), (stdin, err)
            assert len(err.strip().splitlines()) == 1 and said in err, (stdin, err)
    finally:
        os.close(controller)
        os.close(terminal)
    assert llm.requests == []


async def test_odd_arguments_are_named_in_one_line(llm: FakeLLM, tmp_path: Path) -> None:
    cases = {  # arguments: what the one line says
        # `-m "$MODEL"` with MODEL unset ran the default model, silently
        ("-m", "", "question"): "--model is empty",
        # a task starting with "-" was only "No such option: -5"
        ("-5 degrees in Fahrenheit?",): "agentbot ask -- '-5 degrees in Fahrenheit?'",
    }
    for args, said in cases.items():
        code, out, err = await ask_cli(llm, tmp_path, *args)
        assert (code, out) == (2, ""), (args, err)
        assert len(err.strip().splitlines()) == 1 and said in err, (args, err)
    assert llm.requests == []


async def _ask_from(llm: FakeLLM, tmp_path: Path, stdin_fd: int) -> tuple[int, str, str]:
    env = ask_env(llm, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        "ask",
        cwd=tmp_path,
        env=env,
        stdin=stdin_fd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def test_a_task_piped_in_is_read_up_to_a_bound(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `yes | agentbot ask` (or a wrong file) would otherwise fill the memory before any check.
    from bot.ask_input import MAX_STDIN_BYTES, TaskError, task_text

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"y\n" * (MAX_STDIN_BYTES // 2 + 1))))
    with pytest.raises(TaskError, match="over 8 MB"):
        task_text("-")


async def test_help_shows_flags_as_flags_and_the_exit_codes_as_one_paragraph(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "80", "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "ask", "--help", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE
    )
    raw, _ = await asyncio.wait_for(proc.communicate(), 60)
    lines = raw.decode().splitlines()
    # "--show-text <bool>" read as taking a value: `--show-text true` then failed on "extra argument (true)"
    flag = next(line for line in lines if "--show-text" in line)
    assert "<bool>" not in flag, flag
    # The exit codes kept the source's line breaks: at 80 columns, lines of 12 characters in between.
    start = next(i for i, line in enumerate(lines) if "Exit codes:" in line)
    paragraph = [line.strip() for line in lines[start:] if line.strip()]
    assert all(len(line) > 60 for line in paragraph[:-1]), paragraph
    assert "130 interrupted; 141" in " ".join(paragraph) and "standard input" in raw.decode()


def test_every_commands_help_names_values_and_shows_flags_as_flags() -> None:
    # typer's rich help put a type after every parameter: `--help <bool>`, `--version <bool>`,
    # `--force <bool>` (as if each took a value), `task <str>`, `--max-steps <int range>`, `dest <path>`;
    # and the command list kept the docstrings' line breaks, so `ask` and `doctor` broke mid-sentence.
    import re

    import typer
    from typer.testing import CliRunner

    from bot.cli import app

    group = typer.main.get_command(app)
    names = list(group.commands)  # type: ignore[attr-defined]
    assert {"ask", "doctor", "backup", "restore"} <= set(names)
    runner = CliRunner()
    env = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    shown = {name: runner.invoke(app, [name, "--help"], env=env).output for name in names}
    shown["agentbot"] = runner.invoke(app, ["--help"], env=env).output
    for name, said in shown.items():
        assert "--help " in said and not re.findall(r"<[a-z][a-z ]*>", said), (name, said)
    assert re.search(r"--max-steps +N \[1<=x<=100\] +Most model calls", shown["ask"]), shown["ask"]
    assert "Usage: root ask [OPTIONS] [TASK]" in shown["ask"] and "TASK is what to research" in shown["ask"]
    assert runner.invoke(app, ["ask", "-h"], env=env).output == shown["ask"]  # was "No such option: -h"
    for name in names:  # each command's summary is whole on its line of the list
        summary = group.commands[name].help.split("\n\n")[0]  # type: ignore[attr-defined]
        assert "\n" not in summary.strip(), (name, summary)
        assert any(line.strip(" │").endswith(summary) for line in shown["agentbot"].splitlines()), name


async def test_a_task_typed_under_a_non_utf8_locale_reaches_the_model_as_typed(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # With LC_ALL=C and PYTHONUTF8=0 the argument's bytes past ASCII arrived as surrogates: a
    # UnicodeEncodeError traceback when the request was encoded. Latin-1 bytes are one line instead.
    llm.script(text("Paris"))
    env = {"LC_ALL": "C", "PYTHONUTF8": "0"}
    (tmp_path / "b").mkdir()
    (ok, out, err), (bad, _, said) = await asyncio.gather(
        ask_cli(llm, tmp_path, "Où est la tour ✓?", env=env),
        ask_cli(llm, tmp_path / "b", "caf\udce9", env=env),  # the bytes b"caf\xe9", not UTF-8
    )
    assert (ok, out) == (0, "Paris\n"), err
    assert [r["messages"][-1]["content"] for r in llm.requests] == ["Où est la tour ✓?"]
    assert bad == 2 and said.strip().splitlines() == [
        "agentbot: the task argument is not UTF-8 text (byte 3): convert it, e.g. with iconv, "
        "or set a UTF-8 locale (LANG=C.UTF-8)"
    ], said


def test_an_option_left_without_its_value_points_to_the_commands_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `agentbot ask -m` said only "Option '-m' requires an argument.": the parser's errors have no context.
    from bot.cli import main

    monkeypatch.setattr("sys.argv", ["agentbot", "ask", "What is 2**32?", "-m"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "agentbot: Option '-m' requires an argument. (see `agentbot ask --help`)\n"
    )
