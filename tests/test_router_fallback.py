"""Fallback within a tier and provider cooldown, across three real wire formats on 127.0.0.1.

The tier under test is ``[OpenAI-compatible gpt-5-mini, Anthropic claude-haiku-4-5, Gemini
gemini-2.5-flash]``; each provider is a scripted fake server speaking its own protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from agent import ToolRegistry
from agent.config import ConfigError
from agent.events import ErrorEvent, FinalEvent, ModelSwitched, RetryEvent, StepStarted, UsageEvent
from agent.loop import Agent
from agent.messages import Message
from agent.models.anthropic import AnthropicModel
from agent.models.base import Model, ModelError, ModelResponse, ModelSettings, SwitchNotice, TextChunk
from agent.models.gemini import GeminiModel
from agent.models.openai import OpenAIChatModel
from agent.models.router import Breakers, Router
from agent.tools.builtin import builtin_tools
from tests.fakes import anthropic_server as anth
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.llm_server import FakeLLM, error, text, tool_call

OPENAI_KEY = "sk-openai-test-key-000001"
ANTHROPIC_KEY = "sk-ant-api03-router-test-000002"
GEMINI_KEY = "AIzaSyRouter-Test-Key-00000000000000003"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    oai: FakeLLM
    claude: FakeAnthropic
    gem: FakeGemini
    http: httpx.AsyncClient
    clock: Clock
    breakers: Breakers

    def build(self, spec: str) -> Model:
        common = {"client": self.http, "max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.02}
        provider, _, name = spec.rpartition(":")
        if provider == "anthropic":
            return AnthropicModel(name, api_key=ANTHROPIC_KEY, base_url=self.claude.base_url, **common)
        if provider == "gemini":
            return GeminiModel(name, api_key=GEMINI_KEY, base_url=self.gem.base_url, **common)
        if provider == "nokey":
            raise ConfigError(f"NOKEY_API_KEY is not set, so model '{spec}' cannot be used")
        return OpenAIChatModel(name, api_key=OPENAI_KEY, base_url=self.oai.base_url, **common)

    def router(self, medium: list[str] | None = None) -> Router:
        tiers = {
            "simple": ["gpt-5-nano"],
            "medium": medium or ["gpt-5-mini", "anthropic:claude-haiku-4-5", "gemini:gemini-2.5-flash"],
            "complex": ["gpt-5"],
        }
        return Router(tiers, self.build, breakers=self.breakers)


@pytest.fixture
async def world(http: httpx.AsyncClient) -> AsyncIterator[World]:
    async with FakeLLM() as oai, FakeAnthropic() as claude, FakeGemini() as gem:
        clock = Clock()
        yield World(oai, claude, gem, http, clock, Breakers(cooldown=60, max_cooldown=600, clock=clock))


async def collect(agent: Agent, task: str = "hi") -> list:
    async with contextlib.aclosing(agent.run(task)) as it:
        return [ev async for ev in it]


async def chunks_of(model: Model) -> list:
    async with contextlib.aclosing(model.stream([Message("user", "hi")], [], ModelSettings())) as it:
        return [c async for c in it]


async def test_provider_down_the_next_model_answers_and_the_thread_is_told(world: World) -> None:
    world.oai.script(error(503, "upstream overloaded"), error(503, "upstream overloaded"))
    world.claude.script(anth.tool_call("calculator", {"expression": "2+2"}), anth.text("It is 4."))
    router = world.router()
    model = router.at_tier("medium")
    assert (model.name, model.provider) == ("gpt-5-mini", "openai")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())), "2+2?")

    switched = [e for e in events if isinstance(e, ModelSwitched)]
    assert len(switched) == 1
    assert (switched[0].from_model, switched[0].to_model) == ("gpt-5-mini", "claude-haiku-4-5")
    assert switched[0].reason == "gpt-5-mini is unavailable (HTTP 503 after retries)"
    # The retries came first, then the switch, then the answer; later steps stay on the fallback.
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("RetryEvent") < kinds.index("ModelSwitched")
    assert [e.model for e in events if isinstance(e, StepStarted)] == ["gpt-5-mini", "claude-haiku-4-5"]
    result = events[-1].result
    assert result.status == "completed" and result.text == "It is 4."
    assert result.models == ["claude-haiku-4-5"]  # only served calls are billed
    assert [e.model for e in events if isinstance(e, UsageEvent)] == ["claude-haiku-4-5"] * 2
    assert (model.name, model.provider) == ("claude-haiku-4-5", "anthropic")
    assert len(world.oai.requests) == 2 and len(world.claude.requests) == 2
    # The server answered (503) about this model: it cools down, not every model of its provider.
    assert world.breakers.state("openai:gpt-5-mini") == "open"
    assert world.breakers.state("openai") == "closed"


async def test_cooldown_skips_the_provider_then_one_probe_decides(world: World) -> None:
    world.oai.script(error(500, "boom"), error(500, "boom"))
    world.claude.script(anth.text("a"), anth.text("b"), anth.text("c"), anth.text("d"))
    router = world.router()
    await chunks_of(router.at_tier("medium"))
    assert len(world.oai.requests) == 2 and world.breakers.retry_in("openai:gpt-5-mini") == pytest.approx(60)

    # While cooling down, new runs start on the fallback: no request reaches the failing provider.
    during = router.at_tier("medium")
    assert during.name == "claude-haiku-4-5"
    assert isinstance((await chunks_of(during))[-1], ModelResponse)
    assert len(world.oai.requests) == 2

    # After the cooldown one run probes; it fails, so the provider cools down twice as long.
    world.clock.now += 61
    assert world.breakers.state("openai:gpt-5-mini") == "half_open"
    world.oai.script(error(502, "still bad"), error(502, "still bad"))
    probe = router.at_tier("medium")
    assert probe.name == "gpt-5-mini"
    got = await chunks_of(probe)
    assert [c.to_model for c in got if isinstance(c, SwitchNotice)] == ["claude-haiku-4-5"]
    assert world.breakers.retry_in("openai:gpt-5-mini") == pytest.approx(120)

    # The next probe succeeds and closes the breaker for everyone.
    world.clock.now += 121
    world.oai.script(text("back"))
    healed = router.at_tier("medium")
    assert [c.message.content for c in await chunks_of(healed) if isinstance(c, ModelResponse)] == ["back"]
    assert world.breakers.state("openai:gpt-5-mini") == "closed"
    assert router.at_tier("medium").name == "gpt-5-mini"


async def test_only_one_probe_at_a_time(world: World) -> None:
    b = world.breakers
    b.failure("openai", "HTTP 503")
    world.clock.now += 60
    assert b.acquire(["openai"])  # the probe
    assert not b.acquire(["openai"])  # a concurrent request is kept away meanwhile
    b.release(["openai"])  # the probe was cancelled: the next request may probe
    assert b.acquire(["openai"])


async def test_a_rejected_key_falls_back_and_cools_down_long(world: World) -> None:
    world.oai.api_key = "sk-a-different-key-entirely"
    world.claude.script(anth.text("fine"))
    model = world.router().at_tier("medium")
    got = await chunks_of(model)
    switch = next(c for c in got if isinstance(c, SwitchNotice))
    assert switch.reason == "openai rejected the API key for gpt-5-mini"
    assert OPENAI_KEY not in switch.reason
    assert got[-1].message.content == "fine"
    assert len(world.oai.requests) == 1  # a bad key is not retried
    assert world.breakers.retry_in("openai") == pytest.approx(600)


async def test_an_unknown_model_cools_down_alone_not_its_provider(world: World) -> None:
    world.gem.known_models = {"gemini-2.5-flash-lite"}
    world.gem.script(anth.text("from lite"))
    router = world.router(medium=["gemini:gemini-9-typo", "gemini:gemini-2.5-flash-lite"])
    got = await chunks_of(router.at_tier("medium"))
    switch = next(c for c in got if isinstance(c, SwitchNotice))
    assert switch.reason == "gemini does not know the model gemini-9-typo"
    assert got[-1].message.content == "from lite"
    assert world.breakers.state("gemini:gemini-9-typo") == "open"
    assert world.breakers.state("gemini") == "closed"


async def test_a_base_url_with_no_api_is_named_as_the_reason_not_the_model(world: World) -> None:
    # Ollama's root (no /v1) answers "404: Not Found" without naming the model: the URL is wrong.
    world.claude.script(anth.text("from haiku"))
    build = world.build

    def wrong_path(spec: str) -> Model:
        if ":" in spec:
            return build(spec)
        return OpenAIChatModel(
            spec, api_key=OPENAI_KEY, base_url=world.oai.base_url.removesuffix("/v1"), client=world.http
        )

    router = Router(
        {
            "simple": ["gpt-5-nano"],
            "medium": ["gpt-5-mini", "anthropic:claude-haiku-4-5"],
            "complex": ["gpt-5"],
        },
        wrong_path,
        breakers=world.breakers,
    )
    got = await chunks_of(router.at_tier("medium"))
    switch = next(c for c in got if isinstance(c, SwitchNotice))
    assert switch.reason == "openai has no API at its base URL (for gpt-5-mini)"
    assert got[-1].message.content == "from haiku"


async def test_text_streamed_before_a_failure_is_followed_by_a_switch(world: World) -> None:
    world.claude.script(
        anth.Reply(text="The first half of a", cut=True, fragment=99),
        anth.Reply(text="and again", cut=True, fragment=99),
    )
    world.gem.script(anth.text("A whole answer.", fragment=99))
    router = world.router(medium=["anthropic:claude-haiku-4-5", "gemini:gemini-2.5-flash"])
    got = await chunks_of(router.at_tier("medium"))
    kinds = [type(c).__name__ for c in got]
    # Partial text, a retry (void), partial text again, then the switch (void), then the new answer.
    assert kinds == ["TextChunk", "RetryNotice", "TextChunk", "SwitchNotice", "TextChunk", "ModelResponse"]
    after_switch = [c.text for c in got[kinds.index("SwitchNotice") :] if isinstance(c, TextChunk)]
    assert "".join(after_switch) == got[-1].message.content == "A whole answer."
    assert got[-1].model == "gemini-2.5-flash"
    retry = got[kinds.index("RetryNotice")]
    assert "dropped the connection mid-answer" in retry.error, retry.error  # not "could not be reached"
    switch = got[kinds.index("SwitchNotice")]
    assert switch.reason == "claude-haiku-4-5 is unavailable (connection failures after retries)"


async def test_every_model_failing_ends_the_run_with_a_clear_error(world: World) -> None:
    world.oai.script(*[error(503, "down")] * 4)
    world.claude.script(*[anth.error(529, "overloaded_error", "Overloaded")] * 2)
    world.gem.script(
        *[anth.Reply(status=503, error_body={"error": {"code": 503, "status": "UNAVAILABLE"}})] * 2
    )
    router = world.router()
    events = await collect(Agent(router.at_tier("medium"), ToolRegistry()))
    # A 503 is about one model (a gateway's answer for it), so the run moves on to the next tier's
    # model of the same provider; a second of its models failing so cools the whole provider down.
    assert [e.to_model for e in events if isinstance(e, ModelSwitched)] == [
        "claude-haiku-4-5",
        "gemini-2.5-flash",
        "gpt-5",
    ]
    err = next(e for e in events if isinstance(e, ErrorEvent))
    assert "still failing after 2 attempts" in err.message and "HTTP 503" in err.message
    assert events[-1].result.status == "error"
    assert sum(isinstance(e, RetryEvent) for e in events) == 4
    assert world.breakers.state("openai") == "open"
    # A run made while everything cools down fails at once, saying when to try again.
    events = await collect(Agent(router.at_tier("medium"), ToolRegistry()))
    err = next(e for e in events if isinstance(e, ErrorEvent))
    assert "cooling down" in err.message and "next try in" in err.message
    assert len(world.oai.requests) == 4 and len(world.claude.requests) == 2


async def test_a_bad_request_does_not_fall_back(world: World) -> None:
    world.oai.script(error(400, "Invalid 'messages[0].content': expected a string"))
    with pytest.raises(ModelError, match="HTTP 400") as info:
        await chunks_of(world.router().at_tier("medium"))
    assert not info.value.retryable
    assert world.claude.requests == [] and world.breakers.state("openai") == "closed"


async def test_fallback_crosses_tiers_when_a_tier_is_exhausted(world: World) -> None:
    world.oai.script(*[error(503, "down")] * 2)
    router = Router(
        {
            "simple": ["gemini:gemini-2.5-flash-lite"],
            "medium": ["gpt-5-mini"],
            "complex": ["anthropic:claude-sonnet-4-5"],
        },
        world.build,
        breakers=world.breakers,
    )
    world.claude.script(anth.text("sonnet answers"))
    got = await chunks_of(router.at_tier("medium"))
    assert [c.to_model for c in got if isinstance(c, SwitchNotice)] == ["claude-sonnet-4-5"]
    assert got[-1].message.content == "sonnet answers"
    # While the medium tier's only provider cools down, new medium runs start on the next tier.
    assert router.at_tier("medium").name == "claude-sonnet-4-5"
    # Capped at medium, the run may only fall back downwards.
    world.clock.now += 10_000
    world.oai.script(*[error(503, "down")] * 2)
    world.gem.script(anth.text("from simple"))
    got = await chunks_of(router.at_tier("medium", max_tier="medium"))
    assert [c.to_model for c in got if isinstance(c, SwitchNotice)] == ["gemini-2.5-flash-lite"]
    assert got[-1].message.content == "from simple" and world.claude.pending == 0


async def test_unconfigured_providers_are_skipped(world: World) -> None:
    world.claude.script(anth.text("hello"))
    router = world.router(medium=["nokey:some-model", "anthropic:claude-haiku-4-5"])
    model = router.at_tier("medium")
    assert model.name == "claude-haiku-4-5"
    assert "NOKEY_API_KEY" in router.unconfigured["nokey:some-model"]
    got = await chunks_of(model)
    assert not any(isinstance(c, SwitchNotice) for c in got)
    with pytest.raises(ConfigError, match="NOKEY_API_KEY"):
        Router({"simple": ["nokey:a"], "medium": ["nokey:b"], "complex": ["nokey:c"]}, world.build)


async def test_server_tables_share_breakers(world: World) -> None:
    world.oai.script(*[error(503, "down")] * 2)
    world.claude.script(anth.text("x"), anth.text("y"))
    base = world.router()
    guild = base.with_tiers({"medium": ["gpt-5-mini", "anthropic:claude-haiku-4-5"]})
    await chunks_of(base.at_tier("medium"))
    # Another server's router already knows the provider is down.
    assert guild.at_tier("medium").name == "claude-haiku-4-5"
    assert guild.tiers["complex"] == ["gpt-5"] and guild.tiers["medium"][0] == "gpt-5-mini"


async def test_streamed_tool_session_after_fallback_keeps_history_valid(world: World) -> None:
    """OpenAI made the first tool call; Anthropic takes over mid-run and must accept that history."""
    world.oai.script(tool_call("calculator", {"expression": "6*7"}), *[error(503, "down")] * 2)
    world.claude.script(anth.text("42 it is."))
    events = await collect(Agent(world.router().at_tier("medium"), ToolRegistry(builtin_tools())), "6*7")
    assert events[-1].result.text == "42 it is."
    sent = world.claude.requests[0]["messages"]
    use = sent[1]["content"][-1]
    assert use["type"] == "tool_use" and use["input"] == {"expression": "6*7"}
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": use["id"], "content": "42"} | (
        {"cache_control": {"type": "ephemeral"}}
    )
    assert isinstance(events[-1], FinalEvent)
