"""Plain-data events and results of an agent run.

Everything a renderer (Discord thread, terminal, log, test) needs travels in these
dataclasses, so the agent never has to know who is watching.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(slots=True)
class Usage:
    """Token counts.

    ``cached_tokens`` is the part of ``prompt_tokens`` served from a provider cache; ``reasoning_tokens`` the
    part of ``completion_tokens`` a reasoning model spent thinking. Providers bill it as output but never
    show it, so it is kept apart: on gpt-5 it can be most of a run's cost, and admins need to see that.
    ``cache_write_tokens`` is the part of ``prompt_tokens`` written to a provider cache (Anthropic bills it
    at 1.25x input for 5-minute entries), ``cache_write_1h_tokens`` the part of those kept an hour (2x).
    ``estimated``: the server reported no usage, so the counts were made locally (agent.models.tokens).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.requests + other.requests,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.estimated or other.estimated,
        )


@dataclass(slots=True)
class Cost:
    """Money spent, in USD.

    ``unknown_models`` lists models with no price: their share is *unknown*, never counted as 0,
    so a total with unknown parts is shown as a lower bound.
    """

    usd: float = 0.0
    unknown_models: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return not self.unknown_models

    def __add__(self, other: Cost) -> Cost:
        unknown = self.unknown_models
        if other.unknown_models:  # most calls are priced: no tuple to merge
            unknown = tuple(dict.fromkeys(unknown + other.unknown_models))
        return Cost(self.usd + other.usd, unknown)

    def format(self, *, estimated: bool = False) -> str:
        """``estimated``: the tokens were counted locally, so a known price gives an estimate; an unknown
        cost stays just unknown ("estimated: unknown" read as if a price had been guessed)."""
        est, usd = "estimated: " if estimated else "", usd_text(self.usd)
        if not self.unknown_models:
            return est + usd
        if self.usd == 0:
            return "unknown (no price for " + ", ".join(self.unknown_models) + ")"
        return f"{est}at least {usd} (no price for " + ", ".join(self.unknown_models) + ")"


def usd_text(usd: float) -> str:
    """Dollars to four places, six for a non-zero amount below $0.0001: a priced call never reads as
    free (120 tokens of gpt-4o-mini, $0.000027, would round to $0.0000); five below $0.001, so a total
    keeps two digits like the steps it sums (five steps at $0.000027 read "$0.0001", 26% short)."""
    # To the store's unit (a nano-dollar) first: a sum of floats on a rounding edge (0.00043499999999999995
    # for $0.000198 + $0.000237) read $0.00043 in a footer and $0.00044 in /usage, which sums nano-dollars.
    usd = round(usd, 9)
    if usd != 0 and abs(usd) < 0.0001:
        return f"${usd:.6f}"
    if abs(usd) < 0.001:
        text = f"{usd:.5f}"
        return "$" + (text[:-1] if text.endswith("0") else text)  # $0.0001 as before, not $0.00010
    return f"${usd:,.4f}"  # $1,234.5678, as /usage prints $1,234.57


RunStatus = Literal["completed", "max_iterations", "cancelled", "error", "budget"]


@dataclass(slots=True)
class RunResult:
    """What a finished (or stopped) run leaves behind."""

    text: str
    status: RunStatus
    steps: int
    usage: Usage
    cost: Cost
    models: list[str]
    sources: list[str] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    """The conversation added by this run (user task, assistant turns, tool results): the next turn's history."""
    duration: float = 0.0
    error: str | None = None
    stopped_at: int | None = None
    """The step an error or a limit stopped the run at (its call not counted in ``steps``)."""

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def steps_said(self) -> str:
        """How far the run got, as its summary says it: a failure at step 1 read "0 steps"."""
        done = f"{self.steps} step{'' if self.steps == 1 else 's'}"
        if self.stopped_at is None:
            return done
        why = "the limit above" if self.status == "budget" else "the error above"
        stopped = f"stopped at step {self.stopped_at} by {why}"
        return stopped if self.steps == 0 else f"{done}, {stopped}"


