"""The figures a user reads about tokens and money, against the prices genai-prices ships (read from the
package here, so a price change in a new release cannot make these tests drift silently): the
``agentbot ask`` summary on scripted providers on 127.0.0.1, and a server's spending limit when a run
falls back mid-call to a dearer model (real SQLite quota store)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import ToolRegistry
from agent.events import FinalEvent, ModelSwitched, RunResult, Usage
from agent.loop import Agent
from agent.models.anthropic import AnthropicModel
from agent.models.base import Model
from agent.models.openai import OpenAIChatModel
from agent.models.prices import PriceTable
from agent.models.router import Breakers, Router
from agent.reader import Reader, ReaderSettings
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from bot.footer import format_footer
from bot.limits import Limits
from bot.store import QuotaStore, open_database
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes import anthropic_server as anth
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, error, text, tool_call
from tests.fakes.web_server import FakeWeb
from tests.test_blackbox_operator import agentbot
from tests.test_e2e_config import flat, run

ANTHROPIC_KEY = "sk-ant-api03-costs2-test-000001"


def _at_tier(price: Any, prompt: int) -> Decimal:
    """A package price in USD per million tokens at the tier a ``prompt``-token call falls in."""
    tiers = getattr(price, "tiers", None)
    if tiers is None:
        return Decimal(price)
    rate = price.base
    for t in tiers:
        if prompt > t.start:
            rate = t.price
    return Decimal(rate)


async def test_ask_prints_a_long_context_claude_call_with_separators_and_its_exact_tiered_cost(
    tmp_path: Path,
) -> None:
    # A 1.2M-token Claude Sonnet 4.5 call (1M context): 1,000,000 read from the cache, 200,000 written to
    # it, 34,567 uncached, 12,345 out. Above 200k prompt tokens Anthropic bills every token at the
    # long-context rates, so: cost = (34,567 x input + 1,000,000 x cache read + 200,000 x 5-minute cache
    # write + 12,345 x output) / 1e6, each at the >200k tier genai-prices ships.
    prompt, read, write, out = 1_234_567, 1_000_000, 200_000, 12_345
    mp = PriceTable().lookup("claude-sonnet-4-5", "anthropic").at(datetime.now(UTC))  # type: ignore[union-attr]
    want = (
        (prompt - read - write) * _at_tier(mp.input_mtok, prompt)
        + read * _at_tier(mp.cache_read_mtok, prompt)
        + write * _at_tier(mp.cache_write_mtok, prompt)
        + out * _at_tier(mp.output_mtok, prompt)
    ) / 1_000_000
    assert _at_tier(mp.input_mtok, prompt) > _at_tier(mp.input_mtok, 1_000)  # the tier is really crossed
    async with FakeAnthropic() as api:
        api.script(
            anth.Reply(
                text="Paris.",
                prompt_tokens=prompt,
                cached_tokens=read,
                cache_write_tokens=write,
                completion_tokens=out,
            )
        )
        env = {
            "ANTHROPIC_BASE_URL": api.base_url,
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "AGENT_MODEL": "anthropic:claude-sonnet-4-5",
            "MEMORY_ENABLED": "false",
        }
        code, said, err = await agentbot(tmp_path, "ask", "Capital of France?", env=env)
    assert (code, said) == (0, "Paris.\n"), err[-1500:]
    lines = err.strip().splitlines()
    # Before: "1234567+12345 tokens" and "1234567 prompt + 12345 completion tokens (1000000 cached)",
    # where the thread's footer and /usage print 1,234,567.
    assert f"  1,234,567+12,345 tokens, ${want:.4f}" in lines, err
    assert lines[-1].startswith(
        f"1 step · 1,234,567 prompt + 12,345 completion tokens (1,000,000 cached) (200,000 cache writes) · "
        f"cost ${want:.4f} · "
    ), lines[-1]


async def test_the_threads_footer_names_claudes_cache_writes_beside_its_cached_tokens(tmp_path: Path) -> None:
    # The footer said "(1,234,567 in, 1,000,000 cached, 12,345 out) · $2.5852": the 200,000 tokens
    # written to the cache, billed at 1.25x the input price, were not named, so the cost read as too
    # high for the tokens shown. The same call through the real adapter, rendered as the thread shows it.
    async with FakeAnthropic() as api, httpx.AsyncClient() as http:
        api.script(
            anth.Reply(
                text="Paris.",
                prompt_tokens=1_234_567,
                cached_tokens=1_000_000,
                cache_write_tokens=200_000,
                completion_tokens=12_345,
            )
        )
        model = AnthropicModel("claude-sonnet-4-5", api_key=ANTHROPIC_KEY, base_url=api.base_url, client=http)
        async with contextlib.aclosing(Agent(model, ToolRegistry([])).run("Capital?")) as it:
            result = [ev async for ev in it][-1].result
    footer = format_footer(result)
    assert "1,246,912 tokens (1,234,567 in, 1,000,000 cached, 200,000 cache writes, 12,345 out)" in footer, (
        footer
    )


async def test_a_fallback_mid_call_to_a_dearer_model_is_held_at_its_price_and_never_passes_the_limit(
    tmp_path: Path,
) -> None:
    # The tier is [gpt-4o-mini, claude-opus-4-1]; gpt-4o-mini fails (HTTP 500), so the router falls back
    # to Opus inside the same model call. The member has $0.05 left this month: one call's hold on
    # gpt-4o-mini (prompt x input + 1,024 x output) fits, one on Opus (prompt x 1.25 x input for the cache
    # write + 1,024 x output, ~$0.09 at $15/$75 per million) does not. Before, the hold made for
    # gpt-4o-mini covered the Opus call too: it ran and spent $0.105 of the $0.05.
    limit = 0.05
    prices = PriceTable()
    assert (
        prices.estimate("gpt-4o-mini", 2_000, 1_024).usd
        < limit
        < prices.estimate("claude-opus-4-1", 500, 1_024).usd
    )
    async with (
        FakeLLM() as oai,
        FakeAnthropic() as claude,
        httpx.AsyncClient() as http,
        await open_database(str(tmp_path / "quota.sqlite3")) as db,
    ):
        common: dict[str, Any] = {"client": http, "max_attempts": 1}

        def build(spec: str) -> Model:
            provider, _, name = spec.rpartition(":")
            if provider == "anthropic":
                return AnthropicModel(name, api_key=ANTHROPIC_KEY, base_url=claude.base_url, **common)
            return OpenAIChatModel(name, api_key="sk-test-costs2-0001", base_url=oai.base_url, **common)

        oai.script(error(500, "upstream failed"))
        claude.script(anth.text("Paris.", prompt_tokens=2_000, completion_tokens=1_000))  # $0.105 at Opus
        router = Router(
            {t: ["gpt-4o-mini", "anthropic:claude-opus-4-1"] for t in ("simple", "medium", "complex")},
            build,
            breakers=Breakers(cooldown=60, max_cooldown=600),
        )
        store = QuotaStore(db, None, replace(Limits.unlimited(), cost_per_month_usd=limit))
        agent = Agent(router.at_tier("simple"), ToolRegistry([]))
        async with contextlib.aclosing(agent.run("Capital?", budget=store.budget(1, 100, (), "s1"))) as run:
            events = [ev async for ev in run]
        spent = await db.fetchone("SELECT COALESCE(SUM(cost_nusd), 0) AS n FROM usage_ledger")
    result = next(e.result for e in events if isinstance(e, FinalEvent))
    assert [e.to_model for e in events if isinstance(e, ModelSwitched)] == ["claude-opus-4-1"]
    assert result.status == "budget" and "Not enough of the monthly spending limit is left" in (
        result.error or ""
    ), result
    assert claude.requests == [], "the Opus call was made on gpt-4o-mini's hold"
    assert spent is not None and spent["n"] / 1e9 <= limit, spent


async def test_a_claude_call_without_agent_max_tokens_is_held_at_the_cap_it_is_sent_with(
    tmp_path: Path,
) -> None:
    # AGENT_MAX_TOKENS unset: the Anthropic adapter sends max_tokens=8192 (the API requires one), so one
    # call can bill 8,192 output tokens. The hold assumed 1,024: with $0.02 left, claude-haiku-4-5's
    # 8,000-token answer (8,000 x output price / 1e6 = $0.04 at $5 per million) spent twice the limit.
    limit = 0.02
    prices = PriceTable()
    assert (
        prices.estimate("claude-haiku-4-5", 500, 1_024).usd
        < limit
        < prices.cost("claude-haiku-4-5", Usage(500, 8_000)).usd
    )
    async with (
        FakeAnthropic() as claude,
        httpx.AsyncClient() as http,
        await open_database(str(tmp_path / "quota.sqlite3")) as db,
    ):
        claude.script(anth.text("A long essay.", prompt_tokens=500, completion_tokens=8_000))
        model = AnthropicModel(
            "claude-haiku-4-5", api_key=ANTHROPIC_KEY, base_url=claude.base_url, client=http
        )
        store = QuotaStore(db, None, replace(Limits.unlimited(), cost_per_month_usd=limit))
        agent = Agent(model, ToolRegistry([]))
        async with contextlib.aclosing(agent.run("Write.", budget=store.budget(1, 100, (), "s1"))) as run:
            events = [ev async for ev in run]
        spent = await db.fetchone("SELECT COALESCE(SUM(cost_nusd), 0) AS n FROM usage_ledger")
    result = next(e.result for e in events if isinstance(e, FinalEvent))
    assert result.status == "budget" and "Not enough of the monthly spending limit is left" in (
        result.error or ""
    ), result
    assert claude.requests == [], "the call was sent on a hold for 1,024 output tokens"
    assert spent is not None and spent["n"] / 1e9 <= limit, spent


@pytest.mark.usefixtures("fast_write_window")
async def test_a_thinking_model_a_member_cannot_afford_one_step_of_is_refused_before_the_request_counts(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # gpt-5-mini thinks by default: each call is sent with 8,192 tokens of thinking room over the answer
    # cap, and held at prompt + 1,024 + 8,192 tokens. With 6,000 tokens a day, /research passed the
    # check before the run (which counted only 1,024 for the answer), counted the request, opened a
    # thread and stopped at its first hold: "stopped by a limit", a request spent on nothing.
    llm.script(text("Paris."))
    async with running_bot(fake, llm, tmp_path, guild, models=("gpt-5-mini",)) as bot:
        await run(fake, guild, "config limits", {"limit": "tokens_per_day", "value": "6000"})
        refused = await run(fake, guild, "research", {"task": "Capital of France?"}, user="alice")
        await wait_idle(fake, bot)
        mine = flat(await run(fake, guild, "usage me", user="alice"))
    said = flat(refused)
    assert "tokens" in said.lower() and "limit" in said.lower(), said
    assert fake.threads(guild.channel("general")) == [], said
    assert llm.requests == []
    assert "**Requests today**: 0 of 50" in mine, mine


@pytest.mark.usefixtures("fast_write_window")
async def test_a_claude_judge_shows_under_anthropic_in_the_admins_usage_with_its_exact_cost(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # ROUTER_CLASSIFIER=judge with a Claude judge: its call (400 in, 1 out) is real spending, charged to
    # the requester at Anthropic's prices: 400 x input + 1 x output, per million, for claude-haiku-4-5.
    # /usage server listed it as "openai/claude-haiku-4-5" (the provider was guessed from the name the
    # API reported, which has no "anthropic:" prefix).
    mp = PriceTable().lookup("claude-haiku-4-5", "anthropic").at(datetime.now(UTC))  # type: ignore[union-attr]
    judge_usd = (400 * Decimal(mp.input_mtok) + 1 * Decimal(mp.output_mtok)) / 1_000_000
    llm.script(text("Paris.", prompt_tokens=100, completion_tokens=20))
    async with FakeAnthropic() as claude:
        claude.script(anth.text("simple", prompt_tokens=400, completion_tokens=1))
        agent_env = {
            "ROUTER_CLASSIFIER": "judge",
            "ROUTER_JUDGE_MODEL": "anthropic:claude-haiku-4-5",
            "ANTHROPIC_BASE_URL": claude.base_url,
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        }
        async with running_bot(fake, llm, tmp_path, guild, agent_env=agent_env) as bot:
            general = guild.channel("general")
            fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
            thread = await fake.wait_for_thread(parent=general)
            footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content, within=30)
            await wait_idle(fake, bot)
            server = flat(await run(fake, guild, "usage server", {}, user="admin"))
            # A judge call that passes the member's limit was already made and paid for: it was dropped
            # (never in /usage, nor the footer) and the run went on as if it had cost nothing. With
            # $0.01 a month, one step on gpt-4o-mini fits (held at its 8,192-token answer cap), a
            # 40,000-token judge call ($0.04) does not.
            await run(fake, guild, "config limits", {"limit": "cost_per_month_usd", "value": "0.01"})
            claude.script(anth.text("simple", prompt_tokens=40_000, completion_tokens=1))
            llm.script(text("Madrid.", prompt_tokens=100, completion_tokens=20))
            fake.inject_interaction("research", {"task": "Capital of Spain?"}, user="admin", channel=general)
            await fake.wait_for(lambda: len(fake.threads(general)) == 2, within=10, what="the second thread")
            second = fake.threads(general)[1]
            stopped = await fake.wait_for_message(second, lambda m: "limit" in m.content, within=30)
            await wait_idle(fake, bot)
            after = flat(await run(fake, guild, "usage server", {}, user="admin"))
    assert PriceTable().estimate("gpt-4o-mini", 2_000, 8_192).usd < 0.01 < float(40_000 * mp.input_mtok) / 1e6
    assert "`anthropic/claude-haiku-4-5`: 2 calls · 40,400 in / 2 out tokens" in after, after
    # charged where it was made, before the turn: the turn is then refused (no request counted)
    assert "Monthly spending limit reached: $0.04 of $0.01" in stopped.content, stopped.content
    assert len(llm.requests) == 1, stopped.content  # the run's own call was refused
    row = next((x for x in server.splitlines() if "claude-haiku-4-5" in x), "")
    assert row.startswith("`anthropic/claude-haiku-4-5`: 1 call · 400 in / 1 out tokens · "), server
    shown = Decimal(row.rsplit("$", 1)[1])  # $0.0004: five decimals below $0.001, a trailing 0 dropped
    assert abs(shown - judge_usd) <= Decimal("0.000005"), row
    # The thread's footer counts the judge's call with the run's, as /usage does: same tokens, same money.
    assert "521 tokens (500 in, 21 out)" in footer.content, footer.content
    spent = server.split(" spent of ")[0].rsplit(" · ", 1)[1]
    assert f" · {spent} · " in footer.content, (spent, footer.content)


@pytest.mark.parametrize(
    ("reported", "shown"),
    [("team-router-alias", "team-router-alias"), ("**PWNED** [win](https://evil.example)", "gpt-4.1-nano")],
)
@pytest.mark.usefixtures("fast_write_window")
async def test_a_judge_whose_server_reports_an_alias_is_priced_by_the_name_it_was_called(
    reported: str, shown: str, fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # ROUTER_JUDGE_MODEL=gpt-4.1-nano behind a vLLM/LiteLLM that reports its own alias for it: the run's
    # calls fall back to the called name's price, the judge's did not, so /usage server read "an unknown
    # amount" for a call whose price is known: 300 x input + 1 x output, per million, for gpt-4.1-nano.
    mp = PriceTable().lookup("gpt-4.1-nano").at(datetime.now(UTC))  # type: ignore[union-attr]
    judge_usd = (300 * Decimal(mp.input_mtok) + 1 * Decimal(mp.output_mtok)) / 1_000_000
    llm.script(
        text("simple", model=reported, prompt_tokens=300, completion_tokens=1),
        text("Paris.", prompt_tokens=100, completion_tokens=20),
    )
    agent_env = {"ROUTER_CLASSIFIER": "judge", "ROUTER_JUDGE_MODEL": "gpt-4.1-nano"}
    async with running_bot(fake, llm, tmp_path, guild, agent_env=agent_env) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content, within=30)
        await wait_idle(fake, bot)
        server = flat(await run(fake, guild, "usage server", {}, user="admin"))
    assert llm.requests[0]["model"] == "gpt-4.1-nano", llm.requests[0]["model"]
    # A reported name no model has (any proxy can set it) is neither shown nor kept: the name called is.
    assert shown in footer.content and "PWNED" not in footer.content + server, footer.content
    row = next((x for x in server.splitlines() if shown in x), "")
    assert row.startswith(f"`openai/{shown}`: 1 call · 300 in / 1 out tokens · $"), server
    shown = Decimal(row.rsplit("$", 1)[1])
    assert abs(shown - judge_usd) <= Decimal("0.000005"), row
    assert "unknown" not in server, server


async def test_the_page_readers_fallback_to_a_dearer_model_is_held_at_its_price(
    llm: FakeLLM, web: FakeWeb, tmp_path: Path
) -> None:
    # The page reader serves from the simple tier [gpt-4.1-nano, claude-opus-4-1]; gpt-4.1-nano fails,
    # so the reader's call falls back to Opus. Reading ~60,000 characters (~15,000 tokens) on Opus is
    # held at 15,000 x 1.25 x $15 per million (cache write) + its notes cap at $75 per million, ~$0.3:
    # more than the $0.10 left. Before, the reader's hold stayed at gpt-4.1-nano's ~$0.002 and Opus
    # read the page for $0.2475 (15,000 x $15 + 300 x $75, per million). Now the agent reads the page
    # itself and the month's spending stays within the limit.
    limit = 0.10
    assert PriceTable().estimate("claude-opus-4-1", 15_000, 1_000).usd > limit
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, max_chars=2_000, reader_chars=60_000))
    async with (
        FakeAnthropic() as claude,
        httpx.AsyncClient() as http,
        await open_database(str(tmp_path / "quota.sqlite3")) as db,
    ):
        common: dict[str, Any] = {"client": http, "max_attempts": 1}

        def build(spec: str) -> Model:
            provider, _, name = spec.rpartition(":")
            if provider == "anthropic":
                return AnthropicModel(name, api_key=ANTHROPIC_KEY, base_url=claude.base_url, **common)
            return OpenAIChatModel(name, api_key="sk-test-costs2-0001", base_url=llm.base_url, **common)

        llm.script(
            tool_call("fetch_url", {"url": web.url("/long")}),  # the agent, gpt-4o-mini
            error(500, "upstream failed"),  # the reader, gpt-4.1-nano
            text("Otters keep warm with their fur."),  # the agent, from the page itself
        )
        claude.script(anth.text("notes", prompt_tokens=15_000, completion_tokens=300))
        tiers = {t: ["gpt-4.1-nano", "anthropic:claude-opus-4-1"] for t in ("simple", "medium", "complex")}
        router = Router(tiers, build, breakers=Breakers(cooldown=60, max_cooldown=600))
        store = QuotaStore(db, None, replace(Limits.unlimited(), cost_per_month_usd=limit))
        agent = Agent(
            build("gpt-4o-mini"),
            ToolRegistry(fetch_tools(fetcher)),
            reader=Reader(router.at_tier("simple", max_tier="simple"), ReaderSettings()),
        )
        try:
            async with contextlib.aclosing(
                agent.run("How do otters keep warm?", budget=store.budget(1, 100))
            ) as it:
                events = [ev async for ev in it]
        finally:
            await fetcher.aclose()
        spent = await db.fetchone("SELECT COALESCE(SUM(cost_nusd), 0) AS n FROM usage_ledger")
    result = next(e.result for e in events if isinstance(e, FinalEvent))
    assert result.ok and result.models == ["gpt-4o-mini"], result
    assert claude.requests == [], "Opus read the page on gpt-4.1-nano's hold"
    assert spent is not None and spent["n"] / 1e9 <= limit, spent


@pytest.mark.usefixtures("fast_write_window")
async def test_a_self_hosted_model_without_a_price_or_usage_never_reads_as_free_in_usage(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # A llama.cpp-style server: a model name no price table knows, streams without usage. The footer
    # said "estimated: 814 tokens … · unknown (no price for my-llama)", while /usage me said "Spending
    # this month: $0.00+" and /usage server "$0.00+ spent", "<@alice> … · $0.00+", "openai/my-llama: …
    # · $0.00+": a price of nothing, for a cost nobody knows.
    #
    # The member attaches a 300 KB photo (VISION_MODELS=my-llama): counted as its base64 text, the
    # estimate was ~100,000 prompt tokens, half the member's 200,000 a day for one picture. An image is
    # counted as IMAGE_TOKENS (1,600, the most Claude bills for one; llava takes 576).
    llm.report_usage = False
    llm.script(text("Paris is the capital of France."))
    photo = b"\xff\xd8\xff\xe0" + os.urandom(300_000)  # a JPEG by its magic bytes, as the bot checks
    async with running_bot(fake, llm, tmp_path, guild, models=("my-llama",), VISION_MODELS="my-llama") as bot:
        general = guild.channel("general")
        task = {"task": "Capital of France?", "file": ("photo.jpg", photo)}
        fake.inject_interaction("research", task, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content, within=30)
        await wait_idle(fake, bot)
        me = flat(await run(fake, guild, "usage me", user="alice"))
        server = flat(await run(fake, guild, "usage server", {}, user="admin"))
        # The admin made no call: their own spending is $0.00, but the server budget line counts alice's
        # unpriced calls too (it read "$0.00 of $100.00", unmarked).
        admins = flat(await run(fake, guild, "usage me", user="admin"))
    found = re.search(r"estimated: ([\d,]+) tokens \(([\d,]+) in, ([\d,]+) out\)", footer.content)
    assert found and "unknown (no price for my-llama)" in footer.content, footer.content
    total, prompt, completion = found.groups()
    assert "image_url" in json.dumps(llm.requests[0]), "the photo was not sent"
    assert int(prompt.replace(",", "")) < 1_600 + 2_000, footer.content  # the photo, the task and the tools
    assert "$0" not in footer.content, footer.content
    # The same tokens everywhere; the money unknown everywhere, never $0.
    assert f"**Tokens today**: ~{total} of 200,000" in me, me  # counted locally: marked as estimated
    assert "**Spending this month**: an unknown amount of $5.00" in me, me
    assert "**Server budget this month**: an unknown amount of $100.00" in me, me
    assert f"~{total} tokens · an unknown amount spent of a $100.00 budget" in server, server
    assert f"1 request · ~{total} tokens · an unknown amount" in server, server
    assert f"`openai/my-llama`: 1 call · ~{prompt} in / {completion} out tokens · an unknown amount" in server
    assert "$0.00+" not in me + server, me + server
    assert "**Spending this month**: $0.00 of $5.00" in admins, admins
    assert "**Server budget this month**: an unknown amount of $100.00" in admins, admins


def test_a_run_costing_thousands_reads_with_separators_in_its_footer() -> None:
    # A month-long batch on claude-opus-4-1 in one thread: 80,000,000 in, 2,000,000 out at $15 / $75 per
    # million = $1,350 (80 x 15 + 2 x 75). The footer printed "$1350.0000" where /usage prints "$1,350.00".
    mp = PriceTable().lookup("claude-opus-4-1", "anthropic").at(datetime.now(UTC))  # type: ignore[union-attr]
    usage = Usage(80_000_000, 2_000_000, requests=400)
    want = (80_000_000 * Decimal(mp.input_mtok) + 2_000_000 * Decimal(mp.output_mtok)) / 1_000_000
    cost = PriceTable().cost("claude-opus-4-1", usage, "anthropic")
    result = RunResult("done", "completed", 400, usage, cost, ["claude-opus-4-1"], duration=1.0)
    footer = format_footer(result)
    assert f"82,000,000 tokens (80,000,000 in, 2,000,000 out) · ${want:,.4f} · " in footer, footer
    assert want >= 1000  # the separator is really exercised
