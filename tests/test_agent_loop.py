"""The ReAct engine against a scripted OpenAI-compatible server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest

from agent import ToolRegistry, TransientToolError, tool
from agent.events import (
    ErrorEvent,
    FinalEvent,
    RetryEvent,
    StepStarted,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    UsageEvent,
)
from agent.loop import Agent, RunState
from agent.models.base import ModelSettings
from agent.models.openai import OpenAIChatModel
from agent.models.prices import default_prices
from agent.tools.builtin import builtin_tools
from tests.fakes.llm_server import FakeLLM, error, text, tool_call, tool_calls


def make_agent(
    llm: FakeLLM,
    http: httpx.AsyncClient,
    tools: list,
    *,
    stream: bool = True,
    model: str = "gpt-4o-mini",
    **kw,
) -> Agent:
    m = OpenAIChatModel(
        model,
        base_url=llm.base_url,
        api_key="sk-test-secret-key-123",
        client=http,
        backoff_initial=0.01,
        backoff_max=0.05,
        max_attempts=kw.pop("max_attempts", 5),
    )
    return Agent(m, ToolRegistry(tools), settings=ModelSettings(stream=stream), **kw)


async def collect(agent: Agent, task: str, **kw) -> list:
    events = []
    async with contextlib.aclosing(agent.run(task, **kw)) as it:
        async for ev in it:
            events.append(ev)
    return events


@pytest.mark.parametrize("stream", [True, False])
async def test_multi_step_tool_session(llm: FakeLLM, http: httpx.AsyncClient, stream: bool) -> None:
    llm.script(
        tool_call("calculator", {"expression": "6*7"}),
        tool_call("calculator", {"expression": "42+1"}),
        text("The answer is 43."),
    )
    events = await collect(make_agent(llm, http, builtin_tools(), stream=stream), "compute")
    final = events[-1]
    assert isinstance(final, FinalEvent)
    assert final.result.status == "completed"
    assert final.result.text == "The answer is 43."
    assert final.result.steps == 3
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert [r.output for r in results] == ["42", "43"]
    # The model saw the first tool's observation before its second call.
    second = llm.requests[1]["messages"]
    assert second[-1] == {
        "role": "tool",
        "content": "42",
        "tool_call_id": second[-2]["tool_calls"][0]["id"],
        "name": "calculator",
    }
    assert second[-2]["content"] == ""  # never null: llama.cpp rejects null with tool_calls
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "StepStarted" and kinds.count("StepStarted") == 3
    if stream:
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The answer is 43."
    assert llm.requests[0].get("stream", False) is stream


async def test_parallel_calls_run_concurrently_and_return_in_call_order(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    spans: dict[str, list[float]] = {}

    @tool
    async def slow(label: str, seconds: float) -> str:
        """Wait, then echo the label."""
        loop = asyncio.get_running_loop()
        spans[label] = [loop.time()]
        await asyncio.sleep(seconds)
        spans[label].append(loop.time())
        return f"done {label}"

    llm.script(
        tool_calls(("slow", {"label": "a", "seconds": 0.3}), ("slow", {"label": "b", "seconds": 0.05})),
        text("both done"),
    )
    events = await collect(make_agent(llm, http, [slow]), "go")
    # b started before a finished: they overlapped.
    assert spans["b"][0] < spans["a"][1]
    # b finished first, so its result event came first...
    results = [e.output for e in events if isinstance(e, ToolResultEvent)]
    assert results == ["done b", "done a"]
    # ...but the model receives the observations in call order.
    tool_msgs = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_msgs] == ["done a", "done b"]


async def test_malformed_and_unknown_tool_calls_become_observations(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    llm.script(
        tool_call("calculator", '{"expression": "1+'),  # invalid JSON
        tool_call("calculater", {"expression": "1+1"}),  # unknown tool
        tool_call("calculator", {"expr": "1+1"}),  # wrong field
        tool_call("calculator", {"expression": "1+1"}),
        text("2"),
    )
    events = await collect(make_agent(llm, http, builtin_tools()), "add")
    assert events[-1].result.status == "completed"
    obs = [json.loads(r["messages"][-1]["content"]) for r in llm.requests[1:4]]
    assert "not valid JSON" in obs[0]["error"]
    assert "unknown tool 'calculater'" in obs[1]["error"] and "calculator" in obs[1]["error"]
    assert "'expression': Field required" in obs[2]["error"] and "'expr': unknown argument" in obs[2]["error"]
    assert llm.requests[4]["messages"][-1]["content"] == "2"


async def test_transient_tool_failure_is_retried_then_reported(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    attempts = []

    @tool(max_attempts=3, retry_initial=0.01, retry_max=0.02)
    async def flaky(q: str) -> str:
        """Always fails transiently."""
        attempts.append(q)
        raise TransientToolError("upstream 503")

    llm.script(tool_call("flaky", {"q": "x"}), text("gave up"))
    events = await collect(make_agent(llm, http, [flaky]), "try")
    retries = [e for e in events if isinstance(e, RetryEvent)]
    assert len(attempts) == 3
    assert [(r.what, r.attempt, r.max_attempts) for r in retries] == [("flaky", 1, 3), ("flaky", 2, 3)]
    obs = json.loads(llm.requests[1]["messages"][-1]["content"])
    assert obs == {"error": "TransientToolError: upstream 503"}


async def test_non_transient_tool_error_is_not_retried(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    calls = []

    @tool
    def broken() -> str:
        """Raises a plain error."""
        calls.append(1)
        raise ValueError("bad state")

    llm.script(tool_call("broken", {}), text("ok"))
    events = await collect(make_agent(llm, http, [broken]), "try")
    assert calls == [1]
    assert not [e for e in events if isinstance(e, RetryEvent)]
    assert json.loads(llm.requests[1]["messages"][-1]["content"]) == {"error": "ValueError: bad state"}


async def test_tool_timeout_and_output_cap_are_told_to_the_model(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    @tool(timeout=0.05)
    async def sleepy() -> str:
        """Takes too long."""
        await asyncio.sleep(5)
        return "never"

    @tool(max_output=100)
    def big() -> str:
        """Returns a lot."""
        return "x" * 5000

    llm.script(tool_calls(("sleepy", {}), ("big", {})), text("ok"))
    events = await collect(make_agent(llm, http, [sleepy, big]), "go")
    msgs = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert json.loads(msgs[0]["content"]) == {"error": "sleepy timed out after 0.05 s"}
    assert msgs[1]["content"].startswith("x" * 100)
    assert "[output truncated: showing the first 100 of 5000 characters]" in msgs[1]["content"]
    assert any(isinstance(e, ToolResultEvent) and e.truncated for e in events)


async def test_max_iterations_stops_with_partial_answer(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(
        tool_call("calculator", {"expression": "1+1"}),
        tool_call("calculator", {"expression": "2+2"}, text="Partial: 1+1 is 2 so far."),
        tool_call("calculator", {"expression": "3+3"}),
        text("never reached"),
    )
    events = await collect(make_agent(llm, http, builtin_tools(), max_iterations=3), "loop")
    result = events[-1].result
    assert result.status == "max_iterations"
    assert result.text.startswith("Stopped after 3 steps without a final answer.")
    assert "Partial: 1+1 is 2 so far." in result.text
    assert len(llm.requests) == 3 and llm.pending == 1
    assert sum(isinstance(e, StepStarted) for e in events) == 3


async def test_429_with_retry_after_then_success(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(error(429, "slow down", headers={"Retry-After": "0.3"}), text("hello"))
    events = await collect(make_agent(llm, http, []), "hi")
    retry = next(e for e in events if isinstance(e, RetryEvent))
    assert retry.what == "model" and retry.delay >= 0.3 and "429" in retry.error
    assert llm.request_times[1] - llm.request_times[0] >= 0.3
    assert events[-1].result.text == "hello"


async def test_500s_exhausted_give_a_clear_error(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(*[error(500, "boom")] * 3)
    events = await collect(make_agent(llm, http, [], max_attempts=3), "hi")
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1
    assert "still failing after 3 attempts" in errors[0].message and "HTTP 500" in errors[0].message
    assert sum(isinstance(e, RetryEvent) for e in events) == 2
    assert events[-1].result.status == "error" and len(llm.requests) == 3


@pytest.mark.parametrize(("status", "needle"), [(401, "rejected the API key"), (404, "was not found")])
async def test_client_errors_fail_at_once_with_a_fix(
    llm: FakeLLM, http: httpx.AsyncClient, status: int, needle: str
) -> None:
    llm.script(error(status, "Incorrect API key provided: sk-test-secret-key-123"))
    events = await collect(make_agent(llm, http, []), "hi")
    err = next(e for e in events if isinstance(e, ErrorEvent))
    assert needle in err.message
    assert "sk-test-secret-key-123" not in err.message  # a key echoed by the server is masked
    assert len(llm.requests) == 1


async def test_tool_call_fragments_are_reassembled_exactly(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    seen = []

    @tool
    def echo(payload: str, n: int) -> str:
        """Echo."""
        seen.append((payload, n))
        return "ok"

    tricky = 'quote " backslash \\ unicode é✓ 😀 braces {} [] newline\n end'
    llm.script(tool_call("echo", {"payload": tricky, "n": 7}, fragment=2, split_writes=True), text("done"))
    await collect(make_agent(llm, http, [echo]), "go")
    assert seen == [(tricky, 7)]


async def test_usage_and_cost_are_summed(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(
        tool_call(
            "calculator", {"expression": "1"}, prompt_tokens=1000, completion_tokens=100, cached_tokens=400
        ),
        text("one", prompt_tokens=2000, completion_tokens=300),
    )
    events = await collect(make_agent(llm, http, builtin_tools()), "go")
    result = events[-1].result
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.cached_tokens) == (
        3000,
        400,
        400,
    )
    assert result.usage.requests == 2
    price = default_prices().lookup("gpt-4o-mini")
    expected = (2600 * price.input + 400 * price.cached_input + 400 * price.output) / 1e6
    assert result.cost.known and result.cost.usd == pytest.approx(expected)
    assert [e.usage.prompt_tokens for e in events if isinstance(e, UsageEvent)] == [1000, 2000]
    assert result.models == ["gpt-4o-mini"]


async def test_reasoning_tokens_are_summed_apart_and_priced_as_output(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "1"}, completion_tokens=250, reasoning_tokens=200),
        text("one", completion_tokens=700, reasoning_tokens=600),
    )
    result = (await collect(make_agent(llm, http, builtin_tools(), model="gpt-5"), "go"))[-1].result
    assert (result.usage.completion_tokens, result.usage.reasoning_tokens) == (950, 800)
    price = default_prices().lookup("gpt-5")
    assert result.cost.usd == pytest.approx((200 * price.input + 950 * price.output) / 1e6)


async def test_unknown_model_cost_is_unknown_not_zero(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(text("hi"))
    result = (await collect(make_agent(llm, http, [], model="my-local-llama"), "go"))[-1].result
    assert not result.cost.known
    assert result.cost.format().startswith("unknown")
    assert "$0.0000" not in result.cost.format()


async def test_cancel_mid_tool_stops_and_leaves_no_task(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    @tool(timeout=60)
    async def forever() -> str:
        """Never returns."""
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()
        return ""

    llm.script(tool_call("calculator", {"expression": "2"}), tool_call("forever", {}), text("unreachable"))
    agent = make_agent(llm, http, [*builtin_tools(), forever])
    state = RunState(task="")
    events: list = []

    async def consume() -> None:
        async with contextlib.aclosing(agent.run("go", state=state)) as it:
            async for ev in it:
                events.append(ev)

    before = asyncio.all_tasks()
    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    # Nothing of the agent's is left (the fake server's own keep-alive handlers don't count).
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert [t for t in left if "RequestHandler" not in t.get_coro().__qualname__] == []
    # Only whole steps are kept: the task, then step 1's call and result; step 2's call is not half-recorded.
    assert [m.role for m in state.messages] == ["user", "assistant", "tool"]
    assert state.steps == 2
    assert not any(isinstance(e, FinalEvent) for e in events)


async def test_cancel_while_model_is_thinking(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    from tests.fakes.llm_server import Reply

    llm.script(Reply(hang=True))
    agent = make_agent(llm, http, [])
    got_step = asyncio.Event()

    async def consume() -> None:
        async for ev in agent.run("go"):
            if isinstance(ev, StepStarted):
                got_step.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_step.wait(), 5)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


async def test_tool_call_event_shows_parsed_arguments(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(tool_call("current_time", {"timezone": "Europe/Paris"}), text("it is late"))
    events = await collect(make_agent(llm, http, builtin_tools()), "time?")
    call = next(e for e in events if isinstance(e, ToolCallEvent))
    assert call.arguments == {"timezone": "Europe/Paris"}
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert not result.is_error and ("CET" in result.output or "CEST" in result.output)


async def test_resume_continues_after_the_checkpointed_steps(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    from agent.messages import Message, ToolCall

    done = [
        Message("user", "add"),
        Message("assistant", "", tool_calls=[ToolCall("c1", "calculator", '{"expression": "1+1"}')]),
        Message("tool", "2", tool_call_id="c1", name="calculator"),
    ]
    llm.script(text("It is 2."))
    events = await collect(
        make_agent(llm, http, builtin_tools(), max_iterations=3), "add", resume=done, resume_step=1
    )
    result = events[-1].result
    assert result.status == "completed" and result.steps == 2 and result.text == "It is 2."
    assert [e.step for e in events if isinstance(e, StepStarted)] == [2]
    assert [m["role"] for m in llm.requests[0]["messages"]] == ["system", "user", "assistant", "tool"]
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant"]


async def test_model_timeout_is_retried_then_the_run_finishes(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(text("too late", delay=2.0), text("on time"))
    m = OpenAIChatModel(
        "gpt-4o-mini", base_url=llm.base_url, client=http, backoff_initial=0.01, max_attempts=3
    )
    agent = Agent(m, ToolRegistry([]), settings=ModelSettings(stream=True, timeout=0.3))
    events = await collect(agent, "hi")
    retry = next(e for e in events if isinstance(e, RetryEvent))
    assert "timed out" in retry.error
    assert events[-1].result.text == "on time" and events[-1].result.status == "completed"


@pytest.mark.parametrize("stream", [True, False])
async def test_history_reaches_the_model_whole_and_unchanged_on_every_call(
    llm: FakeLLM, http: httpx.AsyncClient, stream: bool
) -> None:
    """Each message's wire form is made once and reused on later calls (agent.models.openai): what the
    server receives must still be the whole conversation, exactly, and a stored turn carries no cache."""
    from agent.messages import Message

    llm.script(tool_call("calculator", {"expression": "6*7"}), text("Réponse : 42 ✓"), text("Oui."))
    agent = make_agent(llm, http, builtin_tools(), stream=stream)
    first = await agent.ask("Combien font 6×7 ?")
    second = await agent.ask("Sûr ?", history=first.messages)
    sent = [r["messages"] for r in llm.requests]
    assert sent[1][:-2] == sent[0] and sent[1][-1]["content"] == "42"
    # The second turn resends the first turn as it was sent, then the new question.
    turn_one = [*sent[1][1:], {"role": "assistant", "content": "Réponse : 42 ✓"}]
    assert sent[2][1:] == [*turn_one, {"role": "user", "content": "Sûr ?"}]
    assert second.text == "Oui."
    stored = [m.to_dict() for m in first.messages]
    assert all(set(d) <= {"role", "content", "tool_calls", "tool_call_id", "name"} for d in stored)
    assert [Message.from_dict(d) for d in stored] == first.messages


async def test_the_model_is_told_todays_date_in_the_machines_own_zone(
    llm: FakeLLM, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A terminal user's date, not UTC's: just after midnight in Tokyo the model was told yesterday."""
    import datetime as dt
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        llm.script(text("ok"))
        await collect(make_agent(llm, http, []), "what day is it?")
        tokyo = dt.datetime.now(dt.timezone(dt.timedelta(hours=9))).strftime("%Y-%m-%d")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert f"Today is {tokyo} (JST)." in llm.requests[0]["messages"][0]["content"]
