"""Safe built-in tools that need no network: a calculator that never uses eval, and a clock."""

from __future__ import annotations

import ast
import datetime as dt
import math
import operator
import sys
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from agent.tools.registry import Tool, ToolRefused, tool

_BINOPS: dict[type[ast.operator], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# fmt: off
_MATH = ("sqrt", "log", "log10", "log2", "exp", "sin", "cos", "tan", "asin", "acos", "atan", "floor", "ceil",
         "factorial")
_FUNCS: dict[str, Any] = {f: getattr(math, f) for f in _MATH} | {"abs": abs, "round": round, "min": min,
                                                                 "max": max}
# fmt: on
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_MAX_EXPONENT = 10_000
_MAX_DIGITS = 10_000


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ToolRefused(f"exponent {right} is too large (limit {_MAX_EXPONENT})")
        ints = isinstance(left, int) and isinstance(right, int)
        if (
            isinstance(node.op, ast.Pow)
            and ints
            and right > 0
            and left.bit_length() * right > _MAX_DIGITS * 4
        ):
            # Checked before computing: CPython's big-int pow holds the GIL, so "(9**9999)**9999" froze
            # the bot's event loop (every server) for minutes while its timeout could not even fire.
            raise ToolRefused("result would be too large")
        if (
            isinstance(node.op, ast.Mult)
            and ints
            and left.bit_length() + right.bit_length() > _MAX_DIGITS * 4
        ):
            raise ToolRefused("result would be too large")
        return _BINOPS[type(node.op)](left, right)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
    ):
        args = [_eval(a) for a in node.args]
        if node.func.id == "factorial" and args and args[0] > 5000:
            raise ToolRefused("factorial argument too large (limit 5000)")
        if (
            node.func.id == "round"
            and len(args) > 1
            and isinstance(args[1], int)
            and abs(args[1]) > _MAX_DIGITS
        ):
            # round(5, -10**9) computes 10**(10**9) inside CPython, holding the GIL: the bot froze like
            # the pow above, for every server, and the tool's timeout could not fire.
            raise ToolRefused(f"round's digits are too many (limit {_MAX_DIGITS})")
        return _FUNCS[node.func.id](*args)
    allowed = (
        "numbers, + - * / // % **, parentheses, " + ", ".join(sorted(_FUNCS)) + ", " + ", ".join(_CONSTS)
    )
    raise ToolRefused(f"unsupported expression element {ast.dump(node)[:60]}; allowed: {allowed}")


@tool(timeout=5)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (no code is executed).

    Args:
        expression: e.g. "2**10 / (3 + 4)" or "sqrt(2) * pi". Supports + - * / // % **, parentheses,
            sqrt, log, log10, log2, exp, sin, cos, tan, asin, acos, atan, abs, round, floor, ceil, min,
            max, factorial and the constants pi, e, tau.
    """
    if len(expression) > 500:
        raise ToolRefused("expression too long (limit 500 characters)")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise ToolRefused(f"not a valid expression: {e.msg}") from e
    try:
        value = _eval(tree)
    except ZeroDivisionError as e:
        raise ToolRefused("division by zero") from e
    except (ValueError, OverflowError, TypeError) as e:
        raise ToolRefused(f"cannot evaluate: {e}") from e
    if isinstance(value, float):
        if not math.isfinite(value):  # 1e308*10 came back "inf", read as an answer
            raise ToolRefused("the result is too large for floating point")
        # 15 significant digits, as a calculator shows: every digit a float holds read 100*1.1 as
        # 110.00000000000001 and 0.1+0.2 as 0.30000000000000004, which the model passed on.
        return f"{value:.15g}"
    try:
        return str(value)
    except ValueError as e:  # Python's own message told the model to call sys.set_int_max_str_digits()
        raise ToolRefused(f"the result has more than {sys.get_int_max_str_digits():,} digits") from e


@tool(timeout=5)
def current_time(timezone: str = "UTC") -> str:
    """The current date and time in a time zone.

    Args:
        timezone: an IANA zone name such as "Europe/Paris", "America/New_York" or "UTC".
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        q = timezone.lower().split("/")[-1].replace(" ", "_")
        close = sorted(z for z in available_timezones() if q and q in z.lower())[:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else " Use an IANA name like Europe/Paris."
        raise ToolRefused(f"unknown time zone {timezone!r}.{hint}") from e
    now = dt.datetime.now(zone)
    return now.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z), %A")


def builtin_tools() -> list[Tool]:
    return [calculator, current_time]
