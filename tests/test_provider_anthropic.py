"""The Anthropic adapter against a scripted Messages API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from agent import ToolRegistry
from agent.events import (
    Cost,
    ErrorEvent,
    FinalEvent,
    RetryEvent,
    TextDelta,
    ToolResultEvent,
    Usage,
    UsageEvent,
)
from agent.loop import Agent
from agent.messages import Message, ToolCall
from agent.models.anthropic import AnthropicModel
from agent.models.base import (
    ContextOverflowError,
    ModelAuthError,
    ModelError,
    ModelNotFoundError,
    ModelResponse,
    ModelSettings,
    ModelUnavailableError,
)
from agent.tools.builtin import builtin_tools
from tests.fakes.anthropic_server import FakeAnthropic, Reply, error, text, tool_call, tool_calls

KEY = "sk-ant-api03-test-secret-key-0123456789"


@pytest.fixture
async def api() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        server.api_key = KEY
        yield server


def claude(
    api: FakeAnthropic, http: httpx.AsyncClient, name: str = "claude-sonnet-4-5", **kw
) -> AnthropicModel:
    return AnthropicModel(
        name,
        api_key=kw.pop("api_key", KEY),
        base_url=api.base_url,
        client=http,
        backoff_initial=0.01,
        backoff_max=0.05,
        **kw,
    )


async def collect(agent: Agent, task: str) -> list:
    async with contextlib.aclosing(agent.run(task)) as it:
        return [ev async for ev in it]


async def drain(model: AnthropicModel, messages: list[Message]) -> list:
    async with contextlib.aclosing(model.stream(messages, [], ModelSettings())) as it:
        return [c async for c in it]


@pytest.mark.parametrize("stream", [True, False])
async def test_multi_step_tool_session(api: FakeAnthropic, http: httpx.AsyncClient, stream: bool) -> None:
    api.script(
        tool_call("calculator", {"expression": "6*7"}, fragment=3),
        tool_calls(("calculator", {"expression": "42+1"}), ("calculator", {"expression": "2**3"})),
        text("The answer is 43, and 8.", fragment=4),
    )
    agent = Agent(claude(api, http), ToolRegistry(builtin_tools()), settings=ModelSettings(stream=stream))
    events = await collect(agent, "compute")

    final = events[-1]
    assert isinstance(final, FinalEvent) and final.result.status == "completed"
    assert final.result.text == "The answer is 43, and 8."
    assert [e.output for e in events if isinstance(e, ToolResultEvent)] == ["42", "43", "8"]
    if stream:
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The answer is 43, and 8."

    first, second, third = api.requests
    # The system prompt travels as the top-level parameter, never as a message.
    assert "research agent" in first["system"] and all(m["role"] != "system" for m in first["messages"])
    assert first["max_tokens"] > 0 and first.get("stream", False) is stream
    assert {t["name"] for t in first["tools"]} >= {"calculator"}
    assert first["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    # Step 2 sees its own tool_use (input as an object) and the result in the next user message.
    assistant, result = second["messages"][-2:]
    use = assistant["content"][-1]
    assert use["type"] == "tool_use" and use["input"] == {"expression": "6*7"}
    assert result["role"] == "user"
    assert result["content"][0]["type"] == "tool_result"
    assert result["content"][0]["tool_use_id"] == use["id"]
    assert result["content"][0]["content"] == "42"
    assert result["content"][-1]["cache_control"] == {"type": "ephemeral"}
    # Two parallel results go back in ONE user message, in call order.
    roles = [m["role"] for m in third["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    results = third["messages"][-1]["content"]
    assert [b["content"] for b in results] == ["43", "8"]
    assert [b["tool_use_id"] for b in results] == [
        b["id"] for b in third["messages"][-2]["content"] if b["type"] == "tool_use"
    ]
    assert all(h.get("x-api-key") == KEY and h.get("anthropic-version") == "2023-06-01" for h in api.headers)


async def test_usage_counts_cache_reads_and_prices_them(api: FakeAnthropic, http: httpx.AsyncClient) -> None:
    api.script(
        text("hi", prompt_tokens=1000, cached_tokens=600, cache_write_tokens=100, completion_tokens=50)
    )
    agent = Agent(claude(api, http), ToolRegistry())
    events = await collect(agent, "hi")
    usage = next(e for e in events if isinstance(e, UsageEvent))
    assert (usage.usage.prompt_tokens, usage.usage.cached_tokens, usage.usage.completion_tokens) == (
        1000,
        600,
        50,
    )
    assert usage.model == "claude-sonnet-4-5" and usage.usage.cache_write_tokens == 100
    # Sonnet 4.5 as published: $3 input, $3.75 5-minute cache write, $0.30 cache read, $15 output.
    expected = (300 * 3.00 + 100 * 3.75 + 600 * 0.30 + 50 * 15.00) / 1e6
    assert usage.cost.known and usage.cost.usd == pytest.approx(expected)


async def test_overloaded_529_is_retried_after_retry_after(
    api: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    api.script(error(529, "overloaded_error", "Overloaded", headers={"retry-after": "0.2"}), text("ok"))
    events = await collect(Agent(claude(api, http), ToolRegistry()), "hi")
    retry = next(e for e in events if isinstance(e, RetryEvent))
    assert retry.delay >= 0.2 and "529" in retry.error and "overloaded_error" in retry.error
    assert events[-1].result.text == "ok" and len(api.requests) == 2


async def test_error_event_mid_stream_voids_the_text_and_retries(
    api: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    api.script(Reply(text="half an ans", stream_error="overloaded_error"), text("whole answer"))
    events = await collect(Agent(claude(api, http), ToolRegistry()), "hi")
    kinds = [type(e).__name__ for e in events]
    # The partial text came, then a retry told the renderer it is void, then the real answer.
    assert kinds.index("RetryEvent") > kinds.index("TextDelta")
    assert events[-1].result.text == "whole answer"


async def test_retries_exhausted_become_unavailable(api: FakeAnthropic, http: httpx.AsyncClient) -> None:
    api.script(*[error(500, "api_error", "Internal server error")] * 2)
    with pytest.raises(ModelUnavailableError, match="still failing after 2 attempts"):
        await drain(claude(api, http, max_attempts=2), [Message("user", "hi")])


@pytest.mark.parametrize(
    ("reply", "exc", "needle"),
    [
        (error(401, "authentication_error", f"invalid x-api-key {KEY}"), ModelAuthError, "ANTHROPIC_API_KEY"),
        (error(403, "permission_error", "not allowed"), ModelAuthError, "may use model"),
        (error(404, "not_found_error", "model: claude-nope"), ModelNotFoundError, "ANTHROPIC_BASE_URL"),
        (
            error(400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"),
            ContextOverflowError,
            "too long",
        ),
        (
            error(400, "invalid_request_error", "messages: roles must alternate"),
            ModelError,
            "roles must alternate",
        ),
    ],
)
async def test_client_errors_fail_at_once_with_a_fix(
    api: FakeAnthropic, http: httpx.AsyncClient, reply: Reply, exc: type[ModelError], needle: str
) -> None:
    api.script(reply)
    with pytest.raises(exc) as info:
        await drain(claude(api, http), [Message("user", "hi")])
    assert needle in info.value.message
    assert not info.value.retryable
    assert KEY not in info.value.message and KEY not in str(info.value)
    assert len(api.requests) == 1


async def test_a_wrong_key_is_rejected_and_never_shown(api: FakeAnthropic, http: httpx.AsyncClient) -> None:
    wrong = "sk-ant-api03-wrong-key-9999999999"
    events = await collect(Agent(claude(api, http, api_key=wrong), ToolRegistry()), "hi")
    err = next(e for e in events if isinstance(e, ErrorEvent))
    assert "rejected the API key" in err.message and wrong not in err.message
    assert "wrong-key" not in repr(claude(api, http, api_key=wrong))


async def test_history_from_another_provider_is_mapped(api: FakeAnthropic, http: httpx.AsyncClient) -> None:
    """A run that fell back from an OpenAI-compatible model: foreign ids, a bad call, repeated roles."""
    api.script(text("done"))
    history = [
        Message("system", "be brief"),
        Message("user", "first"),
        Message("user", "second"),
        Message(
            "assistant",
            "let me check  ",
            tool_calls=[
                ToolCall("call.abc:1", "calculator", '{"expression": "1+1"}'),
                ToolCall("call.abc:2", "calculator", '{"expression": "1+'),
            ],
        ),
        Message("tool", "2", tool_call_id="call.abc:1", name="calculator"),
        Message("tool", '{"error": "not valid JSON"}', tool_call_id="call.abc:2", name="calculator"),
        Message("user", "Your last reply was empty. Please give your answer now."),
    ]
    chunks = await drain(claude(api, http), history)
    assert isinstance(chunks[-1], ModelResponse) and chunks[-1].message.content == "done"
    sent = api.requests[0]
    assert sent["system"] == "be brief"
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert [b["text"] for b in sent["messages"][0]["content"]] == ["first", "second"]
    blocks = sent["messages"][1]["content"]
    assert blocks[0] == {"type": "text", "text": "let me check"}
    uses = [b for b in blocks if b["type"] == "tool_use"]
    assert [u["id"] for u in uses] == ["call_abc_1", "call_abc_2"]
    assert uses[1]["input"] == {"_raw_arguments": '{"expression": "1+'}
    last = sent["messages"][2]["content"]
    assert [b["type"] for b in last] == ["tool_result", "tool_result", "text"]
    assert [b["tool_use_id"] for b in last[:2]] == ["call_abc_1", "call_abc_2"]


async def test_tool_arguments_reassembled_from_json_fragments(
    api: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    tricky = {"payload": 'quote " backslash \\ unicode é✓ 😀 {} []\n end', "n": 7}
    api.script(tool_call("echo", tricky, fragment=2, split_writes=True))
    chunks = await drain(claude(api, http), [Message("user", "go")])
    call = chunks[-1].message.tool_calls[0]
    assert call.name == "echo" and json.loads(call.arguments) == tricky
    assert chunks[-1].finish_reason == "tool_calls"


class RecordingBudget:
    def __init__(self) -> None:
        self.reserved: list[tuple[str, Usage, float | None]] = []
        self.settled: list[tuple[Usage, Cost]] = []

    async def reserve(self, model: str, estimate: Usage, estimated_cost: float | None) -> int:
        self.reserved.append((model, estimate, estimated_cost))
        return len(self.reserved)

    async def settle(self, token: int, model: str, provider: str, usage: Usage, cost: Cost) -> None:
        self.settled.append((usage, cost))


async def test_reservation_prices_the_prompt_as_a_cache_write(
    api: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    # Each step may write its whole prompt to the cache at 1.25x input: a reservation at the plain input
    # rate would let a budget be overshot on every Anthropic step.
    api.script(text("hi", prompt_tokens=40, cache_write_tokens=40, completion_tokens=5))
    budget = RecordingBudget()
    async with contextlib.aclosing(Agent(claude(api, http), ToolRegistry()).run("hi", budget=budget)) as it:
        events = [ev async for ev in it]
    assert events[-1].result.ok
    (model, est, usd), ((used, cost),) = budget.reserved[0], budget.settled
    assert model == "claude-sonnet-4-5" and est.prompt_tokens > 0
    # Sonnet 4.5: $3.75 per million written to the cache, $15 per million out.
    assert usd == pytest.approx((est.prompt_tokens * 3.75 + est.completion_tokens * 15) / 1e6)
    assert used.cache_write_tokens == 40 and cost.usd == pytest.approx((40 * 3.75 + 5 * 15) / 1e6)
