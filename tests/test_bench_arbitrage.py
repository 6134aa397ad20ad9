"""bench/arbitrage.py --usage-db: the cost report prices reasoning as a running bot measured it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.events import Cost, Usage
from agent.models.prices import default_prices
from bench.arbitrage import Pricing, measured_reasoning
from bot.limits import Limits
from bot.store import MIGRATIONS, Database, QuotaStore


async def settle(path: Path, calls: list[tuple[str, str, Usage]]) -> None:
    async with await Database.open(path) as db:
        store = QuotaStore(db, None, Limits(None, None, None, None, None))
        for model, provider, usage in calls:
            await store.budget(1, 7, ()).settle(None, model, provider, usage, Cost(0.001))
        await store.flush()


async def test_reasoning_per_call_comes_from_the_bots_own_usage(tmp_path: Path) -> None:
    path = tmp_path / "agentbot.sqlite3"
    await settle(
        path,
        # the provider reports a dated name; the report's ladders say gpt-5
        [("gpt-5-2025-08-07", "openai", Usage(3000, 700, 0, 1, 400 + i % 2 * 200)) for i in range(60)]
        + [("gpt-5-mini", "openai", Usage(3000, 500, 0, 1, 300)) for _ in range(10)]
        + [("gpt-4.1-nano", "openai", Usage(900, 80, 0, 1)) for _ in range(80)],
    )
    measured = measured_reasoning(path, default_prices())
    # ten gpt-5-mini calls are too few to stand for an average; nano never reasons
    assert measured == {"gpt-5": (500.0, 60), "gpt-4.1-nano": (0.0, 80)}

    table = default_prices()
    pricing = Pricing(table, {m: v for m, (v, _) in measured.items()})
    two_calls = Usage(6000, 300, 0, 2)
    assert pricing.usd("gpt-5", two_calls) == pytest.approx(table.cost("gpt-5", Usage(6000, 1300, 0, 2)).usd)
    assert pricing.usd("gpt-5-mini", two_calls) == pytest.approx(table.cost("gpt-5-mini", two_calls).usd)


async def test_a_database_from_before_reasoning_counts_says_how_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    async with await Database.open(path, migrations=MIGRATIONS[:2]):
        pass
    with pytest.raises(SystemExit, match=r"schema version 3 or later \(start the bot once to upgrade it\)"):
        measured_reasoning(path, default_prices())
    with pytest.raises(SystemExit, match="no such file"):
        measured_reasoning(tmp_path / "missing.sqlite3", default_prices())
