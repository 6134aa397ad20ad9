"""Who serves each call of a run: the shipped :class:`~agent.models.routed.RoutedModel`, driven offline.

``bench/arbitrage.py`` prices a task by the calls its run makes. Which model makes each call (the
routed tier's, a stronger one after a step limit, a researcher and its writer, a hand-down) is not
re-implemented here: a real :class:`~agent.models.router.Router` with the bench's settings hands out
a real ``RoutedModel``, whose ``stream()`` is served by stand-in models that answer at once, and whose
``after_step()`` hears each step of the task's typical run, exactly as the loop tells it. So the bench
follows whatever the router does, now and after any change to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from agent.messages import Message
from agent.models.base import ModelChunk, ModelResponse, ModelSettings, StepOutcome
from agent.models.classifier import Classification
from agent.models.router import DEFAULT_STEP_LIMITS, Router
from agent.models.tiers import TIERS, Tier

Kind = Literal["step", "done", "answer"]
"""A call that asked for a tool; a researcher's "done" line; the answer."""


@dataclass(frozen=True)
class Call:
    model: str
    kind: Kind


class _StandIn:
    """A model that answers every call at once; which answer the run needs is told to ``after_step``."""

    provider = "bench"

    def __init__(self, name: str) -> None:
        self.name = name

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], settings: ModelSettings
    ) -> AsyncIterator[ModelChunk]:
        yield ModelResponse(Message("assistant", "."), _NO_USAGE, self.name)


_NO_USAGE: Any = None  # the routed model never reads a response's usage


class Sent(str):
    """A routed tier as the classifier sent it: ``doubtful`` when it went up without confidence
    (:attr:`~agent.models.classifier.Classification.doubtful`). Compares and hashes as the tier."""

    doubtful: bool

    def __new__(cls, tier: str, doubtful: bool = False) -> Sent:
        sent = super().__new__(cls, tier)
        sent.doubtful = doubtful
        return sent


async def _drive(router: Router, start: Tier, doubtful: bool, steps: int, max_calls: int) -> list[Call]:
    routed = router.at_tier(start, decision=Classification(start, "bench", doubtful=doubtful))
    calls: list[Call] = []
    while len(calls) < max_calls:
        researching = routed.writer is not None
        async for _ in routed.stream([], [], ModelSettings()):
            pass  # the routed model counts the call on its tier, as for a real one
        if sum(c.kind == "step" for c in calls) < steps:
            calls.append(Call(routed.name, "step"))
            routed.after_step(StepOutcome(1))
            continue
        calls.append(Call(routed.name, "done" if researching else "answer"))
        switch = routed.after_step(StepOutcome(0))
        if switch is None or switch.kind != "hand_over":  # the loop asks again only after a hand-over
            return calls
    return calls


@cache
def _path(
    ladder: tuple[tuple[Tier, str], ...],
    research: tuple[tuple[Tier, Tier], ...],
    hand_down: int,
    start: Tier,
    doubtful: bool,
    steps: int,
) -> tuple[Call, ...]:
    tiers = {t: [m] for t, m in ladder}
    router = Router(
        tiers,
        _StandIn,
        step_limits=DEFAULT_STEP_LIMITS,
        research=dict(research),
        hand_down=hand_down,
    )
    return tuple(asyncio.run(_drive(router, start, doubtful, steps, max_calls=steps + 3)))


def path(
    ladder: Mapping[Tier, str],
    start: Tier,
    steps: int,
    *,
    research: Mapping[str, str],
    hand_down: int = 0,
) -> tuple[Call, ...]:
    """The calls of a run routed to ``start`` (a :class:`Sent` carries the classifier's doubt) whose task
    takes ``steps`` tool calls, then an answer."""
    return _path(
        tuple((t, ladder[t]) for t in TIERS),
        tuple(sorted(research.items())),  # type: ignore[arg-type]
        hand_down,
        str(start),  # type: ignore[arg-type]  # a plain str: the cache key
        bool(getattr(start, "doubtful", False)),
        steps,
    )
