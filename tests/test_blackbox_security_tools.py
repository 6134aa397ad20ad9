"""Built-in tools as a hostile member drives them through the model."""

from __future__ import annotations

import json
from pathlib import Path

from agent.messages import ToolCall
from agent.tools.builtin import builtin_tools
from agent.tools.python_exec import python_tools
from agent.tools.registry import ToolContext, ToolRegistry
from agent.tools.sandbox_run import PythonSettings


async def test_blackbox_security_calculator_refuses_a_power_too_large_before_computing_it() -> None:
    # "(9**9999)**9999" passed the exponent check (9999) and ran CPython's big-int pow, which holds the
    # GIL: the bot's event loop stood still for minutes (its 5 s timeout fired after 15 s at **999).
    reg = ToolRegistry(builtin_tools())

    async def calc(expression: str) -> tuple[bool, str]:
        out = await reg.execute(
            ToolCall("c", "calculator", json.dumps({"expression": expression})), ToolContext()
        )
        return out.is_error, out.output

    for attack in ("(9**9999)**99", "(9**9999)**9999", "((2**100)**100)**100"):
        assert await calc(attack) == (True, '{"error": "result would be too large"}'), attack
    assert await calc("2**100") == (False, str(2**100))
    assert await calc("(2**10)**300") == (False, str(2**3000))
    assert await calc("(-3)**3") == (False, "-27")


async def test_blackbox_security_run_python_shows_the_names_code_made_escaped(tmp_path: Path) -> None:
    # "files written:" listed names as the code made them: a newline forged a heading line in the
    # thread, U+202E reversed what followed, and ESC sequences reached the `agentbot ask` terminal.
    ws = tmp_path / "sessions" / "s1"
    ws.mkdir(parents=True)
    reg = ToolRegistry(python_tools(PythonSettings(timeout=10, cpu_seconds=5)))
    code = "for n in ['a\\n# FORGED @everyone', 'b\\u202etxt.exe', 'c\\x1b[31mred']:\n    open(n, 'w').write('x')\n"
    out = await reg.execute(
        ToolCall("c", "run_python", json.dumps({"code": code})), ToolContext(session_id="s1", workspace=ws)
    )
    assert not out.is_error, out.output
    written = next(line for line in out.output.splitlines() if line.startswith("files written:"))
    assert written == (
        "files written: a\\n# FORGED @everyone (1 B), b\\u202etxt.exe (1 B), c\\x1b[31mred (1 B)"
    )
    assert "\x1b" not in out.output and "\u202e" not in out.output
