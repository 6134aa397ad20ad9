"""bench/arbitrage.py prices the calls the shipped router makes: its runs come from a real RoutedModel."""

from __future__ import annotations

import pytest

from bench.arbitrage import LADDERS, SHAPES, Pricing, Sent, bench_prices, routing_path, task_cost

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
