"""Routing report: classifier accuracy on a labelled task set, and what routing saves vs always-complex.

    .venv/bin/python bench/arbitrage.py [--usage-db DATA_DIR/agentbot.sqlite3]

Data: ``bench/data/arbitrage_tasks.jsonl`` (540 asks written for this repo, labelled simple / medium /
complex by the work they need). Splits, in the order they were written: ``dev`` (72), ``holdout``,
``test`` and ``test2`` (30 + 24 + 24), ``test3`` and ``test4`` (45 + 45), then ``test5`` to ``test9``
(60 each), each written by a helper that never saw the router or the data. The keywords were tuned on
the splits up to ``test4`` only, so they are blind on the last 300. Routing is the shipped
``ROUTER_CLASSIFIER=embedding``, each split scored by weights trained without it
(``bench/train_router.py``), so every figure below is held out by writer; ``test9`` was also measured
once before it joined the training data. ``bench/data/router_blind.jsonl`` (60 asks, 20 per tier) is
never trained on: the shipped weights and bar themselves are scored on it (written after the router's
errors on the labelled set had been read, but before anything scored these asks; six of its simple
asks are near-paraphrases of labelled ones, none of its complex asks is).

Cost model (no network): a run's *work* depends on the task's true tier, its *price* on the models
that do it. Each tier's typical run is a list of tool observations, then the answer:

* simple: a search (600 tokens), then the answer: 2 model calls;
* medium: a search, two pages, the answer: 4 calls;
* complex: three searches and five pages, the answer: 9 calls.

Which model makes each call is not modelled here: the shipped router decides it. A real
``RoutedModel`` is driven call by call through the task's run (``bench/routing_path.py``), so step
limits, research tiers, writers and hand-downs are exactly what the product does. Every call re-sends
the conversation (system prompt and tool specs 1.8-2.2k tokens, then each observation); the previous
call's prompt is served from the provider's prompt cache when the same model made it. A page is 18,000
characters of readable text (4.5k tokens); the agent model sees the first 12,000 (3k tokens,
``FETCH_MAX_CHARS``). With the page reader (``READER_MODEL=auto``, :mod:`agent.reader`), runs above the
tier (the routed tier, as ``Services.reader_for``) send each page to the simple tier's model instead
(4.8k tokens in with its prompt, 450 out) and the agent model gets a 500-token header and notes. With
research tiers (``ROUTER_RESEARCH_TIERS``, default ``complex=medium``) a complex run makes its calls on
the medium model, ends them with a 15-token "done" line, and the complex model writes the answer from
the whole conversation (uncached). An under-routed task works on the cheaper tier until that tier's
step limit (``ROUTER_STEP_LIMITS``: simple 3 calls, medium 6) moves it up, and carries on from what it
found, as the router does (before this bench drove the router, it charged the whole run again on the
right tier: the default's figures moved by 0.1 to 0.2 points). A hand-down
(``ROUTER_HAND_DOWN_CALLS``) is printed for several N; see the note at its table. Prices: each tier's primary in
``agent/models/tiers.toml``, priced by :mod:`agent.models.prices` (the genai-prices package's bundled data,
``PRICES_FILE`` over it; Groq's model names at Groq's prices). Every Anthropic call writes its uncached
prompt to the cache (the adapter's breakpoint on the last message), billed at 1.25x input; the other
providers bill no writes. A run's usage is priced as a whole, so a tier above 200k prompt tokens would
be chosen by the run's sum, not per call: no typical run comes near it.

Reasoning: gpt-5, gpt-5-mini (the shipped complex and medium models), Gemini 2.5 Pro/Flash and gpt-oss
think before each answer and bill it as output. How much depends on the model and the call, and no
offline figure fits our calls, so it is priced at 0 by default: the saving reported is a floor. The
bot records reasoning tokens per model (``/usage server``); ``--usage-db`` prices each model at its
measured average per call. A sensitivity table shows the saving for 0 to 2,000 tokens per call, and
the per-call average at which the target is met.

Baseline, computed in the same run: every task on the complex tier's primary, with no reader (a
one-model bot gains nothing from reading pages with the same expensive model: that costs more, as
the "always-complex + reader" line shows). The saving is against the cheaper of the two.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import routing_path  # noqa: E402
import train_router  # noqa: E402
from routing_path import Call, Sent  # noqa: E402

from agent.config import AgentSettings  # noqa: E402
from agent.events import Usage  # noqa: E402
from agent.models.classifier import heuristic_tier  # noqa: E402
from agent.models.embedding_classifier import LinearRouter, route  # noqa: E402
from agent.models.factory import split_spec  # noqa: E402
from agent.models.prices import PriceTable, default_prices  # noqa: E402
from agent.models.reasoning import gemini_thinks, openai_reasons  # noqa: E402
from agent.models.tiers import TIERS, Tier, default_tiers  # noqa: E402

DATA = ROOT / "bench" / "data" / "arbitrage_tasks.jsonl"
TARGET_OF_ORACLE = 0.95
"""Routing must keep at least this share of the oracle's saving, at every traffic mix."""
TARGET_UNDER = 0.03
GROQ = "https://api.groq.com/openai/v1"
UNSEEN = "test9"


