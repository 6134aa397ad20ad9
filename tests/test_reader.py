"""The reader: a cheap model reads long pages and the agent model works from its notes.

Real HTTP throughout: the agent model and the reader are two scripted OpenAI-compatible servers, the
pages come from the local web server through the real fetch tool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.budget import BudgetExceeded
from agent.config import AgentSettings
from agent.events import Cost, FinalEvent, ToolResultEvent, Usage, UsageEvent
from agent.loop import Agent
from agent.models.base import ModelSettings
from agent.models.factory import build_reader, build_router
from agent.models.openai import OpenAIChatModel
from agent.models.prices import default_prices
from agent.reader import Reader, ReaderSettings
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.registry import ToolRegistry
from tests.fakes.llm_server import FakeLLM, error, text, tool_call
from tests.fakes.web_server import FakeWeb

TASK = "How do otters keep warm in cold water?"
NOTES = "- Otters swim in cold water; the page repeats this for 200 paragraphs (0-199)."


@pytest.fixture
async def reader_llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


@pytest.fixture
async def fetcher() -> AsyncIterator[PageFetcher]:
    f = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, max_chars=2_000, reader_chars=60_000))
    yield f
    await f.aclose()


def model(server: FakeLLM, http: httpx.AsyncClient, name: str) -> OpenAIChatModel:
    return OpenAIChatModel(
        name, base_url=server.base_url, api_key="sk-test", client=http, backoff_initial=0.01, max_attempts=2
    )


def agent_with_reader(
    llm: FakeLLM, reader_llm: FakeLLM, http: httpx.AsyncClient, fetcher: PageFetcher, **reader_kw: Any
) -> Agent:
    return Agent(
        model(llm, http, "gpt-5"),
        ToolRegistry(fetch_tools(fetcher)),
        settings=ModelSettings(stream=True),
        reader=Reader(model(reader_llm, http, "gpt-4.1-nano"), ReaderSettings(**reader_kw)),
    )


async def run(agent: Agent, task: str = TASK, **kw: Any) -> list[Any]:
    events = []
    async with contextlib.aclosing(agent.run(task, **kw)) as it:
        async for ev in it:
            events.append(ev)
    return events


def tool_message(request: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "tool")


async def test_a_long_page_reaches_the_agent_model_as_the_readers_notes(
    llm: FakeLLM, reader_llm: FakeLLM, http: httpx.AsyncClient, web: FakeWeb, fetcher: PageFetcher
) -> None:
    llm.script(
        tool_call("fetch_url", {"url": web.url("/long")}, prompt_tokens=2000, completion_tokens=40),
        text("They swim in cold water.", prompt_tokens=2500, completion_tokens=30),
    )
    reader_llm.script(text(NOTES, prompt_tokens=12_000, completion_tokens=60, model="gpt-4.1-nano"))
    events = await run(agent_with_reader(llm, reader_llm, http, fetcher))

    # The reader read the task and far more of the page than the agent's 2,000-character window.
    read = reader_llm.requests[0]
    prompt = read["messages"][1]["content"]
    assert TASK in prompt and "Paragraph 199:" in prompt
    assert not read.get("tools")

    # The agent model got the page's header and the notes, not the page.
    seen = tool_message(llm.requests[1])
    assert seen.startswith(f"Title: Long\nURL: {web.url('/long')}")
    assert NOTES in seen and "taken for your task by gpt-4.1-nano" in seen and '"raw": true' in seen
    assert "Paragraph 0:" not in seen

    shown = next(e for e in events if isinstance(e, ToolResultEvent))
    assert shown.read_by == "gpt-4.1-nano" and shown.source_chars > 40_000 and shown.output == seen
    assert [e.model for e in events if isinstance(e, UsageEvent)] == ["gpt-5", "gpt-4.1-nano", "gpt-5"]
    result = events[-1].result
    prices = default_prices()
    expected = (
        prices.cost("gpt-5", Usage(4500, 70, 0, 2)).usd
        + prices.cost("gpt-4.1-nano", Usage(12_000, 60, 0, 1)).usd
    )
    assert result.ok and result.models == ["gpt-5", "gpt-4.1-nano"]
    assert result.cost.usd == pytest.approx(expected)
    assert result.usage.prompt_tokens == 16_500 and result.usage.requests == 3


async def test_short_pages_errors_and_raw_requests_are_not_read(
    llm: FakeLLM, reader_llm: FakeLLM, http: httpx.AsyncClient, web: FakeWeb, fetcher: PageFetcher
) -> None:
    llm.script(
        tool_call("fetch_url", {"url": web.url("/article")}),
        tool_call("fetch_url", {"url": web.url("/paper.pdf")}),
        tool_call("fetch_url", {"url": web.url("/long"), "raw": True}),
        text("done"),
    )
    events = await run(agent_with_reader(llm, reader_llm, http, fetcher))
    assert events[-1].result.ok
    assert reader_llm.requests == []
    assert "more than four hundred breeding pairs" in tool_message(llm.requests[1])
    assert "is a PDF" in tool_message(llm.requests[2])
    raw = tool_message(llm.requests[3])
    assert "Paragraph 0:" in raw and "call fetch_url again with start=2000" in raw
    assert events[-1].result.models == ["gpt-5"]


async def test_a_failing_reader_leaves_the_page_as_the_tool_returned_it(
    llm: FakeLLM, reader_llm: FakeLLM, http: httpx.AsyncClient, web: FakeWeb, fetcher: PageFetcher
) -> None:
    llm.script(
        tool_call("fetch_url", {"url": web.url("/long")}),
        tool_call("fetch_url", {"url": web.url("/long")}),
        text("ok"),
    )
    reader_llm.script(error(400, "model overloaded with nonsense"), text("   "))
    events = await run(agent_with_reader(llm, reader_llm, http, fetcher))
    assert events[-1].result.ok
    for i in (1, 2):  # a refused call, then an empty reading: both leave the window the tool returned
        seen = tool_message(llm.requests[i])
        assert "Paragraph 0:" in seen and "start=2000" in seen and "taken for your task" not in seen
    assert len(reader_llm.requests) == 2
    # the refused call is not billed; the empty reading was, so it is charged and listed
    assert events[-1].result.models == ["gpt-5", "gpt-4.1-nano"]
    assert all(e.read_by is None for e in events if isinstance(e, ToolResultEvent))


class RecordingBudget:
    """Refuses calls to ``refuse`` and records every settlement."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.settled: list[tuple[str, int, float]] = []

    async def reserve(self, model: str, estimate: Usage, estimated_cost: float | None) -> Any:
        if model == self.refuse:
            raise BudgetExceeded("daily cost limit reached")
        return model

    async def settle(self, token: Any, model: str, provider: str, usage: Usage, cost: Cost) -> None:
        self.settled.append((model, usage.total_tokens, cost.usd))


