"""Reasoning models (gpt-5, o-series, Gemini 2.5 Pro/Flash): requests they accept, caps that leave room
to think, REASONING_EFFORT, and the thinking they bill shown to the user. The scripted servers refuse
what the real APIs refuse (tests/fakes/llm_server.openai_parameter_error, the Gemini fake's budget)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent import ToolRegistry
from agent.loop import Agent
from agent.models.base import ModelSettings
from agent.models.gemini import GeminiModel
from agent.models.openai import OpenAIChatModel
from agent.models.reasoning import HEADROOM
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.anthropic_server import text as gemini_text
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.llm_server import FakeLLM, text


async def answer(model, settings: ModelSettings) -> str:
    agent = Agent(model, ToolRegistry(), settings=settings)
    async with contextlib.aclosing(agent.run("hi")) as events:
        result = [e async for e in events][-1].result
    assert result.ok, result.error
    return result.text


def openai(llm: FakeLLM, http: httpx.AsyncClient, name: str) -> OpenAIChatModel:
    return OpenAIChatModel(name, base_url=llm.base_url, api_key="sk-test", client=http, max_attempts=1)


async def test_an_owners_temperature_and_cap_do_not_break_gpt5_and_still_apply_elsewhere(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    owner = ModelSettings(temperature=0.2, max_tokens=500)
    llm.script(text("from gpt-5"), text("from nano"))
    assert await answer(openai(llm, http, "gpt-5"), owner) == "from gpt-5"
    assert await answer(openai(llm, http, "gpt-4.1-nano"), owner) == "from nano"
    five, nano = llm.requests
    # OpenAI refuses max_tokens and a non-default temperature on gpt-5; the cap becomes the completion
    # cap with room to think, so a 500-token answer is not eaten by its own reasoning.
    assert "max_tokens" not in five and "temperature" not in five
    assert five["max_completion_tokens"] == 500 + HEADROOM
    assert (nano["max_tokens"], nano["temperature"]) == (500, 0.2)
    assert "max_completion_tokens" not in nano


@pytest.mark.parametrize(
    ("model", "effort", "sent"),
    [
        ("gpt-5", "minimal", "minimal"),
        ("gpt-5-mini", "high", "high"),
        ("o3", "minimal", "low"),  # the o-series has no "minimal"
        ("gpt-5.1", "minimal", "none"),  # gpt-5.1 replaced it with "none"
        ("gpt-4.1-nano", "low", None),  # does not think: never asked to
    ],
)
async def test_reasoning_effort_is_sent_as_each_model_accepts_it(
    llm: FakeLLM, http: httpx.AsyncClient, model: str, effort, sent: str | None
) -> None:
    llm.script(text("ok"))
    assert await answer(openai(llm, http, model), ModelSettings(reasoning_effort=effort)) == "ok"
    assert llm.requests[0].get("reasoning_effort") == sent


@pytest.fixture
async def gemini_api() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        yield server


@pytest.mark.parametrize(
    ("model", "effort", "config"),
    [
        (
            "gemini-2.5-flash",
            "low",
            {"maxOutputTokens": 500 + HEADROOM, "thinkingConfig": {"thinkingBudget": 1024}},
        ),
        (
            "gemini-2.5-flash",
            "minimal",
            {"maxOutputTokens": 500 + HEADROOM, "thinkingConfig": {"thinkingBudget": 0}},
        ),
        # Pro cannot stop thinking: "minimal" is its least budget, which the API accepts
        (
            "gemini-2.5-pro",
            "minimal",
            {"maxOutputTokens": 500 + HEADROOM, "thinkingConfig": {"thinkingBudget": 128}},
        ),
        # Flash-Lite does not think unless asked, so neither the cap nor the effort changes
        ("gemini-2.5-flash-lite", "high", {"maxOutputTokens": 500}),
    ],
)
async def test_gemini_thinking_budget_follows_the_effort(
    gemini_api: FakeGemini, http: httpx.AsyncClient, model: str, effort, config: dict
) -> None:
    gemini_api.script(gemini_text("ok"))
    m = GeminiModel(model, api_key="k", base_url=gemini_api.base_url, client=http, max_attempts=1)
    assert await answer(m, ModelSettings(max_tokens=500, reasoning_effort=effort)) == "ok"
    assert gemini_api.requests[0]["generationConfig"] == config


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_research_on_gpt5_with_the_owners_settings_shows_what_it_thought(
    llm: FakeLLM, tmp_path: Path
) -> None:
    guild = FakeGuild.create("Lab", channels=("general",), members=("alice",))
    llm.script(text("Everest: 8,849 m.", prompt_tokens=900, completion_tokens=400, reasoning_tokens=320))
    owner = {"REASONING_EFFORT": "low", "AGENT_TEMPERATURE": "0.3", "AGENT_MAX_TOKENS": "800"}
    async with (
        FakeDiscord([guild]) as fake,
        running_bot(fake, llm, tmp_path, guild, models=("gpt-5",), agent_env=owner) as bot,
    ):
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "How tall is Everest?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Everest: 8,849 m.", within=15)
        footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content)
        await wait_idle(fake, bot)
    (request,) = [r for r in llm.requests if r["model"] == "gpt-5"]
    assert request["reasoning_effort"] == "low" and request["max_completion_tokens"] == 800 + HEADROOM
    assert "temperature" not in request
    assert "(900 in, 400 out, of which 320 reasoning)" in footer.content and "gpt-5" in footer.content
