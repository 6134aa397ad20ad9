"""Escalation to a stronger tier when the cheaper model fails the task, through the real loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from agent import ToolRegistry
from agent.events import ErrorEvent, ModelSwitched, StepStarted
from agent.loop import Agent
from agent.models.anthropic import AnthropicModel
from agent.models.base import Model
from agent.models.classifier import HeuristicClassifier
from agent.models.openai import OpenAIChatModel
from agent.models.router import Router
from agent.tools.builtin import builtin_tools
from tests.fakes import anthropic_server as anth
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.llm_server import FakeLLM, text, tool_call

TIERS = {"simple": ["gpt-5-nano"], "medium": ["gpt-5-mini"], "complex": ["gpt-5"]}


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        yield server


def builder(llm: FakeLLM, http: httpx.AsyncClient, claude: FakeAnthropic | None = None):
    def build(spec: str) -> Model:
        if spec.startswith("anthropic:") and claude is not None:
            return AnthropicModel(
                spec.split(":", 1)[1], api_key="sk-ant-test-00000000", base_url=claude.base_url, client=http
            )
        return OpenAIChatModel(
            spec, base_url=llm.base_url, api_key="sk-test-000000000", client=http, max_attempts=1
        )

    return build


async def collect(agent: Agent, task: str = "go") -> list:
    async with contextlib.aclosing(agent.run(task)) as it:
        return [ev async for ev in it]


async def test_invalid_tool_calls_twice_move_the_run_up_a_tier(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(
        tool_call("calculator", '{"expression": "1+'),
        tool_call("calculator", '{"expression": "1+'),
        tool_call("calculator", {"expression": "1+1"}),
        text("2"),
    )
    model = Router(TIERS, builder(llm, http)).at_tier("simple")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    switch = next(e for e in events if isinstance(e, ModelSwitched))
    assert (switch.from_model, switch.to_model) == ("gpt-5-nano", "gpt-5-mini")
    assert switch.reason == "its tool calls were invalid twice in a row; moving up to the medium tier"
    assert switch.kind == "escalation" and switch.route is not None
    assert (switch.route.tier, switch.route.model, switch.route.writer) == ("medium", "gpt-5-mini", None)
    assert [r["model"] for r in llm.requests] == ["gpt-5-nano", "gpt-5-nano", "gpt-5-mini", "gpt-5-mini"]
    assert [e.model for e in events if isinstance(e, StepStarted)][2:] == ["gpt-5-mini", "gpt-5-mini"]
    assert events[-1].result.text == "2" and model.tier == "medium"


async def test_an_empty_answer_moves_the_run_up_a_tier(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(text(""), text(""), text("a real answer"))
    model = Router(TIERS, builder(llm, http)).at_tier("simple")
    events = await collect(Agent(model, ToolRegistry()))
    switches = [(e.to_model, e.reason) for e in events if isinstance(e, ModelSwitched)]
    assert switches == [
        ("gpt-5-mini", "it returned an empty answer; moving up to the medium tier"),
        ("gpt-5", "it returned an empty answer; moving up to the complex tier"),
    ]
    assert [r["model"] for r in llm.requests] == ["gpt-5-nano", "gpt-5-mini", "gpt-5"]
    assert events[-1].result.text == "a real answer"


async def test_escalation_stops_at_the_servers_max_tier(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.script(text(""), text(""))
    model = Router(TIERS, builder(llm, http)).at_tier("simple", max_tier="simple")
    events = await collect(Agent(model, ToolRegistry()))
    assert not any(isinstance(e, ModelSwitched) for e in events)
    assert "returned an empty answer twice" in next(e for e in events if isinstance(e, ErrorEvent)).message
    assert {r["model"] for r in llm.requests} == {"gpt-5-nano"}
    assert model.escalate("test") is None


async def test_context_overflow_escalates_within_the_same_call(
    llm: FakeLLM, http: httpx.AsyncClient, claude: FakeAnthropic
) -> None:
    claude.script(
        anth.error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
    )
    llm.script(text("summarised from the bigger window"))
    tiers = {"simple": ["anthropic:claude-haiku-4-5"], "medium": ["gemini-big-window"], "complex": ["gpt-5"]}
    model = Router(tiers, builder(llm, http, claude)).at_tier("simple")
    events = await collect(Agent(model, ToolRegistry()), "summarise this huge log")
    switch = next(e for e in events if isinstance(e, ModelSwitched))
    assert (switch.from_model, switch.to_model) == ("claude-haiku-4-5", "gemini-big-window")
    assert switch.reason.startswith("the conversation is too long for claude-haiku-4-5")
    assert events[-1].result.status == "completed"
    assert events[-1].result.text == "summarised from the bigger window"


async def test_escalation_skips_a_tier_that_offers_the_same_model(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    tiers = {"simple": ["gpt-5-mini"], "medium": ["gpt-5-mini"], "complex": ["gpt-5"]}
    model = Router(tiers, builder(llm, http)).at_tier("simple")
    notice = model.escalate("it returned an empty answer")
    assert notice is not None and (notice.from_model, notice.to_model) == ("gpt-5-mini", "gpt-5")
    assert model.tier == "complex"


async def test_route_honours_the_users_tier_within_the_servers_limit(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    router = Router(TIERS, builder(llm, http), classifier=HeuristicClassifier())
    task = "Compare PostgreSQL, MySQL and SQLite for a small SaaS: performance, licensing and hosting cost."
    routed = await router.route(task)
    assert routed.tier == "complex" and routed.name == "gpt-5"
    assert routed.decision is not None and routed.decision.source == "heuristic"
    assert any("compare" in r for r in routed.decision.reasons)
    # The same decision as typed data, for the thread's header (no reaching into the router).
    route = routed.route
    assert (route.tier, route.model, route.writer, route.source) == ("complex", "gpt-5", None, "heuristic")
    assert route.reasons == routed.decision.reasons and route.judge_usage is None

    asked = await router.route(task, requested="simple")
    assert (asked.tier, asked.decision.source if asked.decision else None) == ("simple", "requested")

    capped = await router.route(task, requested="complex", max_tier="medium")
    assert capped.tier == "medium" and capped.max_tier == "medium"
    assert capped.decision is not None and "capped at medium" in capped.decision.reasons

    small = await router.route("what's the capital of Peru?", max_tier="medium")
    assert small.tier == "simple" and small.name == "gpt-5-nano"

    with pytest.raises(Exception, match="use one of: simple, medium, complex"):
        await router.route(task, requested="ultra")


async def test_without_a_classifier_the_default_tier_is_used(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    router = Router(TIERS, builder(llm, http), classifier=None, default_tier="medium")
    routed = await router.route("Compare everything with everything, in depth, with sources.")
    assert routed.tier == "medium" and routed.decision is not None and routed.decision.source == "default"


async def test_a_run_still_working_after_its_tiers_steps_moves_up_with_what_it_found(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    llm.script(
        *(tool_call("calculator", {"expression": f"{n}*{n}"}) for n in (2, 3, 4)),
        tool_call("calculator", {"expression": "5*5"}),
        text("4, 9, 16 and 25"),
    )
    model = Router(TIERS, builder(llm, http), step_limits={"simple": 3, "medium": 6}).at_tier("simple")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    switch = next(e for e in events if isinstance(e, ModelSwitched))
    assert (switch.from_model, switch.to_model, switch.step) == ("gpt-5-nano", "gpt-5-mini", 3)
    assert (
        switch.reason == "it was still working after 3 steps on the simple tier; moving up to the medium tier"
    )
    assert [r["model"] for r in llm.requests] == ["gpt-5-nano"] * 3 + ["gpt-5-mini"] * 2
    # The stronger model carries on from the cheaper one's results instead of starting over.
    seen = [m["content"] for m in llm.requests[3]["messages"] if m["role"] == "tool"]
    assert seen == ["4", "9", "16"]
    assert events[-1].result.ok and events[-1].result.models == ["gpt-5-nano", "gpt-5-mini"]


async def test_a_tier_the_user_asked_for_is_not_left_for_taking_steps(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    llm.script(*(tool_call("calculator", {"expression": f"{n}+1"}) for n in range(5)), text("done"))
    router = Router(TIERS, builder(llm, http), classifier=HeuristicClassifier())
    model = await router.route("add one five times", requested="simple")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert not [e for e in events if isinstance(e, ModelSwitched)]
    assert {r["model"] for r in llm.requests} == {"gpt-5-nano"}


def test_step_limits_setting_is_parsed_and_bad_values_name_the_key() -> None:
    from agent.config import ConfigError
    from agent.setting_parsers import parse_step_limits

    assert parse_step_limits("simple=2, MEDIUM=0") == {"simple": 2, "medium": 0}
    assert parse_step_limits("") == {}
    with pytest.raises(ConfigError, match="ROUTER_STEP_LIMITS='tiny=3': expected tier=steps pairs"):
        parse_step_limits("tiny=3")
    with pytest.raises(ConfigError, match="ROUTER_STEP_LIMITS='simple=x'"):
        parse_step_limits("simple=x")
