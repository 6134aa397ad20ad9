"""One retry policy (agent.retry) for model calls, tools, embeddings and Discord writes: each retry
announced before its wait, and never sooner than the server's Retry-After / retry-after-ms."""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import AsyncIterator

import httpx

from agent import ToolRegistry, TransientToolError, tool
from agent.events import RetryEvent, ToolResultEvent
from agent.loop import Agent
from agent.retry import RetryPolicy, parse_retry_after
from bot.stream_sink import FreeTurn, Grant, SinkError
from bot.streamer import WRITE_RETRY, ThreadStreamer
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


class FlakySink:
    """A thread whose sends fail with these errors first."""

    def __init__(self, *errors: SinkError) -> None:
        self.errors, self.sent = list(errors), []

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[Grant]:
        yield FreeTurn()

    async def send(self, content: str, *, nonce: str, files=None, notify=None) -> tuple[int, str]:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(content)
        return 1, content

    async def edit(self, message_id: int, content: str) -> None: ...

    async def delete(self, message_id: int) -> None: ...


async def test_a_failing_discord_write_waits_as_the_one_policy_says_and_lands_once() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    outage = [SinkError("HTTP 502", status=502) for _ in range(3)]
    limited = [SinkError("HTTP 429", status=429, retry_after=w) for w in (20.0, 0.3)]
    sink = FlakySink(*outage, *limited)
    streamer = ThreadStreamer(sink, name="t", sleep=sleep, writes=100)
    streamer.add("step", "**Step 1** · calculator")
    await streamer.close(within=10)
    assert sink.sent == ["**Step 1** · calculator"]
    # 1, 2, 4 s plus up to 1 s of jitter each; then exactly what Discord asked, short or long.
    assert [int(w) for w in waits[:3]] == [1, 2, 4] and waits[3:] == [20.0, 0.3]
    assert WRITE_RETRY.wait(20, outage[0]) <= 61.0  # doubling stops at a minute (plus jitter)
    assert RetryPolicy(max_retry_after=30).wait(1, SinkError("x", retry_after=500)) <= 30.0 + 1.0
