"""Routing by meaning: whether an ask is complex comes from its MiniLM sentence embedding and its words.

Why not only keywords: the heuristic in :mod:`agent.models.classifier` scores 95 % on the 240 asks it
was tuned on but 66 % on 300 asks written afterwards by five helpers who never saw it, and routed 21
of those 100 new complex asks too low (``bench/arbitrage.py``; the shipped rule: 2 of 100). A softmax regression over the embedding,
trained on the labelled set, tells complex asks apart better on a writer it never saw; calling an ask
complex whenever that probability reaches ``complex_at`` (chosen held out, ``bench/train_router.py``)
keeps complex asks from going too low, at the price of sending some medium asks up. The research tiers
make that cheap: a complex run researches on the medium tier's model, so an over-routed medium ask pays
only for the stronger model's write-up. Below the bar the same probabilities choose between simple and
medium (the keywords sent 46 of 182 simple asks to medium; this, 21). Beside the embedding, the ask's
words and word pairs (:class:`Lexicon`) separate medium from complex better than either alone: at the
same bound on complex asks too low, 41 non-complex asks go up instead of 97, held out by writer.

The weights ship in ``agent/data/router_classifier.json``, written by ``bench/train_router.py --write``
from ``bench/data/arbitrage_tasks.jsonl``; the file records the data's sha256 and the embedding's id,
so a test fails when the labelled set changes without retraining, and another embedding is refused.
This module only routes: training lives in ``bench/train_router.py``, which ships nowhere.
The embedding runs in a worker thread (3 ms of CPU per ask, the words and softmax 35 µs of it); if it
fails, the keywords decide and say so.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import structlog

from agent.config import ConfigError
from agent.embeddings.base import Embedding
from agent.models.classifier import Classification, HeuristicClassifier
from agent.models.tiers import TIERS, Tier

log = structlog.get_logger("agent.router")

WEIGHTS_FILE = "router_classifier.json"
SURE_AT = 0.45
"""Complex odds from which an ask routed complex is never handed down (``ROUTER_HAND_DOWN_CALLS``).
Held out by writer (``bench/arbitrage.py``, embedding and words): at 0.45, 18 of the 34 medium asks
routed complex fall below it, and 158 of the 173 complex asks routed complex are above it and keep
the complex writer whatever their research. Chosen with the embedding alone, where 0.42 was the
lowest bar keeping 95 % of the oracle's saving at every mix with ``ROUTER_HAND_DOWN_CALLS=4``; with
the words it keeps 96.3 % at worst there."""


def route(p: np.ndarray, complex_at: float) -> np.ndarray:
    """The shipped rule for many asks at once (tier indices): complex at ``p[:, 2] >= complex_at``,
    else the likelier of simple and medium. The bench and training use it as is.

    Below the bar the classifier, not the keywords, picks simple or medium: held out by writer, the
    keywords sent 46 of 182 simple asks to medium (and 3 of 180 medium asks to simple), the classifier
    18 and 19, worth 0.9 points of the oracle's saving at 5 % complex traffic (``bench/arbitrage.py``)."""
    out = np.where(p[:, 0] >= p[:, 1], TIERS.index("simple"), TIERS.index("medium"))
    out[p[:, 2] >= complex_at] = TIERS.index("complex")
    return out


_WORD = re.compile(r"[a-zà-ÿ0-9']+")


def ask_words(text: str) -> list[str]:
    """An ask's lower-cased words and word pairs ("step_by"): the lexical features' vocabulary."""
    w = _WORD.findall(text.lower())
    return w + [f"{a}_{b}" for a, b in itertools.pairwise(w)]


@dataclass(frozen=True)
class Lexicon:
    """Words and word pairs beside the embedding: tf-idf, each ask's vector of unit length, times ``scale``.

    Why: MiniLM's mean-pooled vector blurs what separates a medium ask from a complex one (a scope,
    "with sources", "step by step", "each"); with these beside it, held out by writer, 41 instead of 97
    non-complex asks go up at the same 3 % of complex asks too low (``bench/train_router.py``). The
    words come from the labelled asks (seen in at least two), so an ask's cost is a dict look-up per word.
    """

    vocabulary: Mapping[str, int]
    idf: np.ndarray
    scale: float

    @classmethod
    def fit(cls, texts: Sequence[str], scale: float, min_asks: int = 2) -> Lexicon:
        seen: dict[str, int] = {}
        for t in texts:
            for w in set(ask_words(t)):
                seen[w] = seen.get(w, 0) + 1
        kept = sorted(w for w, n in seen.items() if n >= min_asks)
        idf = np.array([np.log((1 + len(texts)) / (1 + seen[w])) + 1 for w in kept], dtype=np.float64)
        return cls({w: i for i, w in enumerate(kept)}, idf, scale)

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float64)
        for row, text in enumerate(texts):
            for w in ask_words(text):
                i = self.vocabulary.get(w)
                if i is not None:
                    out[row, i] += 1
        out = np.log1p(out) * self.idf
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norm, 1e-12) * self.scale