async def test_a_reading_is_charged_to_the_budget_and_skipped_when_it_is_refused(
    llm: FakeLLM, reader_llm: FakeLLM, http: httpx.AsyncClient, web: FakeWeb, fetcher: PageFetcher
) -> None:
    llm.script(tool_call("fetch_url", {"url": web.url("/long")}), text("ok"))
    reader_llm.script(text(NOTES, prompt_tokens=9000, completion_tokens=50, model="gpt-4.1-nano"))
    budget = RecordingBudget()
    await run(agent_with_reader(llm, reader_llm, http, fetcher), budget=budget)
    assert [m for m, _, _ in budget.settled] == ["gpt-5", "gpt-4.1-nano", "gpt-5"]
    assert budget.settled[1][1] == 9050 and budget.settled[1][2] > 0

    llm.script(tool_call("fetch_url", {"url": web.url("/long")}), text("ok"))
    refusing = RecordingBudget(refuse="gpt-4.1-nano")
    events = await run(agent_with_reader(llm, reader_llm, http, fetcher), budget=refusing)
    assert isinstance(events[-1], FinalEvent) and events[-1].result.ok
    assert "Paragraph 0:" in tool_message(llm.requests[-1])
    assert len(reader_llm.requests) == 1  # no second reading was made
    assert [m for m, _, _ in refusing.settled] == ["gpt-5", "gpt-5"]


async def test_reader_setting_picks_the_simple_tier_only_for_runs_above_it(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    tiers = {"simple": ["gpt-4.1-nano"], "medium": ["gpt-5-mini"], "complex": ["gpt-5"]}
    settings = AgentSettings(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=llm.base_url)  # type: ignore[call-arg]
    router = build_router(settings, http, tiers=tiers)
    reader = build_reader(settings, router, "complex")
    assert reader is not None and reader.name == "gpt-4.1-nano"
    assert build_reader(settings, router, "simple") is None  # the run is already on the cheapest tier
    off = settings.model_copy(update={"reader_model": "off"})
    assert build_reader(off, router, "complex") is None
    named = settings.model_copy(update={"reader_model": "gpt-5-mini"})
    named_reader = build_reader(named, router, "simple")
    assert named_reader is not None and named_reader.name == "gpt-5-mini"
    # A run that starts simple and moves up gets its pages read from then on; one handed down stops.
    run = router.at_tier("simple", max_tier="complex")
    moving = build_reader(settings, router, lambda: run.tier)
    page = "x" * 5_000
    assert moving is not None and not moving.wants("fetch_url", page, False, {})
    assert run.escalate("the simple tier failed") is not None and run.tier == "medium"
    assert moving.wants("fetch_url", page, False, {})
    bad = settings.model_copy(update={"reader_model": "anthropic:claude-haiku-4-5"})
    with pytest.raises(Exception, match="READER_MODEL='anthropic:claude-haiku-4-5' cannot be used"):
        build_reader(bad, router, "complex")