SEARCH_TOKENS = 600
PAGE_SEEN_TOKENS = 3000  # the 12,000-character window the agent model gets without a reader
PAGE_READ_TOKENS = 4500  # the whole 18,000-character page, which the reader reads
READER_PROMPT_TOKENS = 300  # its instructions and the task
NOTES_TOKENS = 500  # header and notes the agent model gets instead of the page
NOTES_OUT_TOKENS = 450
DONE_OUT = 15  # a researcher's "I have what is needed" line (ROUTER_RESEARCH_TIERS)
RESEARCH: dict[str, str] = AgentSettings.model_fields["router_research_tiers"].get_default(
    call_default_factory=True
)
HAND_DOWN: int = AgentSettings.model_fields["router_hand_down_calls"].get_default()


@dataclass(frozen=True)
class Shape:
    """A typical run of one tier: its tool observations in order, then the answer."""

    observations: tuple[str, ...]
    base_prompt: int
    out_per_step: int
    final_out: int

    def usage(
        self, *, reader: bool, calls: int | None = None, split: bool = False
    ) -> tuple[Usage, Usage, Usage]:
        """(agent model, writer, reader) usage for the whole run or its first ``calls`` calls.

        ``split``: the agent model is a researcher that ends with a one-line "done" instead of the answer,
        and the writer answers from the same conversation, with nothing of it in its prompt cache.
        """
        full = len(self.observations) + 1
        n = full if calls is None else min(calls, full)
        prompts, size, pages = [], self.base_prompt, 0
        for k in range(n):
            prompts.append(size)
            if k < len(self.observations):
                page = self.observations[k] == "page"
                pages += page and k < n - 1
                size += SEARCH_TOKENS if not page else NOTES_TOKENS if reader else PAGE_SEEN_TOKENS
        cached = sum(prompts[:-1])  # call k re-reads call k-1's whole prompt from the cache
        last = self.out_per_step if n < full else DONE_OUT if split else self.final_out
        # What is not read from the cache is written to it (billed only where writes cost extra).
        agent = Usage(sum(prompts), self.out_per_step * (n - 1) + last, cached, n, 0, sum(prompts) - cached)
        writer = Usage(prompts[-1], self.final_out, 0, 1, 0, prompts[-1]) if split and n == full else Usage()
        if not reader:
            return agent, writer, Usage()
        read_in = (PAGE_READ_TOKENS + READER_PROMPT_TOKENS) * pages
        read = Usage(read_in, NOTES_OUT_TOKENS * pages, 0, pages, 0, read_in)
        return agent, writer, read

    def priced_calls(self, calls: Sequence[Call], *, reader: bool) -> tuple[dict[str, Usage], Usage]:
        """Usage per model of ``calls`` (who made each, from the router) working through this run, and the
        reader's. A call re-reads the previous call's prompt from the cache when the same model made it;
        a "done" line is dropped from the conversation, so the answer after a hand-over has that prompt."""
        per: dict[str, Usage] = {}
        size, prev, pages, seen = self.base_prompt, ("", 0), 0, iter(self.observations)
        for c in calls:
            cached = prev[1] if prev[0] == c.model else 0
            out = self.out_per_step if c.kind == "step" else DONE_OUT if c.kind == "done" else self.final_out
            u = per.get(c.model, Usage())
            per[c.model] = Usage(
                u.prompt_tokens + size,
                u.completion_tokens + out,
                u.cached_tokens + cached,
                u.requests + 1,
                0,
                u.cache_write_tokens + size - cached,
            )
            prev = (c.model, size)
            if c.kind == "step":
                page = next(seen) == "page"
                pages += page and reader
                size += SEARCH_TOKENS if not page else NOTES_TOKENS if reader else PAGE_SEEN_TOKENS
        read_in = (PAGE_READ_TOKENS + READER_PROMPT_TOKENS) * pages
        return per, Usage(read_in, NOTES_OUT_TOKENS * pages, 0, pages, 0, read_in)


