"""Built-in tools as a hostile member drives them through the model."""

from __future__ import annotations

import json

from agent.messages import ToolCall
from agent.tools.builtin import builtin_tools
from agent.tools.registry import ToolContext, ToolRegistry


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
