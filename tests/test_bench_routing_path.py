"""bench/arbitrage.py prices the calls the shipped router makes: its runs come from a real RoutedModel."""

from __future__ import annotations

import pytest

from bench.arbitrage import (
    LADDERS,
    SHAPES,
    Pricing,
    Sent,
    bench_prices,
    losses,
    mixes,
    routing_path,
    task_cost,
)

LADDER = LADDERS["OpenAI only"]  # gpt-4.1-nano / gpt-5-mini / gpt-5
RESEARCH = {"complex": "medium"}


def answered_by(routed: str, true: str, hand_down: int) -> list[tuple[str, str]]:
    steps = len(SHAPES[true].observations)  # type: ignore[index]
    calls = routing_path.path(LADDER, routed, steps, research=RESEARCH, hand_down=hand_down)  # type: ignore[arg-type]
    return [(c.model, c.kind) for c in calls]


def test_a_medium_ask_sent_up_doubtful_is_answered_by_the_researcher_only_with_a_hand_down() -> None:
    doubtful = Sent("complex", doubtful=True)
    research = [("gpt-5-mini", "step")] * 3 + [("gpt-5-mini", "done")]
    assert answered_by(doubtful, "medium", 0) == [*research, ("gpt-5", "answer")]
    assert answered_by(doubtful, "medium", 4) == [*research, ("gpt-5-mini", "answer")]
    # Sure of it, or a complex ask whose research runs longer: the complex model writes.
    assert answered_by(Sent("complex"), "medium", 4)[-1] == ("gpt-5", "answer")
    assert answered_by(doubtful, "complex", 4)[-1] == ("gpt-5", "answer")


def test_under_routed_runs_move_up_and_carry_on_as_the_router_does() -> None:
    # A complex task routed medium researches on past its step limit and gains the complex writer.
    assert answered_by("medium", "complex", 0) == [("gpt-5-mini", "step")] * 8 + [
        ("gpt-5-mini", "done"),
        ("gpt-5", "answer"),
    ]
    # A medium task routed simple: three calls on the simple model, then the medium model finishes.
    assert answered_by("simple", "medium", 0) == [("gpt-4.1-nano", "step")] * 3 + [("gpt-5-mini", "answer")]


@pytest.mark.parametrize("tier", ["simple", "medium", "complex"])
def test_a_run_on_its_own_tier_costs_what_its_typical_run_costs(tier: str) -> None:
    """Pricing the router's calls one by one gives the per-tier figures the report prints."""
    prices = Pricing(bench_prices())
    rd = LADDER["simple"] if tier != "simple" else None
    agent, _, read = SHAPES[tier].usage(reader=rd is not None)  # type: ignore[index]
    expected = prices.usd(LADDER[tier], agent) + (prices.usd(rd, read) if rd else 0.0)  # type: ignore[index]
    got = task_cost(tier, tier, LADDER, prices, research={})  # type: ignore[arg-type]
    assert got == pytest.approx(expected, rel=1e-12) and got > 0


def test_the_loss_table_accounts_for_all_of_the_gap_to_the_oracle() -> None:
    """Each bucket's share of the oracle's saving lost adds up, per mix, to what the mix table misses."""
    prices = Pricing(bench_prices())
    rows = [
        *[("simple", "simple")] * 5,
        ("simple", "medium"),
        *[("medium", "medium")] * 3,
        ("medium", "complex"),
        *[("complex", "complex")] * 4,
        ("complex", "medium"),
    ]
    table = losses(rows, LADDER, prices)  # type: ignore[arg-type]
    for i, (_, _, _, kept) in enumerate(mixes(rows, LADDER, prices)):  # type: ignore[arg-type]
        assert sum(b.lost[i] for b in table) == pytest.approx(1 - kept, abs=1e-12)
    worst = table[0]  # sorted by what they lose at the 5 % complex mix
    assert (worst.true, worst.routed, worst.asks) == ("medium", "complex", 1) and worst.lost[-1] > 0
    assert worst.calls == "gpt-5-mini x4 > gpt-5 x1"  # the researcher's calls, then the complex writer
    # Routed where the oracle would: nothing lost.
    right = [r for r in rows if r[0] == r[1]]
    assert all(b.extra == 0 and max(b.lost) == 0 for b in losses(right, LADDER, prices))  # type: ignore[arg-type]