SHAPES: dict[Tier, Shape] = {
    "simple": Shape(("search",), 1800, 60, 200),
    "medium": Shape(("search", "page", "page"), 2000, 80, 600),
    "complex": Shape(("search", "page", "page", "search", "page", "page", "search", "page"), 2200, 120, 1500),
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


# Models that think before answering unless told not to: what the adapters treat as such (OpenAI's
# o-series and gpt-5 family, Gemini 2.5 Pro and Flash), plus gpt-oss, which thinks on Groq though we
# send it no effort. Claude thinks only when asked; Flash-Lite, gpt-4.1 and Llama do not think at all.
REASONS_BY_DEFAULT = frozenset(
    m
    for ladder in LADDERS.values()
    for m in ladder.values()
    if openai_reasons(m) or gemini_thinks(m) or m.startswith("openai/gpt-oss")
)
MIN_MEASURED_CALLS = 50


@dataclass(frozen=True)
class Pricing:
    """The price table plus the hidden reasoning each model adds to every call, billed as output.

    Reasoning is the one token count this model cannot assume from the work a run does: it depends on the
    model, the effort and the question, and no public figure fits our calls. So it is 0 unless measured
    (``--usage-db``: a running bot's own per-model counts), and the report shows how the saving moves with it.
    """

    table: PriceTable
    reasoning: Mapping[str, float] = field(default_factory=dict)

    def usd(self, model: str, usage: Usage) -> float:
        extra = round(self.reasoning.get(model, 0) * usage.requests)
        cost = self.table.cost(model, replace(usage, completion_tokens=usage.completion_tokens + extra))
        if not cost.known:
            raise SystemExit(f"no price for {model}: add it to a PRICES_FILE")
        return cost.usd

    def thinking(self, per_call: float) -> Pricing:
        """The same prices with every default reasoner thinking ``per_call`` tokens a call."""
        return Pricing(self.table, dict.fromkeys(REASONS_BY_DEFAULT, per_call))


def measured_reasoning(path: Path, table: PriceTable) -> dict[str, tuple[float, int]]:
    """Reasoning tokens per call and calls, per model in LADDERS, from a bot's usage database.

    Served names (``gpt-5-2025-08-07``) are matched to ladder names through the price table; models with
    fewer than MIN_MEASURED_CALLS calls are left out, since a few calls say little about an average.
    """
    if not path.is_file():
        raise SystemExit(
            f"--usage-db {path}: no such file (the bot keeps its database in DATA_DIR/agentbot.sqlite3)"
        )
    names = {m for lad in LADDERS.values() for m in lad.values()}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT model, SUM(calls), SUM(reasoning_tokens) FROM model_monthly GROUP BY model"
            ).fetchall()
    except sqlite3.DatabaseError as e:
        raise SystemExit(
            f"--usage-db {path}: cannot read reasoning counts ({e}); it needs a database written by an "
            "agentbot with schema version 3 or later (start the bot once to upgrade it)"
        ) from e
    totals: dict[str, list[int]] = {}
    for served, calls, reasoning in rows:
        price = table.lookup(served)
        for name in names:
            same = table.lookup(name)
            if price is not None and same is not None and same.source == price.source:
                t = totals.setdefault(name, [0, 0])
                t[0] += int(calls or 0)
                t[1] += int(reasoning or 0)
    return {m: (r / c, c) for m, (c, r) in totals.items() if c >= MIN_MEASURED_CALLS}


def run_cost(
    true: Tier,
    model: str,
    reader: str | None,
    prices: Pricing,
    calls: int | None = None,
    writer: str | None = None,
) -> float:
    agent, wrote, read = SHAPES[true].usage(reader=reader is not None, calls=calls, split=writer is not None)
    return (
        prices.usd(model, agent)
        + (prices.usd(writer, wrote) if writer else 0.0)
        + (prices.usd(reader, read) if reader else 0.0)
    )


