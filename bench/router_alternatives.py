"""Other learners on the router's MiniLM embeddings, measured exactly as the shipped one (issue 19.5).

    .venv/bin/python bench/router_alternatives.py            # ~2 min alone on 2 cores
    .venv/bin/python bench/router_alternatives.py --inner    # also choose k by inner CV (~6 min more)
    .venv/bin/python bench/router_alternatives.py --limits   # only the shipped learner's limits (~1 min)

Why this exists: routing keeps 86-91 % of the oracle's saving where the issue asks for 95 %, and the
loss is medium asks sent to the complex tier (``bench/arbitrage.py``). Each row here replaces the
shipped softmax regression by another learner on the same 384-d vectors the product already computes,
and is scored the way ``bench/arbitrage.py`` scores the shipped one: every split (a writer) by a model
trained without it, complex at the highest bar whose held-out share of complex asks routed too low is
at most 3 %, the keywords' simple or medium below it, priced by the bench's own run model. The
"nested" column chooses the bar without each split as well; only it is a fair figure for a learner
whose settings were picked after seeing this table. Bars come from a 401-point quantile grid of each
learner's score (not every score is a probability), so the shipped row differs slightly from
``bench/arbitrage.py``'s 0.01 grid (86.0 % instead of 85.5 % nested).

Nothing here ships: none reached both bounds (see README, "Multi-model routing").

``--limits`` asks why, of the shipped learner itself: trained on fewer of the other writers' asks
(does more data of this kind help?), scored by random folds instead of writers (is it the writers'
styles?), and fitted on the very asks it is scored on (what the features can separate at all, with
the shipped penalty). Each row uses the same bar rule and prices as the table above.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import arbitrage  # noqa: E402
import train_router  # noqa: E402

from agent.models.tiers import TIERS, Tier  # noqa: E402

Fit = Callable[[np.ndarray], np.ndarray]
"""Given a mask of the asks to train on, the complex score of every ask (higher = more complex)."""


def softmax(
    x: np.ndarray,
    y: np.ndarray,
    *,
    smooth: float = 0.0,
    steps: int = 3000,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """The shipped learner (train_router.train), optionally with label smoothing or weighted asks;
    returns (w | b)."""
    target = np.eye(3)[y] * (1 - smooth) + smooth / 3
    weight = np.ones(len(x)) if weight is None else weight
    w, b = np.zeros((x.shape[1], 3)), np.zeros(3)
    for _ in range(steps):
        p = _softmax_rows(x @ w + b)
        g = (p - target) * weight[:, None] / weight.sum()
        w -= 0.5 * (x.T @ g + 1e-2 * w)
        b -= 0.5 * g.sum(axis=0)
    return np.vstack([w, b])


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _p_complex(wb: np.ndarray, x: np.ndarray) -> np.ndarray:
    return _softmax_rows(x @ wb[:-1] + wb[-1])[:, 2]


def ordinal(x: np.ndarray, y: np.ndarray, steps: int = 3000) -> tuple[np.ndarray, float]:
    """Cumulative logit over simple < medium < complex: one direction, two cut points."""
    w, cuts = np.zeros(x.shape[1]), np.array([-0.5, 0.5])
    for _ in range(steps):
        s, gw, gc = x @ w, np.zeros_like(w), np.zeros(2)
        for k in (0, 1):
            d = (1 / (1 + np.exp(-(s - cuts[k]))) - (y > k)) / len(x)
            gw += x.T @ d
            gc[k] = -d.sum()
        w -= 0.5 * (gw + 1e-2 * w)
        cuts -= 0.5 * gc
    return w, float(cuts[1])


def kmeans(x: np.ndarray, k: int, rounds: int = 50) -> np.ndarray:
    """Spherical k-means (cosine), seeded deterministically."""
    c = x[np.random.default_rng(0).choice(len(x), k, replace=False)]
    for _ in range(rounds):
        a = np.argmax(x @ c.T, axis=1)
        c = np.stack([x[a == j].mean(axis=0) if (a == j).any() else c[j] for j in range(k)])
        c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c


def writer_directions(x: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """Projection removing the k directions along which the training writers' asks differ most once
    each tier's mean is taken out: what a writer's style adds, not what the ask needs."""
    r = x.copy()
    for t in range(3):
        r[y == t] -= x[y == t].mean(axis=0)
    means = np.stack([r[groups == g].mean(axis=0) for g in np.unique(groups)])
    _, _, vt = np.linalg.svd(means, full_matrices=False)
    return np.eye(x.shape[1]) - vt[:k].T @ vt[:k]


def sent_up_cost(true: Tier, prices: arbitrage.Pricing) -> float:
    """What one ask of tier ``true`` costs above the oracle when the router sends it to complex."""
    ladder = arbitrage.LADDERS["shipped tiers.toml"]
    up = arbitrage.task_cost(true, "complex", ladder, prices)
    return up - arbitrage.task_cost(true, true, ladder, prices)


def learners(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    below: np.ndarray,
    prices: arbitrage.Pricing,
    *,
    inner: bool = False,
) -> dict[str, Fit]:
    def lda(tr: np.ndarray, shrink: float = 0.8) -> np.ndarray:
        mus = np.stack([x[tr][y[tr] == t].mean(axis=0) for t in range(3)])
        r = x[tr] - mus[y[tr]]
        cov = r.T @ r / tr.sum()
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
        w = np.linalg.solve(cov, mus.T)
        return _softmax_rows(x @ w - 0.5 * np.sum(mus.T * w, axis=0))[:, 2]

    def centroids(tr: np.ndarray, per_tier: int) -> np.ndarray:
        near = []
        for t in range(3):
            pts = x[tr][y[tr] == t]
            c = pts.mean(axis=0, keepdims=True) if per_tier == 1 else kmeans(pts, per_tier)
            c = c / np.linalg.norm(c, axis=1, keepdims=True)
            near.append((x @ c.T).max(axis=1))
        return near[2] - np.maximum(near[0], near[1])

    def projected(tr: np.ndarray, k: int, steps: int = 3000) -> np.ndarray:
        p = writer_directions(x[tr], y[tr], groups[tr], k) if k else np.eye(x.shape[1])
        return _p_complex(softmax(x[tr] @ p, y[tr], steps=steps), x @ p)

    def k_by_inner_cv(tr: np.ndarray) -> np.ndarray:
        """k chosen without the held-out split: the k (0 = none) whose inner held-out scores, over the
        other splits only, send the fewest non-complex asks up at the 3 % bar. Inner fits take 1500
        steps to keep this to minutes."""

        def sent_up(k: int) -> int:
            s = held_out(lambda m: projected(m, k, steps=1500), groups, tr)
            return int(((y[tr] < 2) & (s[tr] >= bar(s[tr], y[tr], below[tr]))).sum())

        return projected(tr, min((0, 3, 6, 9), key=sent_up))

    def bagged(tr: np.ndarray) -> np.ndarray:
        runs = [tr & (groups != g) for g in np.unique(groups[tr])]
        return np.mean([_p_complex(softmax(x[m], y[m], steps=1500), x) for m in runs], axis=0)

    def low_tail(tr: np.ndarray, rounds: int = 3) -> np.ndarray:
        """A partial-AUC surrogate: the tenth of complex asks the last fit scored lowest weigh 4x."""
        weight = np.ones(tr.sum())
        for _ in range(rounds):
            wb = softmax(x[tr], y[tr], steps=1500, weight=weight)
            pc, cx = _p_complex(wb, x[tr]), y[tr] == 2
            weight = np.where(cx & (pc <= np.quantile(pc[cx], 0.1)), 4.0, 1.0)
        return _p_complex(wb, x)

    def ordinal_fit(tr: np.ndarray) -> np.ndarray:
        w, cut = ordinal(x[tr], y[tr])
        return x @ w - cut

    def expected_cost(tr: np.ndarray) -> np.ndarray:
        wb = softmax(x[tr], y[tr])
        p = _softmax_rows(x @ wb[:-1] + wb[-1])
        return p[:, 2] / (p[:, 0] * sent_up_cost("simple", prices) + p[:, 1] * sent_up_cost("medium", prices))

    return {
        "softmax regression (shipped)": lambda tr: _p_complex(softmax(x[tr], y[tr]), x),
        "softmax, complex odds over cost of going up": expected_cost,
        "softmax, label smoothing 0.1": lambda tr: _p_complex(softmax(x[tr], y[tr], smooth=0.1), x),
        "softmax, label smoothing 0.3": lambda tr: _p_complex(softmax(x[tr], y[tr], smooth=0.3), x),
        "ordinal regression (cumulative logit)": ordinal_fit,
        "nearest tier centroid (cosine margin)": lambda tr: centroids(tr, 1),
        "k-means prototypes, 8 per tier": lambda tr: centroids(tr, 8),
        "shrinkage LDA (0.8 to the identity)": lda,
        "softmax bagged over training writers": bagged,
        "softmax, low-scoring complex asks weighted": low_tail,
        "writer directions removed, k=3": lambda tr: projected(tr, 3),
        "writer directions removed, k=6": lambda tr: projected(tr, 6),
        "writer directions removed, k=9": lambda tr: projected(tr, 9),
        **({"writer directions removed, k by inner CV": k_by_inner_cv} if inner else {}),
    }


def held_out(fit: Fit, groups: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
    """Each ask's score from a fit without its split (only over ``within`` if given)."""
    within = np.ones(len(groups), bool) if within is None else within
    out = np.zeros(len(groups))
    for g in np.unique(groups[within]):
        test = groups == g
        out[test] = fit(within & ~test)[test]
    return out


