"""One retry policy (agent.retry) for model calls, tools and embeddings: each retry announced before its
wait, and never sooner than the server's Retry-After / retry-after-ms."""

from __future__ import annotations

import email.utils
import time

import httpx

from agent import ToolRegistry, TransientToolError, tool
from agent.events import RetryEvent, ToolResultEvent
from agent.loop import Agent
from agent.retry import parse_retry_after
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.test_agent_loop import collect, make_agent


def test_retry_after_is_read_from_milliseconds_seconds_or_a_date() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "Retry-After": "9"})) == 0.25
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < (parse_retry_after(httpx.Headers({"Retry-After": later})) or 0) <= 60
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


async def test_a_tool_retry_is_announced_first_and_waits_as_long_as_the_server_asked(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    calls: list[float] = []

    @tool(max_attempts=3, retry_initial=0.01, retry_max=0.02)
    async def flaky_api(q: str) -> str:
        """Look something up.

        Args:
            q: what to look up.
        """
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise TransientToolError("HTTP 429 from api.example", retry_after=0.3)
        return f"found {q}"

    llm.script(tool_call("flaky_api", {"q": "x"}), text("done"))
    events = await collect(make_agent(llm, http, [flaky_api]), "look up x")
    kinds = [type(e).__name__ for e in events]
    retry = next(e for e in events if isinstance(e, RetryEvent))
    assert (retry.what, retry.attempt, retry.max_attempts) == ("flaky_api", 1, 3)
    assert retry.delay >= 0.3 and "429" in retry.error
    assert kinds.index("RetryEvent") < kinds.index("ToolResultEvent")  # the notice came before the wait
    assert calls[1] - calls[0] >= 0.3
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result.output == "found x" and not result.is_error


async def test_a_tool_that_keeps_failing_reports_after_its_attempts(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    @tool(max_attempts=2, retry_initial=0.01, retry_max=0.02)
    async def down(q: str) -> str:
        """Always down.

        Args:
            q: anything.
        """
        raise TransientToolError("HTTP 503 from api.example")

    llm.script(tool_call("down", {"q": "x"}), text("gave up"))
    agent: Agent = make_agent(llm, http, [down])
    events = await collect(agent, "try")
    assert len([e for e in events if isinstance(e, RetryEvent)]) == 1
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result.is_error and "HTTP 503" in result.output
    assert isinstance(agent.tools, ToolRegistry)