def task_cost(
    true: Tier,
    routed: Tier,
    ladder: dict[Tier, str],
    prices: Pricing,
    *,
    reader: bool = True,
    research: Mapping[str, str] = RESEARCH,
    hand_down: int = HAND_DOWN,
) -> float:
    """What a task costs routed to ``routed``: each call the shipped router makes for a run of the task's
    true tier (:mod:`routing_path`), priced as it grows. The reader (simple tier) serves runs that start
    above simple (``Services.reader_for``)."""
    calls = routing_path.path(
        ladder, routed, len(SHAPES[true].observations), research=research, hand_down=hand_down
    )
    rd = ladder["simple"] if reader and routed != "simple" else None
    per_model, read = SHAPES[true].priced_calls(calls, reader=rd is not None)
    return sum(prices.usd(m, u) for m, u in per_model.items()) + (prices.usd(rd, read) if rd else 0.0)


def baseline_cost(true: Tier, ladder: dict[Tier, str], prices: Pricing) -> float:
    """Always-complex: the cheaper of no reader and reading with the complex model itself."""
    return min(
        run_cost(true, ladder["complex"], None, prices),
        run_cost(true, ladder["complex"], ladder["complex"], prices),
    )


def costs(
    rows: list[tuple[Tier, Tier]], ladder: dict[Tier, str], prices: Pricing, hand_down: int = HAND_DOWN
) -> tuple[float, float, float]:
    routed = sum(task_cost(t, r, ladder, prices, hand_down=hand_down) for t, r in rows)
    oracle = sum(task_cost(t, t, ladder, prices, hand_down=hand_down) for t, _ in rows)
    baseline = sum(baseline_cost(t, ladder, prices) for t, _ in rows)
    return routed, oracle, baseline


def mixes(
    rows: list[tuple[Tier, Tier]], ladder: dict[Tier, str], prices: Pricing, hand_down: int = HAND_DOWN
) -> list[tuple[str, float, float, float]]:
    """(mix, saving, oracle's saving, share of it kept) at the labelled mix and 15 / 10 / 5 % complex:
    each tier's per-task costs from the routed labelled set, reweighted."""
    mean: dict[Tier, tuple[float, float, float]] = {}
    for true in TIERS:
        sel = [row for row in rows if row[0] == true]
        r, o, b = costs(sel, ladder, prices, hand_down)
        mean[true] = (r / len(sel), o / len(sel), b / len(sel))
    out = []
    for label, mix in mix_weights(rows):
        r, o, b = (sum(w * mean[t][i] for w, t in zip(mix, TIERS, strict=True)) for i in range(3))
        out.append((label, 1 - r / b, 1 - o / b, of_oracle(r, o, b)))
    return out


def mix_weights(rows: Sequence[tuple[Tier, Tier]]) -> list[tuple[str, tuple[float, ...]]]:
    """The traffic mixes the target holds at: the labelled set's, then 15 / 10 / 5 % complex."""
    labelled = tuple(sum(1 for row in rows if row[0] == t) / len(rows) for t in TIERS)
    return [
        (" / ".join(f"{w:.0%}" for w in mix) + (" (labelled)" if mix is labelled else ""), mix)
        for mix in (labelled, (0.5, 0.35, 0.15), (0.6, 0.3, 0.1), (0.7, 0.25, 0.05))
    ]


@dataclass(frozen=True)
class Loss:
    """One bucket of asks (labelled tier, routed tier) and what it costs beyond the oracle."""

    true: Tier
    routed: Tier
    asks: int
    extra: float
    """USD per ask above the oracle's cost for the same ask."""
    calls: str
    """Who made the calls of such a run, in order (escalations and hand-overs show as model changes)."""
    lost: tuple[float, ...]
    """Share of the oracle's saving this bucket loses, per mix of :func:`mix_weights`."""


def losses(
    rows: list[tuple[Tier, Tier]], ladder: dict[Tier, str], prices: Pricing, hand_down: int = HAND_DOWN
) -> list[Loss]:
    """Where routing loses the oracle's saving: each (labelled, routed) bucket's extra cost, reweighted
    per mix as :func:`mixes` does, as a share of the oracle's saving at that mix. The shares add up to
    one minus the "of oracle" figure."""
    per_tier = {t: [row for row in rows if row[0] == t] for t in TIERS}
    oracle = {t: task_cost(t, t, ladder, prices, hand_down=hand_down) for t in TIERS}
    base = {t: baseline_cost(t, ladder, prices) for t in TIERS}
    weights = [mix for _, mix in mix_weights(rows)]
    saving = [sum(w * (base[t] - oracle[t]) for w, t in zip(mix, TIERS, strict=True)) for mix in weights]
    buckets: dict[tuple[Tier, Tier], list[float]] = {}
    for t, r in rows:
        extra = task_cost(t, r, ladder, prices, hand_down=hand_down) - oracle[t]
        buckets.setdefault((t, r), []).append(extra)
    out = []
    for (t, r), extras in buckets.items():
        steps = len(SHAPES[t].observations)
        calls = routing_path.path(ladder, r, steps, research=RESEARCH, hand_down=hand_down)
        runs: list[list] = []
        for c in calls:
            if runs and runs[-1][0] == c.model:
                runs[-1][1] += 1
            else:
                runs.append([c.model, 1])
        share = tuple(
            mix[TIERS.index(t)] * sum(extras) / len(per_tier[t]) / s
            for mix, s in zip(weights, saving, strict=True)
        )
        path = " > ".join(f"{m} x{n}" for m, n in runs)
        out.append(Loss(t, str(r), len(extras), sum(extras) / len(extras), path, share))  # type: ignore[arg-type]
    return sorted(out, key=lambda loss: -loss.lost[-1])


