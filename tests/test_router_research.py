"""Research tiers: a complex run searches and reads on the medium tier's model, the complex model writes.

Every model is served over real HTTP by the scripted OpenAI-compatible server on 127.0.0.1, through the
real loop, so what is asserted is what each provider would be sent and what a user would see.
"""

from __future__ import annotations

import pytest

from agent import ToolRegistry
from agent.config import ConfigError
from agent.events import ModelSwitched, RouteDecided, RouteDecision, TextDelta, ToolResultEvent
from agent.loop import Agent
from agent.models.router import Router
from agent.setting_parsers import parse_research_tiers
from agent.tools.builtin import builtin_tools
from tests.fakes.llm_server import FakeLLM, Reply, error, text, tool_call
from tests.test_router_escalation import TIERS, builder, collect

SPLIT = {"complex": "medium"}


def by_model(llm: FakeLLM) -> list[str]:
    return [r["model"] for r in llm.requests]


async def test_the_researcher_gathers_and_the_complex_model_writes_from_what_it_found(
    llm: FakeLLM, http
) -> None:
    llm.script(
        Reply(text="Let me work it out.", tool_calls=[("calculator", '{"expression": "6*7"}')]),
        Reply(text="DONE-LINE: I have what is needed.", completion_tokens=9),
        text("The answer is 42.", prompt_tokens=300, completion_tokens=50),
    )
    model = Router(TIERS, builder(llm, http), research=SPLIT).at_tier("complex")
    assert (model.tier, model.name, model.writer) == ("complex", "gpt-5-mini", "gpt-5")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())), "what is six times seven")

    assert by_model(llm) == ["gpt-5-mini", "gpt-5-mini", "gpt-5"]
    research, writing = llm.requests[1], llm.requests[2]
    assert "stronger model will write the final answer" in research["messages"][0]["content"]
    # The writer gets the same conversation, tool results included, without the researcher's role or
    # its "done" line: it answers as if it had done the research itself.
    assert "stronger model" not in writing["messages"][0]["content"]
    assert [m["content"] for m in writing["messages"] if m["role"] == "tool"] == ["42"]
    assert writing["messages"][-1]["role"] == "tool"

    # Who researches and who writes reaches the bot as typed data: first at the start of the run...
    assert events[0] == RouteDecided(
        step=0, at=events[0].at, route=RouteDecision("complex", "gpt-5-mini", "gpt-5")
    )
    switch = next(e for e in events if isinstance(e, ModelSwitched))
    assert (switch.from_model, switch.to_model) == ("gpt-5-mini", "gpt-5")
    assert switch.reason == "gpt-5-mini gathered the material; the complex tier writes the answer"
    # ...then on every switch: after the hand-over the writer serves and no one else is to write.
    assert switch.kind == "hand_over" and switch.route == RouteDecision("complex", "gpt-5", None)
    shown = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "Let me work it out." in shown and "DONE-LINE" not in shown  # only text before a tool call shows

    result = events[-1].result
    assert result.status == "completed" and result.text == "The answer is 42."
    assert result.models == ["gpt-5-mini", "gpt-5"]
    assert result.usage.requests == 3 and result.usage.completion_tokens == 20 + 9 + 50
    assert result.cost.known and result.cost.usd > 0
    assert "DONE-LINE" not in str([m.content for m in result.messages])


async def test_the_writer_may_research_more_itself(llm: FakeLLM, http) -> None:
    llm.script(
        tool_call("calculator", {"expression": "2+2"}),
        text("done"),
        tool_call("calculator", {"expression": "4*10"}),
        text("40, after checking 2+2 first"),
    )
    model = Router(TIERS, builder(llm, http), research=SPLIT).at_tier("complex")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert by_model(llm) == ["gpt-5-mini", "gpt-5-mini", "gpt-5", "gpt-5"]
    assert [e.output for e in events if isinstance(e, ToolResultEvent)] == ["4", "40"]
    assert "stronger model" not in llm.requests[3]["messages"][0]["content"]
    assert events[-1].result.text == "40, after checking 2+2 first"


async def test_a_failing_researcher_gives_way_to_the_writer_who_then_does_everything(
    llm: FakeLLM, http
) -> None:
    llm.script(
        error(404, "The model gpt-5-mini does not exist"),
        tool_call("calculator", {"expression": "1+1"}),
        text("2"),
    )
    model = Router(TIERS, builder(llm, http), research=SPLIT).at_tier("complex")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert by_model(llm) == ["gpt-5-mini", "gpt-5", "gpt-5"]
    # The fallback model was not told it is a researcher, and is not asked to answer twice.
    assert all("stronger model" not in r["messages"][0]["content"] for r in llm.requests[1:])
    assert [(e.from_model, e.to_model) for e in events if isinstance(e, ModelSwitched)] == [
        ("gpt-5-mini", "gpt-5")
    ]
    assert events[-1].result.text == "2"


