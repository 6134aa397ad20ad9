"""Routing report: classifier accuracy on a labelled task set, and what routing saves vs always-complex.

    .venv/bin/python bench/arbitrage.py

Data: ``bench/data/arbitrage_tasks.jsonl`` (150 tasks written for this repo, labelled simple / medium /
complex). Splits, in the order they were written: ``dev`` (72, the heuristic was built on them),
``holdout`` and ``test`` (30 + 24, written before the heuristic saw them, then used to improve it), and
``test2`` (24, written last and never tuned on). The figure to trust for unseen traffic is ``test2``.

Cost model (no network): a run's tokens depend on the task's *true* tier (the work it needs), its price
on the tier it was *routed* to. Typical runs per tier are modelled step by step (each step re-sends the
conversation; the previous step's prefix is served from the provider's prompt cache):

* simple: 2 steps (one tool call), 1.8k-token prompt (system + tool specs + ask), +0.6k per step;
* medium: 4 steps, 2.0k prompt, +2.5k per step (fetched page extracts);
* complex: 9 steps, 2.2k prompt, +3.0k per step.

An under-routed task is charged its failed start (3 steps on the cheaper model, before the loop
escalates) *plus* the whole run on the right tier; an over-routed one pays the stronger model's price
for the smaller run. Prices: each tier's primary model in ``agent/models/tiers.toml``, from
``agent/models/prices.json``. The baseline, measured in the same run, sends every task to the complex
tier's primary.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.events import Usage  # noqa: E402
from agent.models.classifier import heuristic_tier  # noqa: E402
from agent.models.factory import split_spec  # noqa: E402
from agent.models.prices import PriceTable, default_prices  # noqa: E402
from agent.models.tiers import TIERS, Tier, default_tiers  # noqa: E402

DATA = ROOT / "bench" / "data" / "arbitrage_tasks.jsonl"
FAILED_START_STEPS = 3
TARGET_SAVING = 0.60
TARGET_UNDER = 0.05


@dataclass(frozen=True)
class Profile:
    steps: int
    base_prompt: int
    growth: int
    out_per_step: int
    final_out: int

    def usage(self, steps: int | None = None) -> Usage:
        n = self.steps if steps is None else min(steps, self.steps)
        prompts = [self.base_prompt + self.growth * k for k in range(n)]
        cached = sum(prompts[:-1])  # step k re-reads step k-1's whole prompt from the cache
        final = self.final_out if n == self.steps else self.out_per_step
        return Usage(sum(prompts), self.out_per_step * (n - 1) + final, cached, n)


PROFILES: dict[Tier, Profile] = {
    "simple": Profile(2, 1800, 600, 60, 200),
    "medium": Profile(4, 2000, 2500, 80, 600),
    "complex": Profile(9, 2200, 3000, 120, 1500),
}

LADDERS: dict[str, dict[Tier, str]] = {
    "shipped tiers.toml": {t: split_spec(specs[0])[1] for t, specs in default_tiers().items()},
    "OpenAI only": {"simple": "gpt-4.1-nano", "medium": "gpt-5-mini", "complex": "gpt-5"},
    "Anthropic only": {
        "simple": "claude-3-5-haiku",
        "medium": "claude-haiku-4-5",
        "complex": "claude-sonnet-4-5",
    },
    "Gemini only": {
        "simple": "gemini-2.5-flash-lite",
        "medium": "gemini-2.5-flash",
        "complex": "gemini-2.5-pro",
    },
    "Groq open models": {
        "simple": "llama-3.1-8b-instant",
        "medium": "openai/gpt-oss-20b",
        "complex": "openai/gpt-oss-120b",
    },
}


def task_cost(true: Tier, routed: Tier, ladder: dict[Tier, str], prices: PriceTable) -> float:
    def usd(model: str, usage: Usage) -> float:
        cost = prices.cost(model, usage)
        if not cost.known:
            raise SystemExit(f"no price for {model}: add it to agent/models/prices.json")
        return cost.usd

    full = usd(ladder[routed], PROFILES[true].usage())
    if TIERS.index(routed) >= TIERS.index(true):
        return full
    failed = usd(ladder[routed], PROFILES[true].usage(FAILED_START_STEPS))
    return failed + usd(ladder[true], PROFILES[true].usage())


def costs(
    rows: list[tuple[Tier, Tier]], ladder: dict[Tier, str], prices: PriceTable
) -> tuple[float, float, float]:
    routed = sum(task_cost(t, r, ladder, prices) for t, r in rows)
    oracle = sum(task_cost(t, t, ladder, prices) for t, _ in rows)
    baseline = sum(task_cost(t, "complex", ladder, prices) for t, _ in rows)
    return routed, oracle, baseline


def main() -> int:
    tasks = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    prices = default_prices()
    t0 = time.perf_counter()
    routed: list[Tier] = [heuristic_tier(t["task"])[0] for t in tasks]
    per_task_us = (time.perf_counter() - t0) / len(tasks) * 1e6
    rows = [(t["tier"], r) for t, r in zip(tasks, routed, strict=True)]

    print(
        f"Labelled tasks: {len(tasks)} ({', '.join(f'{k} {v}' for k, v in Counter(t['tier'] for t in tasks).items())})"
    )
    print(f"Heuristic classifier: {per_task_us:.0f} µs per task\n")
    print("Confusion matrix (rows: labelled tier, columns: routed tier)")
    print(f"{'':>10} " + " ".join(f"{t:>8}" for t in TIERS))
    matrix = Counter(rows)
    for true in TIERS:
        print(f"{true:>10} " + " ".join(f"{matrix[(true, r)]:>8}" for r in TIERS))

    print(f"\n{'split':<9} {'tasks':>5} {'accuracy':>9} {'complex under-routed':>21} {'saving':>7}")
    ladder = LADDERS["shipped tiers.toml"]
    splits = ["dev", "holdout", "test", "test2", "all"]
    figures: dict[str, tuple[float, float, float]] = {}
    for split in splits:
        sel = [
            row
            for row, t in zip(rows, tasks, strict=True)
            if split == "all" or t.get("split", "dev") == split
        ]
        acc = sum(a == b for a, b in sel) / len(sel)
        cx = [b for a, b in sel if a == "complex"]
        under = sum(b != "complex" for b in cx) / len(cx)
        r, _, base = costs(sel, ladder, prices)
        figures[split] = (acc, under, 1 - r / base)
        print(
            f"{split:<9} {len(sel):>5} {acc:>9.1%} {sum(b != 'complex' for b in cx):>9}/{len(cx):<3} = {under:>5.1%} "
            f"{1 - r / base:>7.1%}"
        )

    print("\nTypical run per tier (tokens): prompt / of which cached / completion")
    for t, p in PROFILES.items():
        u = p.usage()
        print(
            f"  {t:<8} {p.steps} steps: {u.prompt_tokens:>7} / {u.cached_tokens:>7} / {u.completion_tokens:>5}"
        )

    print("\nCost of the labelled set, routed vs always-complex (USD; ratio = routed / baseline)")
    print(
        f"{'ladder (simple / medium / complex)':<62} {'baseline':>9} {'routed':>9} {'ratio':>6} {'saving':>7} {'oracle':>7}"
    )
    for name, lad in LADDERS.items():
        r, oracle, base = costs(rows, lad, prices)
        label = f"{name}: {' / '.join(lad[t] for t in TIERS)}"
        print(
            f"{label:<62} {base:>9.4f} {r:>9.4f} {r / base:>6.2f} {1 - r / base:>7.1%} {1 - oracle / base:>7.1%}"
        )

    print("\nPer labelled tier, shipped ladder (USD)")
    print(f"{'tier':<8} {'tasks':>5} {'baseline':>9} {'routed':>9} {'share of baseline':>18}")
    _, _, total_base = costs(rows, ladder, prices)
    for true in TIERS:
        sel = [row for row in rows if row[0] == true]
        r, _, base = costs(sel, ladder, prices)
        print(f"{true:<8} {len(sel):>5} {base:>9.4f} {r:>9.4f} {base / total_base:>18.1%}")

    # The saving can never exceed the non-complex share of the baseline (complex tasks cost the same
    # either way), so it depends on the traffic mix more than on the classifier: show that dependence.
    print("\nTraffic-mix sensitivity, shipped ladder (per-task costs of the routed labelled set, reweighted)")
    print(f"{'mix simple/medium/complex':<27} {'saving':>7} {'oracle':>7}")
    mean: dict[Tier, tuple[float, float, float]] = {}
    for true in TIERS:
        sel = [row for row in rows if row[0] == true]
        r, o, b = costs(sel, ladder, prices)
        mean[true] = (r / len(sel), o / len(sel), b / len(sel))
    labelled = tuple(sum(1 for row in rows if row[0] == t) / len(rows) for t in TIERS)
    for mix in (labelled, (0.5, 0.35, 0.15), (0.6, 0.3, 0.1), (0.7, 0.25, 0.05)):
        r = sum(w * mean[t][0] for w, t in zip(mix, TIERS, strict=True))
        o = sum(w * mean[t][1] for w, t in zip(mix, TIERS, strict=True))
        b = sum(w * mean[t][2] for w, t in zip(mix, TIERS, strict=True))
        label = " / ".join(f"{w:.0%}" for w in mix) + (" (labelled)" if mix is labelled else "")
        print(f"{label:<27} {1 - r / b:>7.1%} {1 - o / b:>7.1%}")

    acc, under, saving = figures["all"]
    _, under2, saving2 = figures["test2"]
    print(
        f"\nAll tasks: saving {saving:.1%} (target ≥ {TARGET_SAVING:.0%}: {'met' if saving >= TARGET_SAVING else 'NOT met'}), "
        f"complex under-routed {under:.1%} (target ≤ {TARGET_UNDER:.0%}: {'met' if under <= TARGET_UNDER else 'NOT met'})"
    )
    print(
        f"Unseen split test2: saving {saving2:.1%}, complex under-routed {under2:.1%} "
        f"({'met' if under2 <= TARGET_UNDER else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
