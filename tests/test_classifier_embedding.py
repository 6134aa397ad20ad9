"""The default router (ROUTER_CLASSIFIER=embedding): MiniLM embedding + shipped softmax weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.config import ConfigError
from agent.embeddings.minilm import MiniLMEmbedding
from agent.models.embedding_classifier import EmbeddingClassifier, LinearRouter, route
from agent.models.tiers import TIERS
from bench.arbitrage import LADDERS, Pricing, bench_prices, mixes
from bench.train_router import (
    BLIND,
    CACHE,
    DATA,
    blind,
    cache_key,
    data_sha256,
    embedded,
    held_out_probabilities,
    load,
    nested_routes,
    read_tasks,
    shipped_scale,
    weights_json,
)

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "bench" / "data" / "arbitrage_tasks.jsonl"


@pytest.fixture(scope="module")
def classifier() -> EmbeddingClassifier:
    return EmbeddingClassifier(MiniLMEmbedding())


def test_the_shipped_weights_were_trained_on_the_current_labelled_set() -> None:
    model = LinearRouter.shipped()
    assert model.data_sha256 == data_sha256(TASKS), "labelled set changed: run bench/train_router.py --write"
    assert model.embedding_id == MiniLMEmbedding().id and model.lexicon is not None
    # The embedding's 384 dimensions, then one per word of the lexicon.
    assert model.weights.shape == (384 + len(model.lexicon.vocabulary), 3)
    assert 0 < model.complex_at < 0.5
    # What it ships with round-trips: the JSON read back routes as the weights trained.
    again = LinearRouter.from_json(weights_json(model))
    texts = ["thx!", "compare zendesk and freshdesk on price, with sources"]
    vectors = np.random.default_rng(0).normal(size=(2, 384))
    assert np.allclose(again.probabilities(vectors, texts), model.probabilities(vectors, texts), atol=1e-5)
    with pytest.raises(ValueError, match="each ask's text"):
        model.probabilities(vectors)


# Asks written for this test (none is in the labelled set): the kinds a server sends every day.
@pytest.mark.parametrize(
    ("task", "tier"),
    [
        ("how many ounces are in a pound", "simple"),
        ("thx, that worked!", "simple"),
        (
            "my docker container exits with code 137 right after starting, what does that mean and how do i fix it",
            "medium",
        ),
        ("explain how TLS handshakes work", "medium"),
        (
            "we need a new ticketing tool for a 40-person support team: go through zendesk, freshdesk, help scout "
            "and zammad on price, automation, integrations and self-hosting, with sources",
            "complex",
        ),
        ("what's the state of research on long covid treatments and which trials look promising", "complex"),
    ],
)
async def test_routes_everyday_asks(classifier: EmbeddingClassifier, task: str, tier: str) -> None:
    decision = await classifier.classify(task)
    assert decision.tier == tier, decision.reasons
    assert decision.source == "embedding" and decision.reasons[0].startswith("complex ")


async def test_without_its_model_the_keywords_route_and_say_so(tmp_path: Path) -> None:
    broken = EmbeddingClassifier(MiniLMEmbedding(model_path=tmp_path / "missing.onnx"))
    broken.load()
    assert broken.unavailable and "missing.onnx" in broken.unavailable
    for _ in range(2):  # said once at load, not retried per ask
        decision = await broken.classify("Compare Rust and Go for CLI tools, with sources")
        assert (decision.tier, decision.source) == ("complex", "heuristic")
        assert decision.reasons[-1] == "embedding failed"


def test_weights_for_another_embedding_are_refused() -> None:
    other = LinearRouter(np.zeros((384, 3), np.float32), np.zeros(3, np.float32), 0.3, "some-other-model")
    with pytest.raises(
        ConfigError, match=r"trained on some-other-model.*retrain with bench/train_router\.py"
    ):
        EmbeddingClassifier(MiniLMEmbedding(), other)
    with pytest.raises(ConfigError, match="not a router classifier"):
        LinearRouter.from_json(json.dumps({"weights": [[1, 2]], "bias": [0, 0, 0], "tiers": list(TIERS)}))


def test_held_out_by_writer_few_complex_asks_go_too_low() -> None:
    """Each split scored by weights trained without it, as bench/train_router.py chose the bar."""
    tasks, vectors, labels, groups, _ = load()
    p = held_out_probabilities(vectors, labels, groups, [t["task"] for t in tasks], shipped_scale())
    pred = route(p, LinearRouter.shipped().complex_at)
    assert (pred[labels == 2] < 2).mean() <= 0.03  # the bound
    # Not "everything is complex": most simple asks stay on the cheapest tier.
    assert (pred[labels == 0] == 0).mean() >= 0.6 and (pred == labels).mean() >= 0.6
    # What that saves, priced as bench/arbitrage.py does: the keywords below the bar and a 10x stronger
    # penalty sent 43 medium and 46 simple asks up a tier and kept 91.3 % of the oracle's saving at 5 %
    # complex traffic (the worst mix); now 34 and 21 (92.9 %). The target is 95 %.
    rows = [(TIERS[t], TIERS[r]) for t, r in zip(labels, pred, strict=True)]
    shares = [share for *_, share in mixes(rows, LADDERS["shipped tiers.toml"], Pricing(bench_prices()))]
    assert min(shares) >= 0.925, shares
    # The bar too chosen without each split (nested): the bound still holds, so it was not fitted to them.
    nested = nested_routes(p, labels, groups)
    assert (nested[labels == 2] < 2).mean() <= 0.03


def test_the_shipped_weights_and_bar_on_asks_no_training_saw() -> None:
    """bench/data/router_blind.jsonl: written before anything scored it, never trained on (the issue's
    "asks the classifier never trained on", for the shipped weights themselves)."""
    labelled = {
        json.loads(line)["task"].casefold() for line in TASKS.read_text().splitlines() if line.strip()
    }
    tasks, p = blind(MiniLMEmbedding())
    assert not labelled & {t["task"].casefold() for t in tasks}, "a blind ask joined the training data"
    labels = np.array([TIERS.index(t["tier"]) for t in tasks])
    pred = route(p, LinearRouter.shipped().complex_at)
    assert (pred[labels == 2] < 2).mean() <= 0.03  # the bound: none of the 20
    assert (pred[labels == 0] == 0).mean() >= 0.6 and (pred == labels).mean() >= 0.7


def test_the_cached_vectors_are_the_embeddings_of_the_current_asks(classifier: EmbeddingClassifier) -> None:
    """The held-out tables above read bench/data/router_embeddings.npz instead of embedding 600 asks: it
    must be made from the current data files by the shipped embedding, and hold what it embeds today."""
    embedding = classifier.embedding
    for path in (DATA, BLIND):
        assert str(np.load(CACHE)[f"{path.stem}_key"]) == cache_key(path, embedding), (
            f"{path.name} changed: run bench/train_router.py --write"
        )
        cached, tasks = embedded(path, embedding), read_tasks(path)
        assert cached.shape == (len(tasks), embedding.dim)
        picks = [
            0,
            len(tasks) // 2,
            len(tasks) - 1,
        ]  # a few, embedded now: the cache is not stale or shuffled
        now = np.asarray(embedding.embed_documents([tasks[i]["task"] for i in picks]))
        assert np.abs(cached[picks] - now).max() < 2e-3