@dataclass(slots=True, kw_only=True)
class Event:
    step: int
    at: float = field(default_factory=time.monotonic)


@dataclass(slots=True, kw_only=True)
class StepStarted(Event):
    model: str


@dataclass(slots=True, kw_only=True)
class TextDelta(Event):
    text: str


@dataclass(slots=True, kw_only=True)
class ToolCallEvent(Event):
    call_id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str


@dataclass(slots=True, kw_only=True)
class ToolResultEvent(Event):
    call_id: str
    name: str
    output: str
    is_error: bool = False
    duration: float = 0.0
    truncated: bool = False
    sources: list[str] = field(default_factory=list)
    read_by: str | None = None
    """Set when ``output`` is a reader model's notes on a longer result (see :mod:`agent.reader`)."""
    source_chars: int = 0
    reader_failed: str | None = None
    """Why the reader model failed on this result (the agent got the result itself instead)."""


@dataclass(slots=True, kw_only=True)
class RetryEvent(Event):
    """A retry is about to happen after ``delay`` seconds.

    ``what`` is ``"model"`` or a tool name. A model retry after streamed text means that text is void.
    """

    what: str
    attempt: int
    max_attempts: int
    delay: float
    error: str


@dataclass(slots=True, kw_only=True)
class UsageEvent(Event):
    model: str
    usage: Usage
    cost: Cost
    warning: str | None = None
    """What the usage shows went wrong though the call succeeded (the server cut the prompt to fit)."""


@dataclass(slots=True, kw_only=True)
class MemoryEvent(Event):
    """Memories recalled for (or stored from) this run."""

    action: Literal["recalled", "stored"]
    count: int
    ids: list[str] = field(default_factory=list)


SwitchKind = Literal["fallback", "escalation", "hand_over"]


@dataclass(slots=True, frozen=True)
class RouteDecision:
    """Where a routed run stands: typed data for headers and footers, so no one reads router internals."""

    tier: str
    """The run's tier: the one that writes the answer."""
    model: str
    """The model serving the next call (the researcher while a research tier serves)."""
    writer: str | None = None
    """The model that will write the answer while a research tier serves, else None."""
    reasons: tuple[str, ...] = ()
    """Why the classifier chose the tier (for the first decision)."""
    source: str = ""
    """``heuristic``, ``embedding``, ``judge``, ``requested`` or ``default``."""
    judge_model: str | None = None
    judge_usage: Usage | None = None
    """Set when a judge model was called to classify the task: real spending to charge."""
    judge_provider: str | None = None
    """The judge's provider, as /usage server lists its spending."""
    judge_asked: str | None = None
    """The judge's name as called, which prices it when its server reports an alias."""


@dataclass(slots=True, kw_only=True)
class RouteDecided(Event):
    """A routed run starts (``step`` 0): the tier chosen and who researches and writes."""

    route: RouteDecision


@dataclass(slots=True, kw_only=True)
class ModelSwitched(Event):
    """The router moved to another model: fallback after errors, escalation, or the hand-over to the writer."""

    from_model: str
    to_model: str
    reason: str
    kind: SwitchKind = "fallback"
    route: RouteDecision | None = None
    """Where the run stands after the switch (None for models that do not route)."""


@dataclass(slots=True, kw_only=True)
class ErrorEvent(Event):
    message: str
    quoted: tuple[str, ...] = ()
    """The parts of ``message`` that are a server's own words (a provider's error text), which a
    renderer shows as written (``ModelError.quoted``)."""


@dataclass(slots=True, kw_only=True)
class FinalEvent(Event):
    result: RunResult


AgentEvent = (
    StepStarted
    | TextDelta
    | ToolCallEvent
    | ToolResultEvent
    | RetryEvent
    | UsageEvent
    | MemoryEvent
    | RouteDecided
    | ModelSwitched
    | ErrorEvent
    | FinalEvent
)