async def test_a_medium_run_that_outgrows_its_steps_keeps_its_researcher_and_gains_the_writer(
    llm: FakeLLM, http
) -> None:
    llm.script(
        *(tool_call("calculator", {"expression": f"{n}*{n}"}) for n in range(1, 5)),
        text("that is all of them"),
        text("1, 4, 9 and 16"),
    )
    router = Router(TIERS, builder(llm, http), step_limits={"medium": 3}, research=SPLIT)
    model = router.at_tier("medium")
    assert model.writer is None
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    # No restart on gpt-5 after step 3: gpt-5-mini goes on researching, and gpt-5 writes at the end.
    assert by_model(llm) == ["gpt-5-mini"] * 5 + ["gpt-5"]
    assert [m["content"] for m in llm.requests[5]["messages"] if m["role"] == "tool"] == ["1", "4", "9", "16"]
    assert [(e.from_model, e.to_model) for e in events if isinstance(e, ModelSwitched)] == [
        ("gpt-5-mini", "gpt-5")
    ]
    assert events[-1].result.text == "1, 4, 9 and 16" and model.tier == "complex"


async def test_a_complex_task_routed_simple_climbs_and_is_answered_by_the_complex_model(
    llm: FakeLLM, http
) -> None:
    """Step limits count the run's calls: three on the simple tier, three more on the medium tier make
    six, past medium's allowance, so the complex tier writes (before, the medium model answered)."""
    llm.script(
        *(tool_call("calculator", {"expression": f"{n}+{n}"}) for n in range(1, 7)),
        text("done"),
        text("2 to 12, by gpt-5"),
    )
    router = Router(TIERS, builder(llm, http), step_limits={"simple": 3, "medium": 6}, research=SPLIT)
    model = router.at_tier("simple")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert by_model(llm) == ["gpt-5-nano"] * 3 + ["gpt-5-mini"] * 4 + ["gpt-5"]
    assert [(e.from_model, e.to_model, e.kind) for e in events if isinstance(e, ModelSwitched)] == [
        ("gpt-5-nano", "gpt-5-mini", "escalation"),
        ("gpt-5-mini", "gpt-5", "hand_over"),
    ]
    result = events[-1].result
    assert result.text == "2 to 12, by gpt-5" and result.models == ["gpt-5-nano", "gpt-5-mini", "gpt-5"]
    assert model.tier == "complex"


async def test_one_model_for_both_jobs_means_no_split(llm: FakeLLM, http) -> None:
    llm.script(text("just answered"))
    tiers = {"simple": ["gpt-5-mini"], "medium": ["gpt-5"], "complex": ["gpt-5"]}
    model = Router(tiers, builder(llm, http), research=SPLIT).at_tier("complex")
    assert model.writer is None
    events = await collect(Agent(model, ToolRegistry()))
    assert by_model(llm) == ["gpt-5"] and events[-1].result.text == "just answered"


async def test_at_the_iteration_cap_the_writer_takes_the_last_step(llm: FakeLLM, http) -> None:
    # The researcher is told not to write the answer: its last step ended runs on its "done" line.
    llm.script(tool_call("calculator", {"expression": "3+3"}), text("6, from the writer"))
    model = Router(TIERS, builder(llm, http), research=SPLIT).at_tier("complex")
    events = await collect(Agent(model, ToolRegistry(builtin_tools()), max_iterations=2))
    assert by_model(llm) == ["gpt-5-mini", "gpt-5"]
    assert events[-1].result.status == "completed" and events[-1].result.text == "6, from the writer"


def test_research_tiers_setting_is_parsed_and_bad_values_name_the_key() -> None:
    assert parse_research_tiers("complex=medium") == {"complex": "medium"}
    assert parse_research_tiers(" Complex = SIMPLE , medium=simple") == {
        "complex": "simple",
        "medium": "simple",
    }
    assert parse_research_tiers("off") == {} and parse_research_tiers("") == {}
    with pytest.raises(
        ConfigError, match=r"ROUTER_RESEARCH_TIERS='complex=huge': expected tier=research-tier"
    ):
        parse_research_tiers("complex=huge")
    with pytest.raises(ConfigError, match="research tier must be below complex"):
        parse_research_tiers("complex=complex")
    with pytest.raises(ConfigError, match="research tier must be below medium"):
        parse_research_tiers("medium=complex")
