"""The Gemini adapter against a scripted Gemini API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from agent import ToolRegistry
from agent.events import FinalEvent, RetryEvent, TextDelta, ToolCallEvent, ToolResultEvent, UsageEvent
from agent.loop import Agent
from agent.messages import Message, ToolCall
from agent.models.base import (
    ContextOverflowError,
    ModelAuthError,
    ModelError,
    ModelNotFoundError,
    ModelResponse,
    ModelSettings,
)
from agent.models.gemini import SKIP_SIGNATURE, GeminiModel
from agent.models.prices import default_prices
from agent.tools.builtin import builtin_tools
from tests.fakes.anthropic_server import Reply, text, tool_call, tool_calls
from tests.fakes.gemini_server import FakeGemini, google_error

KEY = "AIzaSyTest-Secret-Key-0123456789abcdefghi"


@pytest.fixture
async def api() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        server.api_key = KEY
        yield server


def gemini(api: FakeGemini, http: httpx.AsyncClient, name: str = "gemini-2.5-flash", **kw) -> GeminiModel:
    return GeminiModel(
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


async def drain(model: GeminiModel, messages: list[Message], stream: bool = True) -> list:
    async with contextlib.aclosing(model.stream(messages, [], ModelSettings(stream=stream))) as it:
        return [c async for c in it]


@pytest.mark.parametrize("stream", [True, False])
async def test_multi_step_tool_session(api: FakeGemini, http: httpx.AsyncClient, stream: bool) -> None:
    api.script(
        tool_call("calculator", {"expression": "6*7"}),
        tool_calls(("calculator", {"expression": "42+1"}), ("calculator", {"expression": "2**3"})),
        text("The answer is 43, and 8.", fragment=5),
    )
    agent = Agent(gemini(api, http), ToolRegistry(builtin_tools()), settings=ModelSettings(stream=stream))
    events = await collect(agent, "compute")

    final = events[-1]
    assert isinstance(final, FinalEvent) and final.result.status == "completed"
    assert final.result.text == "The answer is 43, and 8."
    assert [e.output for e in events if isinstance(e, ToolResultEvent)] == ["42", "43", "8"]
    if stream:
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The answer is 43, and 8."
    # Gemini gives no call ids: each call still has its own, and results pair with them.
    ids = [e.call_id for e in events if isinstance(e, ToolCallEvent)]
    assert len(set(ids)) == 3 and all(i.startswith("gm_") for i in ids)
    assert [e.call_id for e in events if isinstance(e, ToolResultEvent)] == ids

    method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
    assert all(p == f"/v1beta/models/gemini-2.5-flash{method}" for p in api.paths)  # no key in the URL
    assert all(h.get("x-goog-api-key") == KEY for h in api.headers)
    first, second, third = api.requests
    assert "research agent" in first["systemInstruction"]["parts"][0]["text"]
    decl = first["tools"][0]["functionDeclarations"]
    calc = next(d for d in decl if d["name"] == "calculator")
    assert calc["parametersJsonSchema"]["properties"]["expression"]["type"] == "string"
    model_turn, answer = second["contents"][-2:]
    assert model_turn == {
        "role": "model",
        "parts": [{"functionCall": {"name": "calculator", "args": {"expression": "6*7"}}}],
    }
    assert answer == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "calculator", "response": {"result": "42"}}}],
    }
    # The two parallel results go back in one user turn, in call order.
    assert [p["functionResponse"]["response"] for p in third["contents"][-1]["parts"]] == [
        {"result": "43"},
        {"result": "8"},
    ]
    assert [c["role"] for c in third["contents"]] == ["user", "model", "user", "model", "user"]


async def test_synthesised_ids_are_stable_for_the_same_conversation(
    api: FakeGemini, http: httpx.AsyncClient
) -> None:
    api.script(tool_calls(("a", {"x": 1}), ("a", {"x": 1})), tool_calls(("a", {"x": 1}), ("a", {"x": 1})))
    m = gemini(api, http)
    convo = [Message("user", "go")]
    first = (await drain(m, convo))[-1].message.tool_calls
    again = (await drain(m, convo))[-1].message.tool_calls
    assert [c.id for c in first] == [c.id for c in again]
    assert first[0].id != first[1].id  # identical calls in one turn still differ
    api.script(tool_call("a", {"x": 1}))
    later = (await drain(m, [*convo, Message("assistant", tool_calls=first), Message("user", "more")]))[-1]
    assert later.message.tool_calls[0].id not in {c.id for c in first}  # a later turn never reuses one


async def test_tool_error_observations_stay_objects(api: FakeGemini, http: httpx.AsyncClient) -> None:
    api.script(text("ok"))
    history = [
        Message("user", "go"),
        Message(
            "assistant",
            tool_calls=[ToolCall("call_x", "calculator", '{"expression": "1+'), ToolCall("c2", "t", "")],
        ),
        Message("tool", '{"error": "arguments are not valid JSON"}', tool_call_id="call_x"),
        Message("tool", "[1, 2]", tool_call_id="c2", name="t"),
    ]
    await drain(gemini(api, http), history)
    sent = api.requests[0]["contents"]
    assert sent[1]["parts"][0]["functionCall"]["args"] == {"_raw_arguments": '{"expression": "1+'}
    assert sent[1]["parts"][1]["functionCall"]["args"] == {}
    responses = [p["functionResponse"] for p in sent[2]["parts"]]
    # The tool name is recovered from the call when the result message lacks it.
    assert responses[0] == {"name": "calculator", "response": {"error": "arguments are not valid JSON"}}
    assert responses[1] == {"name": "t", "response": {"result": "[1, 2]"}}


async def test_thought_signatures_are_replayed_for_gemini_3(api: FakeGemini, http: httpx.AsyncClient) -> None:
    api.script(tool_call("calculator", {"expression": "1+1"}, thought_signature="c2lnbmF0dXJl"), text("2"))
    agent = Agent(gemini(api, http, "gemini-3-pro-preview"), ToolRegistry(builtin_tools()))
    events = await collect(agent, "add")
    assert events[-1].result.text == "2"
    replayed = api.requests[1]["contents"][1]["parts"][0]
    assert replayed["thoughtSignature"] == "c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("name", "expected"), [("gemini-3-flash-preview", SKIP_SIGNATURE), ("gemini-2.5-pro", None)]
)
async def test_unsigned_history_gets_the_documented_sentinel_on_gemini_3_only(
    api: FakeGemini, http: httpx.AsyncClient, name: str, expected: str | None
) -> None:
    api.script(text("ok"))
    calls = [ToolCall("call_1", "a", "{}"), ToolCall("call_2", "a", "{}")]
    history = [
        Message("user", "go"),
        Message("assistant", tool_calls=calls),
        Message("tool", "1", tool_call_id="call_1", name="a"),
        Message("tool", "2", tool_call_id="call_2", name="a"),
    ]
    await drain(gemini(api, http, name), history)
    parts = api.requests[0]["contents"][1]["parts"]
    assert parts[0].get("thoughtSignature") == expected
    assert "thoughtSignature" not in parts[1]  # only a turn's first call carries one


async def test_usage_counts_cached_content_and_prices_it(api: FakeGemini, http: httpx.AsyncClient) -> None:
    api.script(text("hi", prompt_tokens=2000, cached_tokens=1500, completion_tokens=40))
    events = await collect(Agent(gemini(api, http), ToolRegistry()), "hi")
    usage = next(e for e in events if isinstance(e, UsageEvent))
    assert (usage.usage.prompt_tokens, usage.usage.cached_tokens, usage.usage.completion_tokens) == (
        2000,
        1500,
        40,
    )
    price = default_prices().lookup("gemini-2.5-flash")
    assert price is not None and price.cached_input is not None
    assert usage.cost.usd == pytest.approx(
        (500 * price.input + 1500 * price.cached_input + 40 * price.output) / 1e6
    )


async def test_thinking_tokens_are_billed_as_output_and_reported_apart(
    api: FakeGemini, http: httpx.AsyncClient
) -> None:
    # Gemini 2.5 reports thinking in thoughtsTokenCount, outside candidatesTokenCount: a bot that read only
    # the candidates would bill 40 of these 340 output tokens.
    api.script(text("hi", prompt_tokens=1000, completion_tokens=340, reasoning_tokens=300))
    events = await collect(Agent(gemini(api, http), ToolRegistry()), "hi")
    usage = next(e for e in events if isinstance(e, UsageEvent))
    assert (usage.usage.completion_tokens, usage.usage.reasoning_tokens) == (340, 300)
    price = default_prices().lookup("gemini-2.5-flash")
    assert price is not None
    assert usage.cost.usd == pytest.approx((1000 * price.input + 340 * price.output) / 1e6)
    assert events[-1].result.usage.reasoning_tokens == 300


async def test_429_waits_for_the_retry_info_delay(api: FakeGemini, http: httpx.AsyncClient) -> None:
    api.script(
        google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota",
            details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.3s"}],
        ),
        text("ok"),
    )
    events = await collect(Agent(gemini(api, http), ToolRegistry()), "hi")
    retry = next(e for e in events if isinstance(e, RetryEvent))
    assert retry.delay >= 0.3 and "RESOURCE_EXHAUSTED" in retry.error
    assert events[-1].result.text == "ok"


async def test_overloaded_mid_stream_is_retried(api: FakeGemini, http: httpx.AsyncClient) -> None:
    api.script(
        Reply(text="partial", stream_error="UNAVAILABLE"),
        google_error(503, "UNAVAILABLE", "overloaded"),
        text("ok"),
    )
    events = await collect(Agent(gemini(api, http), ToolRegistry()), "hi")
    assert sum(isinstance(e, RetryEvent) for e in events) == 2
    assert events[-1].result.text == "ok"


@pytest.mark.parametrize(
    ("reply", "exc", "needle"),
    [
        (google_error(403, "PERMISSION_DENIED", "Permission denied"), ModelAuthError, "GEMINI_API_KEY"),
        (
            google_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            ),
            ContextOverflowError,
            "too long",
        ),
        (
            google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."),
            ModelError,
            "Invalid JSON payload",
        ),
    ],
)
async def test_client_errors_fail_at_once(
    api: FakeGemini, http: httpx.AsyncClient, reply: Reply, exc: type[ModelError], needle: str
) -> None:
    api.script(reply)
    with pytest.raises(exc) as info:
        await drain(gemini(api, http), [Message("user", "hi")])
    assert needle in info.value.message and not info.value.retryable
    assert len(api.requests) == 1


async def test_a_bad_key_is_an_auth_error_although_google_says_400(
    api: FakeGemini, http: httpx.AsyncClient
) -> None:
    wrong = "AIzaSyWrong-Key-000000000000000000000000"
    with pytest.raises(ModelAuthError) as info:
        await drain(gemini(api, http, api_key=wrong), [Message("user", "hi")])
    assert "GEMINI_API_KEY" in info.value.message and wrong not in info.value.message
    assert info.value.status == 400 and len(api.requests) == 1


async def test_unknown_model_says_where_to_look(api: FakeGemini, http: httpx.AsyncClient) -> None:
    api.known_models = {"gemini-2.5-flash"}
    with pytest.raises(ModelNotFoundError) as info:
        await drain(gemini(api, http, "models/gemini-9-ultra"), [Message("user", "hi")], stream=False)
    assert "gemini-9-ultra" in info.value.message and "GEMINI_BASE_URL" in info.value.message


async def test_served_model_version_is_reported(api: FakeGemini, http: httpx.AsyncClient) -> None:
    api.script(text("hi", model="gemini-2.5-flash-001"))
    chunks = await drain(gemini(api, http), [Message("user", "hi")])
    assert isinstance(chunks[-1], ModelResponse) and chunks[-1].model == "gemini-2.5-flash-001"
