"""The library's public face: what ``import agent`` offers, and that importing it decides nothing about logs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

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