def bar(score: np.ndarray, labels: np.ndarray, below: np.ndarray) -> float:
    """The highest bar with at most 3 % of complex asks under it (train_router.choose_threshold's rule)."""
    best = -np.inf
    for th in np.unique(np.quantile(score, np.linspace(0, 1, 401))):
        pred = np.where(score >= th, 2, below)
        if (pred[labels == 2] < 2).mean() <= train_router.MAX_UNDER:
            best = th
    return best


def worst_share(labels: np.ndarray, pred: np.ndarray, prices: arbitrage.Pricing) -> float:
    rows = [(TIERS[t], TIERS[r]) for t, r in zip(labels, pred, strict=True)]
    return min(s for *_, s in arbitrage.mixes(rows, arbitrage.LADDERS["shipped tiers.toml"], prices))


def limits(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """The shipped learner's complex odds under other splits of the same asks (``--limits``), each row a
    score for every ask. Fits take 1500 steps (the shipped 3000 move no row by more than a few asks)."""

    def fit(mask: np.ndarray) -> np.ndarray:
        return _p_complex(softmax(x[mask], y[mask], steps=1500), x)

    rows: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for share in (0.5, 0.7, 0.85):
        for draw in range(3):

            def fewer(mask: np.ndarray, share: float = share) -> np.ndarray:
                keep = np.zeros(len(mask), bool)
                idx = np.flatnonzero(mask)
                keep[rng.choice(idx, int(len(idx) * share), replace=False)] = True
                return fit(keep)

            rows[f"by writer, {share:.0%} of the other asks, draw {draw + 1}"] = held_out(fewer, groups)
    rows["by writer, all the other asks (shipped)"] = held_out(fit, groups)
    rows["10 random folds (writers mixed)"] = held_out(fit, np.random.default_rng(1).integers(0, 10, len(y)))
    rows["fitted on the asks it scores (no holding out)"] = fit(np.ones(len(y), bool))
    return rows


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tasks, vectors, labels, groups, _ = train_router.load()
    x = np.asarray(vectors, dtype=np.float64)
    below = np.minimum(train_router.keyword_tiers(tasks), 1)
    prices = arbitrage.Pricing(arbitrage.bench_prices())
    if "--limits" in sys.argv:
        print(
            f"{'shipped softmax, scored':<52} {'medium up':>9} {'simple up':>9} {'too low':>8} {'of oracle, worst':>16}"
        )
        for name, score in limits(x, labels, groups).items():
            pred = np.where(score >= bar(score, labels, below), 2, below)
            cx = labels == 2
            print(
                f"{name:<52} {((labels == 1) & (pred == 2)).sum():>9} {((labels == 0) & (pred == 2)).sum():>9} "
                f"{(pred[cx] < 2).sum():>4}/{cx.sum()} {worst_share(labels, pred, prices):>16.1%}",
                flush=True,
            )
        return 0
    fits = learners(x, labels, groups, below, prices, inner="--inner" in sys.argv)
    print(
        f"{'learner':<44} {'medium up':>9} {'simple up':>9} {'too low':>8} "
        f"{'of oracle, worst mix':>20} {'nested: worst':>13} {'too low':>8}"
    )
    for name, fit in fits.items():
        score = held_out(fit, groups)
        pred = np.where(score >= bar(score, labels, below), 2, below)
        nested = np.zeros(len(labels), int)
        for g in np.unique(groups):
            test = groups == g
            cut = bar(score[~test], labels[~test], below[~test])
            nested[test] = np.where(score[test] >= cut, 2, below[test])
        cx = labels == 2
        print(
            f"{name:<44} {((labels == 1) & (pred == 2)).sum():>9} {((labels == 0) & (pred == 2)).sum():>9} "
            f"{(pred[cx] < 2).sum():>4}/{cx.sum()} {worst_share(labels, pred, prices):>20.1%} "
            f"{worst_share(labels, nested, prices):>13.1%} {(nested[cx] < 2).sum():>4}/{cx.sum()}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