def answered_low(rows: list[tuple[Tier, Tier]], ladder: dict[Tier, str], hand_down: int = HAND_DOWN) -> int:
    """Complex asks whose answer a model below the complex tier writes, in the bench's run model."""
    steps = len(SHAPES["complex"].observations)
    return sum(
        routing_path.path(ladder, r, steps, research=RESEARCH, hand_down=hand_down)[-1].model
        != ladder["complex"]
        for t, r in rows
        if t == "complex"
    )


def of_oracle(routed: float, oracle: float, base: float) -> float:
    """The share of the oracle's saving that routing keeps."""
    return (1 - routed / base) / (1 - oracle / base)


def break_even(rows: list[tuple[Tier, Tier]], ladder: dict[Tier, str], prices: Pricing) -> int | None:
    """The fewest reasoning tokens per call (every default reasoner) at which routing keeps the target
    share of the oracle's saving on the labelled mix."""

    def share(per_call: float) -> float:
        return of_oracle(*costs(rows, ladder, prices.thinking(per_call)))

    lo, hi = 0, 20_000
    if share(0) >= TARGET_OF_ORACLE:
        return 0
    if share(hi) < TARGET_OF_ORACLE:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if share(mid) < TARGET_OF_ORACLE else (lo, mid)
    return lo


