"""The library's public face: what ``import agent`` offers, and that importing it decides nothing about logs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agent

ROOT = Path(__file__).resolve().parents[1]


def test_the_public_api_is_importable_from_the_package() -> None:
    assert agent.__all__ and len(set(agent.__all__)) == len(agent.__all__)
    for name in agent.__all__:
        assert getattr(agent, name) is not None, name
    # What the README's library example and the bot need, from one place.
    for name in ("Agent", "ToolRegistry", "tool", "FinalEvent", "RouteDecision", "Router", "OpenAIChatModel"):
        assert name in agent.__all__, name


def test_logging_configured_after_import_applies_to_the_loop(tmp_path: Path) -> None:
    """The README's library example imports agent first and configures logging after: the loop's lines
    must then follow that configuration (JSON here), not structlog's coloured console default."""
    script = textwrap.dedent(
        """
        import asyncio, io, sys
        from agent import Agent, ModelResponse, Usage
        from agent.messages import Message
        from agent.logs import configure_logging

        class Scripted:
            name, provider = "scripted", "local"
            async def stream(self, messages, tools, settings):
                yield ModelResponse(Message("assistant", "hi"), Usage(3, 1, 0, 1), "scripted")

        out = io.StringIO()
        configure_logging("INFO", "json", stream=out)
        result = asyncio.run(Agent(Scripted()).ask("hello"))
        sys.stdout.write(out.getvalue())
        print("RESULT", result.text)
        """
    )
    got = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    lines = got.stdout.splitlines()
    assert lines[-1] == "RESULT hi"
    logged = [json.loads(line) for line in lines[:-1]]
    call = next(e for e in logged if e["event"] == "model_call")
    assert call["logger"] == "agent.loop" and call["model"] == "scripted"
    assert "\x1b[" not in got.stdout + got.stderr  # no colour codes anywhere


async def test_a_routing_model_hears_each_step_and_its_switch_reaches_the_caller_as_typed_data() -> None:
    """The loop's one routing hook: facts about the step in, a typed switch out; nothing else is driven."""
    from agent import (
        Agent,
        Message,
        ModelResponse,
        ModelSwitched,
        RouteDecided,
        RouteDecision,
        StepOutcome,
        SwitchNotice,
        ToolCall,
        ToolRegistry,
        Usage,
        tool,
    )

    @tool
    def lookup(q: str) -> str:
        """Look up.

        Args:
            q: what.
        """
        return "found"

    class TwoModels:
        provider = "local"

        def __init__(self) -> None:
            self.name, self.heard = "small", []

        @property
        def route(self) -> RouteDecision:
            return RouteDecision("medium", self.name, writer="big" if self.name == "small" else None)

        def after_step(self, outcome: StepOutcome) -> SwitchNotice | None:
            self.heard.append(outcome)
            if outcome.tool_calls or self.name == "big":
                return None
            self.name = "big"  # the researcher said it is done: hand over to the writer
            return SwitchNotice("small", "big", "the writer answers", "hand_over", self.route)

        async def stream(self, messages, tools, settings):
            if self.name == "big":
                yield ModelResponse(Message("assistant", "the answer"), Usage(5, 2, 0, 1), "big")
            elif any(m.role == "tool" for m in messages):
                yield ModelResponse(Message("assistant", "done researching"), Usage(5, 2, 0, 1), "small")
            else:
                call = ToolCall("c1", "lookup", '{"q": "x"}')
                yield ModelResponse(Message("assistant", "", tool_calls=[call]), Usage(5, 2, 0, 1), "small")

    model = TwoModels()
    events = [ev async for ev in Agent(model, ToolRegistry([lookup])).run("task")]
    assert isinstance(events[0], RouteDecided) and events[0].route == RouteDecision("medium", "small", "big")
    switch = next(e for e in events if isinstance(e, ModelSwitched))
    assert (switch.kind, switch.route) == ("hand_over", RouteDecision("medium", "big", None))
    assert [(o.tool_calls, o.empty) for o in model.heard] == [(1, False), (0, False), (0, False)]
    result = events[-1].result
    assert result.text == "the answer" and "done researching" not in str([m.content for m in result.messages])


def test_log_timestamps_read_as_structlog_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Log lines keep the timestamp text structlog's ISO UTC stamper writes (agent.logs makes it itself,
    the date and time of each second once), fractions and whole seconds alike, across second changes."""
    import io
    from datetime import UTC, datetime

    import structlog

    from agent import logs

    out = io.StringIO()
    logs.configure_logging("INFO", "json", stream=out)
    instants = [1_764_921_599_999_999_999, 1_764_921_600_000_000_000, 1_764_921_600_000_123_999]
    instants += [1_764_921_600_987_654_321, 1_764_921_661_000_001_000]
    for ns in instants:
        monkeypatch.setattr(logs.time, "time_ns", lambda ns=ns: ns)
        structlog.get_logger().info("tick")
    got = [json.loads(line)["timestamp"] for line in out.getvalue().splitlines()]
    # What structlog.processors.TimeStamper(fmt="iso", utc=True) writes at each instant.
    want = [
        datetime.fromtimestamp(ns // 10**9, UTC)
        .replace(microsecond=ns // 1000 % 10**6)
        .isoformat()
        .replace("+00:00", "Z")
        for ns in instants
    ]
    assert got == want and want[1].endswith(":00Z") and want[0].endswith(".999999Z")
