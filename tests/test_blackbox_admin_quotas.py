"""Quotas as members meet them: the real discord.py bot on the fake Discord, the scripted LLM pricing
gpt-4o-mini, a real SQLite store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_e2e_config import answer, flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",), admins=("admin",))


@pytest.mark.parametrize(
    ("limit", "said"),
    [("cost_per_month_usd", "monthly spending limit"), ("guild_budget_per_month_usd", "monthly budget")],
)
@pytest.mark.usefixtures("fast_write_window")
async def test_a_run_that_cannot_afford_one_step_is_refused_before_it_opens_a_thread_or_counts_a_request(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, limit: str, said: str
) -> None:
    """With less money left than one step costs (here the smallest limit, $0.0001, while a step of
    gpt-4o-mini reserves about $0.0007), /research used to open a thread, count a request, and stop at
    once: "0 steps · no model call · stopped by a limit", a request spent for nothing at every try. Now it
    is refused up front, as a run that cannot afford one step's tokens already was."""
    llm.script(text("Paris."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await run(fake, guild, "config limits", {"limit": limit, "value": "0.0001"})
        inter = fake.inject_interaction(
            "research", {"task": "Capital of France?"}, user="alice", channel=general
        )
        refusal = await answer(fake, inter)
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    assert refusal.ephemeral and said in refusal.content, refusal.content
    assert "for the next step: it costs about $0.0" in refusal.content, refusal.content
    assert fake.threads(parent=general) == [] and llm.requests == []
    assert re.search(r"\*\*Requests today\*\*: 0 of 50", usage), usage


@pytest.mark.usefixtures("fast_write_window")
async def test_the_footer_counts_the_judge_call_that_usage_charges(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """With the judge classifier, the judge's call is charged to the requester (in /usage), but the turn's
    footer left it out: "120 tokens · $0.000027" in the thread against 171 tokens and $0.000035 in /usage."""
    llm.script(
        text("simple", prompt_tokens=50, completion_tokens=1),  # the judge
        text("Hi!", prompt_tokens=100, completion_tokens=20),
    )
    general = guild.channel("general")
    judge = {"ROUTER_CLASSIFIER": "judge", "ROUTER_JUDGE_MODEL": "gpt-4o-mini"}
    async with running_bot(fake, llm, tmp_path, guild, agent_env=judge) as bot:
        fake.inject_interaction("research", {"task": "say hi"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content, within=15)
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    tokens = re.search(r"\*\*Tokens today\*\*: (\d+) of", usage)
    spent = re.search(r"\*\*Spending this month\*\*: (\$[\d.]+) of", usage)
    assert tokens and spent, usage
    assert tokens.group(1) == "171", usage
    assert f" {tokens.group(1)} tokens (150 in, 21 out) · {spent.group(1)} " in footer.content, footer.content