def bench_prices() -> PriceTable:
    """The library's prices; names only Groq uses (``openai/gpt-oss-120b``) at Groq's prices."""
    return PriceTable(endpoint=GROQ).merged(default_prices())


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument(
        "--usage-db",
        type=Path,
        help="a running bot's SQLite database: price each model's reasoning tokens per call as measured there",
    )
    args = ap.parse_args()
    # The router logs each escalation and hand-over it makes for the bench's stand-in runs: not news here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tasks = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    table = bench_prices()
    measured = measured_reasoning(args.usage_db, table) if args.usage_db else {}
    prices = Pricing(table, {m: per_call for m, (per_call, _) in measured.items()})
    t0 = time.perf_counter()
    keywords: list[Tier] = [heuristic_tier(t["task"])[0] for t in tasks]
    per_task_us = (time.perf_counter() - t0) / len(tasks) * 1e6
    # The shipped classifier, each split scored by weights trained without it (bench/train_router.py).
    _, vectors, labels, groups, embedding = train_router.load()
    texts = [t["task"] for t in tasks]
    p = train_router.held_out_probabilities(vectors, labels, groups, texts, train_router.shipped_scale())
    bar = LinearRouter.shipped().complex_at
    sure = LinearRouter.shipped().sure_at
    shipped: list[Tier] = [
        Sent(TIERS[i], doubtful=TIERS[i] == "complex" and q < sure)  # type: ignore[misc]
        for i, q in zip(route(p, bar), p[:, 2], strict=True)
    ]
    rows = [(t["tier"], r) for t, r in zip(tasks, shipped, strict=True)]
    # The same, with the bar also chosen without each split (the shipped bar saw every split's odds).
    nested = [
        (t["tier"], Sent(TIERS[i], doubtful=TIERS[i] == "complex" and q < sure))
        for t, i, q in zip(tasks, train_router.nested_routes(p, labels, groups), p[:, 2], strict=True)
    ]
    # The shipped weights and bar themselves on asks no training ever saw (bench/data/router_blind.jsonl).
    b_tasks, b_p = train_router.blind(embedding)
    b_rows = [
        (t["tier"], Sent(TIERS[i], doubtful=TIERS[i] == "complex" and q < sure))
        for t, i, q in zip(b_tasks, route(b_p, bar), b_p[:, 2], strict=True)
    ]

    print(
        f"Labelled tasks: {len(tasks)} ({', '.join(f'{k} {v}' for k, v in Counter(t['tier'] for t in tasks).items())})"
    )
    print(
        f"Keyword classifier: {per_task_us:.0f} µs per task. Routing below: ROUTER_CLASSIFIER=embedding "
        f"(complex at p ≥ {bar:.2f}, else the likelier of simple and medium), each split held out of its weights.\n"
    )
    print("Confusion matrix (rows: labelled tier, columns: routed tier)")
    print(f"{'':>10} " + " ".join(f"{t:>8}" for t in TIERS))
    matrix = Counter(rows)
    for true in TIERS:
        print(f"{true:>10} " + " ".join(f"{matrix[(true, r)]:>8}" for r in TIERS))

    print(f"\n{'split':<9} {'tasks':>5} {'accuracy':>9} {'complex under-routed':>21} {'saving':>7}")
    ladder = LADDERS["shipped tiers.toml"]
    splits = [*dict.fromkeys(t.get("split", "dev") for t in tasks), "all"]
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

    print("\nClassifiers compared (saving with the shipped ladder, reader and research tiers)")
    print(f"{'classifier':<44} {'all: accuracy':>13} {'complex too low':>16} {'saving':>7}   {UNSEEN}: same")
    for name, routed in (
        ("embedding + words (shipped, held out)", shipped),
        ("keywords only (ROUTER_CLASSIFIER=heuristic)", keywords),
    ):
        sel = [(t["tier"], r) for t, r in zip(tasks, routed, strict=True)]
        blind = [row for row, t in zip(sel, tasks, strict=True) if t.get("split") == UNSEEN]
        cells = []
        for part in (sel, blind):
            acc = sum(a == b for a, b in part) / len(part)
            cx = [b for a, b in part if a == "complex"]
            r, _, base = costs(part, ladder, prices)
            cells.append(
                f"{acc:>8.1%} {sum(b != 'complex' for b in cx):>8}/{len(cx):<3} {1 - r / base:>7.1%}"
            )
        print(f"{name:<44} {cells[0]}      {cells[1]}")
        print(
            f"{'':<4}of its complex asks, answered below the complex tier after escalating: {answered_low(sel, ladder)}"
        )

    if args.usage_db:
        print(
            f"\nReasoning tokens per call measured in {args.usage_db} (models with ≥ {MIN_MEASURED_CALLS} calls):"
        )
        for model, (per_call, calls) in sorted(measured.items()):
            print(f"  {model:<24} {per_call:>8.0f} per call over {calls:,} calls")
        if not measured:
            print("  none yet: every figure below prices reasoning at 0")
    else:
        print(
            "\nReasoning tokens: priced at 0 per call (not measurable offline; see --usage-db and the table below)."
        )

    print("\nTypical run per tier (tokens: prompt / of which cached / completion; reader: in / out)")
    for t, shape in SHAPES.items():
        plain, _, _ = shape.usage(reader=False)
        agent, _, read = shape.usage(reader=True)
        print(
            f"  {t:<8} {plain.requests} calls: {plain.prompt_tokens:>7} / {plain.cached_tokens:>7} / "
            f"{plain.completion_tokens:>5}   with the reader: {agent.prompt_tokens:>7} / "
            f"{agent.cached_tokens:>7} / {agent.completion_tokens:>5} + reader {read.prompt_tokens} / "
            f"{read.completion_tokens}"
        )

    print("\nWhat each part saves, shipped ladder (USD for the labelled set)")
    plain_base = sum(run_cost(t, ladder["complex"], None, prices) for t, _ in rows)
    read_base = sum(run_cost(t, ladder["complex"], ladder["complex"], prices) for t, _ in rows)
    no_reader = sum(task_cost(t, r, ladder, prices, reader=False, research={}) for t, r in rows)
    with_reader = sum(task_cost(t, r, ladder, prices, research={}) for t, r in rows)
    shipped = sum(task_cost(t, r, ladder, prices) for t, r in rows)
    research = ", ".join(f"{k}={v}" for k, v in RESEARCH.items()) or "off"
    for label, value in (
        ("always-complex (baseline)", plain_base),
        ("always-complex + reader on the complex model", read_base),
        ("routed, no reader, no research tier", no_reader),
        ("routed + reader on the simple tier", with_reader),
        (f"routed + reader + research tiers {research} (shipped)", shipped),
    ):
        print(f"  {label:<58} {value:>8.4f}  {1 - value / min(plain_base, read_base):>6.1%}")
    # The wording ("from each tier's typical token counts") would price a routed task with its
    # *routed* tier's typical run, so a look-up sent to the complex tier would cost a 9-call run. That
    # flatters routing; it is printed for reference only and is not the figure reported above.
    literal = sum(
        run_cost(r, ladder[r], ladder["simple"] if r != "simple" else None, prices) for _, r in rows
    )
    literal_base = len(rows) * run_cost("complex", ladder["complex"], None, prices)
    print(
        f"  (for reference: pricing each task by its routed tier's typical run: {1 - literal / literal_base:.1%})"
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
    print(f"{'mix simple/medium/complex':<27} {'saving':>7} {'oracle':>7} {'of oracle':>10}")
    shares = mixes(rows, ladder, prices)
    worst = min(share for _, _, _, share in shares)
    for label, saving, oracle, share in shares:
        print(f"{label:<27} {saving:>7.1%} {oracle:>7.1%} {share:>10.1%}")

    # Where the rest goes: which asks, routed where, cost more than the oracle's choice, and how much of
    # its saving that is at each mix (a bucket's extra cost per ask times its share of the traffic).
    print(
        "\nWhere the oracle's saving is lost, shipped ladder: per labelled x routed tier, the extra cost per "
        "ask over the oracle's tier and the share of the oracle's saving lost at each mix"
    )
    print(
        f"{'labelled':>8} {'routed':>8} {'asks':>5} {'extra/ask':>10}  {'calls (model x calls)':<52} "
        + " ".join(f"{lab.split(' (')[0]:>15}" for lab, *_ in shares)
    )
    buckets = losses(rows, ladder, prices)
    for b in buckets:
        if b.true != b.routed:
            cells = " ".join(f"{x:>15.1%}" for x in b.lost)
            print(f"{b.true:>8} {b.routed:>8} {b.asks:>5} {b.extra:>10.5f}  {b.calls:<52} {cells}")
    totals = [sum(b.lost[i] for b in buckets) for i in range(len(shares))]
    print(f"{'all':>8} {'':>8} {len(rows):>5} {'':>10}  {'':<52} " + " ".join(f"{x:>15.1%}" for x in totals))
    big = buckets[0]
    per_ask = [x / big.asks for x in big.lost]
    fewer = max(0, *(-(-(tot - (1 - TARGET_OF_ORACLE)) // p) for tot, p in zip(totals, per_ask, strict=True)))
    print(
        f"{TARGET_OF_ORACLE:.0%} at every mix, the rest unchanged, needs {int(fewer)} fewer of the "
        f"{big.asks} {big.true} asks routed {big.routed}, with no more complex asks routed too low"
    )
    # The most any complex-vs-rest classifier could keep under the shipped rule (the likelier of simple and
    # medium below the bar): what is left between it and the target is all the room there is for asks
    # sent up by mistake.
    perfect = [
        (t["tier"], "complex" if t["tier"] == "complex" else TIERS[int(q[1] > q[0])])
        for t, q in zip(tasks, p, strict=True)
    ]
    ceiling = min(share for *_, share in mixes(perfect, ladder, prices))  # type: ignore[arg-type]
    print(
        f"Every complex ask routed complex and no other (a perfect complex detector, simple or medium as the classifier says): "
        f"{ceiling:.1%} at worst; each {big.true} ask routed {big.routed} costs {big.lost[-1] / big.asks:.2%} "
        f"of the oracle's saving at the last mix"
    )

    # A hand-down lets the researcher answer when the classifier sent the ask up doubtful (complex odds
    # below sure_at) and the research took at most N calls. Here every run of a tier takes its fixed
    # number of calls (medium 4, complex 9), so from N = 4 it hands down exactly the doubtful asks that
    # were not complex: the figure assumes call counts separate the tiers. Nothing offline measures
    # how often a real complex ask is researched that quickly; each doubtful one that is gets the
    # researcher's (medium) answer. That count is the risk, printed below; the default is off.
    doubt = Counter(t for t, r in rows if getattr(r, "doubtful", False))
    n_cx = sum(t == "complex" for t, _ in rows)
    print(
        f"\nHand-down (ROUTER_HAND_DOWN_CALLS, default {HAND_DOWN}): share of the oracle's saving per mix, "
        f"and complex asks answered below complex in this model of fixed call counts"
    )
    print(
        f"{'N calls':>8} " + " ".join(f"{lab.split(' (')[0]:>15}" for lab, *_ in shares) + f" {'too low':>9}"
    )
    for n in (0, 2, 4, 6):
        cells = " ".join(f"{share:>15.1%}" for *_, share in mixes(rows, ladder, prices, n))
        print(f"{n:>8} {cells} {answered_low(rows, ladder, n):>5}/{n_cx}")
    print(
        f"Sent up doubtful (complex odds < {sure:.2f}, held out): {doubt['medium']} of {sum(t == 'medium' for t, _ in rows)} "
        f"medium and {doubt['simple']} simple asks, and {doubt['complex']} of {n_cx} complex asks "
        f"({doubt['complex'] / n_cx:.0%}): with a hand-down, those complex asks get the medium model's "
        "answer whenever their research is that short"
    )

    # Reasoning models bill hidden thinking as output on every call. Always-complex makes every call on
    # gpt-5; routing moves most of them to cheaper models or to ones that do not think, so every token
    # of thinking per call widens the saving. How much, and what the target needs:
    print("\nReasoning sensitivity, shipped ladder: every default reasoner thinks N tokens per call")
    print(f"{'N per call':>10} {'saving':>7} {'oracle':>7} {'of oracle':>10}")
    for per_call in (0, 100, 200, 300, 500, 1000, 2000):
        r, o, b = costs(rows, ladder, prices.thinking(per_call))
        print(f"{per_call:>10} {1 - r / b:>7.1%} {1 - o / b:>7.1%} {of_oracle(r, o, b):>10.1%}")
    needed = break_even(rows, ladder, prices)
    print(
        f"{TARGET_OF_ORACLE:.0%} of the oracle's saving (labelled mix) needs {needed} or more reasoning "
        "tokens per call on average"
        if needed is not None
        else f"No amount of reasoning keeps {TARGET_OF_ORACLE:.0%} of the oracle's saving"
    )

    acc, under, saving = figures["all"]
    _, under2, saving2 = figures[UNSEEN]
    thinking = (
        "reasoning as measured: "
        + ", ".join(f"{m} {v:.0f}/call" for m, v in sorted(prices.reasoning.items()))
        if prices.reasoning
        else "reasoning priced at 0"
    )
    print(
        f"\nAll tasks ({thinking}): saving {saving:.1%}, at worst {worst:.1%} of the oracle's saving over the "
        f"four mixes (target ≥ {TARGET_OF_ORACLE:.0%}: {'met' if worst >= TARGET_OF_ORACLE else 'NOT met'}), "
        f"complex under-routed {under:.1%} (target ≤ {TARGET_UNDER:.0%}: {'met' if under <= TARGET_UNDER else 'NOT met'})"
    )
    print(
        f"Unseen split {UNSEEN}: saving {saving2:.1%}, complex under-routed {under2:.1%} "
        f"({'met' if under2 <= TARGET_UNDER else 'NOT met'})"
    )
    n_worst = min(share for *_, share in mixes(nested, ladder, prices))
    n_under = sum(t == "complex" and r != "complex" for t, r in nested)
    print(
        f"Bar chosen without each split too (nested): at worst {n_worst:.1%} of the oracle's saving, "
        f"complex under-routed {n_under}/{n_cx} ({n_under / n_cx:.1%})"
    )
    b_matrix = Counter((t, str(r)) for t, r in b_rows)
    b_cx = sum(t == "complex" for t, _ in b_rows)
    b_under = sum(b_matrix[("complex", r)] for r in ("simple", "medium"))
    b_shares = " / ".join(f"{share:.1%}" for *_, share in mixes(b_rows, ladder, prices))
    print(
        f"Blind asks ({len(b_rows)}, never trained on, the shipped weights and bar): complex under-routed "
        f"{b_under}/{b_cx} ({'met' if b_under <= TARGET_UNDER * b_cx else 'NOT met'}), sent to complex "
        f"{b_matrix[('medium', 'complex')]} medium and {b_matrix[('simple', 'complex')]} simple, "
        f"{b_shares} of the oracle's saving at the four mixes"
    )
    worst4 = min(share for *_, share in mixes(rows, ladder, prices, 4))
    print(
        f"With ROUTER_HAND_DOWN_CALLS=4: at worst {worst4:.1%} of the oracle's saving "
        f"({'met' if worst4 >= TARGET_OF_ORACLE else 'NOT met'}) if call counts separate the tiers as modelled; "
        f"{doubt['complex']} of {n_cx} complex asks ({doubt['complex'] / n_cx:.0%}) then rely on their research "
        "taking more than 4 calls to get the complex model's answer"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