@dataclass(frozen=True)
class LinearRouter:
    """``softmax(features @ weights + bias)`` over (simple, medium, complex); complex at ``complex_at`` or
    more. The features are the ask's embedding, then its :class:`Lexicon` vector when there is one."""

    weights: np.ndarray
    bias: np.ndarray
    complex_at: float
    embedding_id: str
    data_sha256: str = ""
    sure_at: float = SURE_AT
    lexicon: Lexicon | None = None

    def features(self, vectors: np.ndarray, texts: Sequence[str] = ()) -> np.ndarray:
        vectors = np.atleast_2d(vectors)
        if self.lexicon is None:
            return vectors
        if len(texts) != len(vectors):
            raise ValueError("these weights need each ask's text beside its embedding")
        return np.hstack([vectors, self.lexicon.vectors(texts)])

    def probabilities(self, vectors: np.ndarray, texts: Sequence[str] = ()) -> np.ndarray:
        return self.odds(self.features(vectors, texts))

    def odds(self, features: np.ndarray) -> np.ndarray:
        """(simple, medium, complex) probabilities of each row of :meth:`features`."""
        z = np.atleast_2d(features) @ self.weights + self.bias
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def decide(self, p: np.ndarray) -> Tier:
        """Complex when its probability reaches the bar; otherwise the likelier of simple and medium."""
        return TIERS[int(route(np.atleast_2d(p), self.complex_at)[0])]

    @classmethod
    def from_json(cls, text: str, origin: str = WEIGHTS_FILE) -> LinearRouter:
        try:
            d: dict[str, Any] = json.loads(text)
            weights = np.asarray(d["weights"], dtype=np.float32)
            bias = np.asarray(d["bias"], dtype=np.float32)
            if (
                d.get("tiers") != list(TIERS)
                or weights.ndim != 2
                or weights.shape[1] != 3
                or bias.shape != (3,)
            ):
                raise ValueError(
                    "expected weights of shape (dim, 3) and a bias of 3 for simple/medium/complex"
                )
            lexicon = None
            if (lex := d.get("lexicon")) is not None:
                vocabulary = {str(w): i for i, w in enumerate(lex["words"])}
                idf = np.asarray(lex["idf"], dtype=np.float64)
                if idf.shape != (len(vocabulary),) or len(vocabulary) != len(lex["words"]):
                    raise ValueError("the lexicon needs one idf per distinct word")
                lexicon = Lexicon(vocabulary, idf, float(lex["scale"]))
            return cls(
                weights,
                bias,
                float(d["complex_at"]),
                str(d["embedding_id"]),
                str(d.get("data_sha256", "")),
                float(d.get("sure_at", SURE_AT)),
                lexicon,
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{origin}: not a router classifier ({e})") from e

    @classmethod
    def shipped(cls) -> LinearRouter:
        return cls.from_json(resources.files("agent.data").joinpath(WEIGHTS_FILE).read_text())


class EmbeddingClassifier:
    """:class:`~agent.models.classifier.Classifier` over an embedding (see the module docstring)."""

    def __init__(self, embedding: Embedding, model: LinearRouter | None = None) -> None:
        self.model = model or LinearRouter.shipped()
        if embedding.id != self.model.embedding_id:
            raise ConfigError(
                f"ROUTER_CLASSIFIER=embedding: the weights were trained on {self.model.embedding_id}, "
                f"not {embedding.id}; retrain with bench/train_router.py or use ROUTER_CLASSIFIER=heuristic"
            )
        self.embedding = embedding
        self._heuristic = HeuristicClassifier()
        self.unavailable: str | None = None
        """Why the embedding could not be loaded; once set, the keywords route without retrying."""

    def load(self) -> None:
        """Load the embedding now (start-up, in a thread) so the first ask does not wait for it."""
        if self.unavailable is not None:
            return
        try:
            self.embedding.load()
        except Exception as e:  # a missing model file or onnxruntime will not fix itself: say it once
            self.unavailable = f"{type(e).__name__}: {e}"
            log.error("router_embedding_unavailable", error=self.unavailable, using="keywords")

    def _features(self, task: str) -> np.ndarray | None:
        self.load()
        if self.unavailable is not None:
            return None
        return self.model.features(self.embedding.embed_query(task), [task])

    async def classify(self, task: str) -> Classification:
        words = self._heuristic.classify_now(task)
        try:
            vector = await asyncio.to_thread(self._features, task)
        except Exception as e:  # one text failed to embed: keywords route this ask
            log.warning("router_embedding_failed", error=f"{type(e).__name__}: {e}")
            vector = None
        if vector is None:
            return Classification(words.tier, "heuristic", (*words.reasons, "embedding failed"))
        p = self.model.odds(vector)[0]
        tier = self.model.decide(p)
        odds = f"complex {p[2]:.0%} (≥ {self.model.complex_at:.0%} routes complex), medium {p[1]:.0%}"
        doubtful = tier == "complex" and float(p[2]) < self.model.sure_at
        # The keywords' reasons explain their own guess: beside another tier they read as nonsense
        # ("tier complex … a short look-up or chat" in a session header).
        reasons = words.reasons if words.tier == tier else ()
        return Classification(tier, "embedding", (odds, *reasons), doubtful=doubtful)
