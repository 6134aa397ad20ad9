"""What a run carries between steps: its state (whole steps only) and the budget hold of one model call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.budget import Budget
from agent.events import Cost, RetryEvent, RunResult, RunStatus, Usage
from agent.messages import ImagePart, Message
from agent.models.base import Model, RetryNotice, SwitchNotice, TextChunk, ThinkingChunk
from agent.models.prices import PriceTable
from agent.models.tokens import CHARS_PER_TOKEN, completion_cap, estimate_prompt


@dataclass(slots=True)
class RunState:
    """Everything a run has completed so far; readable after a cancel, written only at step boundaries."""

    task: str
    messages: list[Message] = field(default_factory=list)
    """New messages of this run (starting with the user's task); always a valid conversation."""
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    models: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    last_text: str = ""
    started: float = field(default_factory=time.monotonic)

    def start(
        self,
        task: str,
        resume: Sequence[Message] | None,
        resume_step: int,
        images: Sequence[ImagePart] = (),
    ) -> None:
        """Begin ``task`` (with the ``images`` attached to it), or continue after the whole steps a
        checkpoint kept (``resume``, whose first message already carries them)."""
        self.task = task
        self.messages = list(resume) if resume else [Message("user", task, images=list(images))]
        self.steps = resume_step if resume else 0
        for m in self.messages:
            if m.role == "assistant" and m.content.strip():
                self.last_text = m.content

    def add_usage(self, model: str, usage: Usage, cost: Cost) -> None:
        self.usage = self.usage + usage
        self.cost = self.cost + cost
        if model not in self.models:
            self.models.append(model)

    def add_sources(self, urls: Sequence[str]) -> None:
        for u in urls:
            if u not in self.sources:
                self.sources.append(u)

    def result(self, status: RunStatus, text: str | None = None, error: str | None = None) -> RunResult:
        return RunResult(
            text=self.last_text if text is None else text,
            status=status,
            steps=self.steps,
            usage=self.usage,
            cost=self.cost,
            models=list(self.models),
            sources=list(self.sources),
            messages=list(self.messages),
            duration=time.monotonic() - self.started,
            error=error,
        )

    def partial(self, status: RunStatus, note: str, at: int | None = None) -> RunResult:
        """A stopped run's answer: the note, then the best partial answer (last text the model wrote).
        ``at``: the step an error or a limit stopped it at."""
        text = note
        if self.last_text.strip():
            text = f"{note}\n\nBest partial answer so far:\n\n{self.last_text}"
        result = self.result(status, text, error=None if status == "max_iterations" else note)
        result.stopped_at = at
        return result


def retry_event(
    log: Any, step: int, what: str, attempt: int, max_attempts: int, delay: float, error: str
) -> RetryEvent:
    """A retry about to wait, logged and as the event the caller yields before the wait."""
    log.warning("retry", step=step, what=what, attempt=attempt, delay=round(delay, 2), error=error)
    return RetryEvent(
        step=step, what=what, attempt=attempt, max_attempts=max_attempts, delay=delay, error=error
    )


def parse_args(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):  # json raises RecursionError on deep nesting ("[" * 100_000)
        return None
    return value if isinstance(value, dict) else None


@dataclass(slots=True)
class Bill:
    """One model call's charge: nothing until :meth:`charge` is called with the response's usage."""

    model: str
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    charged: bool = False
    started: float = field(default_factory=time.monotonic)
    streamed: int = 0
    """Characters of answer streamed so far (what a call cut before its usage is charged for as output)."""
    retry_until: float = 0.0
    """While a failed attempt waits to be retried (until then), no request is with the provider."""
    lost: list[tuple[str, str, int]] = field(default_factory=list)
    """Attempts that broke off after streaming words (a proxy's timeout, an error event mid-stream)
    before a retry or a fallback: (model, provider, characters streamed). The provider billed them;
    :class:`hold` charges them."""
    writer: tuple[str, str] = ("", "")
    """The (model, provider) that streamed the words counted in :attr:`streamed`."""

    def charge(self, prices: PriceTable, model: str, usage: Usage, asked: str | None = None) -> None:
        """Priced as :meth:`PriceTable.priced` says (the reported name, else ``asked``, the name called)."""
        model, cost = prices.priced(model, usage, asked)
        self.model, self.usage, self.cost, self.charged = model, usage, cost, True

    def saw(self, chunk: object, model: str, provider: str) -> None:
        """Follow what the call streamed, for :meth:`hold.cut`: its words, and a wait before a retry (the
        words before a retry are void, though billed: kept in :attr:`lost`; and nothing is being asked
        of the provider while it waits)."""
        if isinstance(chunk, TextChunk | ThinkingChunk):  # thinking is billed as output too
            if isinstance(chunk, TextChunk):
                self.streamed += len(chunk.text) if chunk.received is None else chunk.received
            else:
                self.streamed += chunk.chars
            self.writer = (model, provider)  # a fallback's notice comes once the next model serves
        elif isinstance(chunk, RetryNotice):
            if self.streamed:
                self.lost.append((*self.writer, self.streamed))
            self.streamed, self.retry_until = 0, time.monotonic() + chunk.delay
        elif isinstance(chunk, SwitchNotice) and self.streamed:  # the last attempt before a fallback
            self.lost.append((*self.writer, self.streamed))
            self.streamed = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def log_fields(self) -> dict[str, Any]:
        """What a log line says about the call: model, latency, tokens, cost."""
        u, c = self.usage, self.cost
        return {
            "model": self.model,
            "latency": round(self.elapsed, 3),
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cached_tokens": u.cached_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "cost": round(c.usd, 6) if c.known else "unknown",
        }


class hold:
    """Hold the estimated cost of one call (raises ``BudgetExceeded``) and settle it on the way out.

    The only place a model call meets the budget. A call that fails without :meth:`Bill.charge` releases
    the hold with nothing spent (a refused request is not billed), unless an attempt of it broke off
    after writing words (billed: charged them by estimate, :meth:`_charge_lost`, :meth:`cut`). A call
    *cut* under way (Stop, the turn's time limit, Ctrl-C: cancelled, or its generator closed) is
    charged by :meth:`cut`: the provider has the request and bills its prompt whether or not the
    answer is read, and repeated Stops otherwise spent the server's money without it reaching any
    quota. Such usage is estimated locally (prompt as the hold counts it, output as the words streamed)
    and marked ``estimated``, and it is added to ``state``, so footer, ``ask`` and ``/usage`` agree.
    The provider is read at the end: a router may have switched to another one mid-call. A class, not
    ``@asynccontextmanager``: it wraps every model call, and the generator machinery showed in profiles.
    ``spec_chars`` is :func:`~agent.models.tokens.tool_chars` of the tool specs sent with the call.
    """

    __slots__ = (
        "bill",
        "budget",
        "lost_charged",
        "max_tokens",
        "messages",
        "model",
        "prices",
        "spec_chars",
        "state",
        "token",
    )

    def __init__(
        self,
        prices: PriceTable,
        budget: Budget | None,
        model: Model,
        messages: Sequence[Message],
        spec_chars: int,
        max_tokens: int | None,
        state: RunState | None = None,
    ) -> None:
        self.prices, self.budget, self.model = prices, budget, model
        self.messages, self.spec_chars, self.max_tokens = messages, spec_chars, max_tokens
        self.state = state
        self.bill = Bill(model.name)
        self.token: Any = None
        self.lost_charged: list[tuple[str, Usage, Cost]] = []
        """(model, usage, cost) of each broken-off attempt :meth:`_charge_lost` charged, for the step's report."""

    async def __aenter__(self) -> Bill:
        if self.budget is not None:
            name = self.model.name
            # Anthropic's calls always carry a cap, 8,192 when none is set: held at 1,024 tokens, a long
            # answer from claude-haiku-4-5 spent $0.04 of a $0.02 limit.
            serving = getattr(self.model, "current", self.model)  # a routed model: the one called now
            cap = self.max_tokens or getattr(serving, "default_max_tokens", None)
            # The most one call can cost, from the same price table as the bill (cache writes included).
            est = Usage(
                estimate_prompt(self.messages, tools_chars=self.spec_chars),
                completion_cap(name, cap),
                0,
                1,
                estimated=True,
            )
            est_cost = self.prices.estimate(name, est.prompt_tokens, est.completion_tokens)
            self.token = await self.budget.reserve(name, est, est_cost.usd if est_cost.known else None)
        return self.bill

    async def moved(self) -> None:
        """The router switched models mid-call (fallback, escalation): hold again, at the price of the
        model the next request goes to, before it is sent. Held at the first model's price, a fallback
        from gpt-4o-mini to a dearer model passed the spending limit the hold had checked."""
        if self.budget is None or self.bill.charged:
            return
        old, self.token = self.token, None  # released first: the two holds never count together
        await self.budget.settle(old, self.model.name, self.model.provider, Usage(), Cost())
        await self.__aenter__()

    def saw(self, chunk: object) -> None:
        """What the call streamed (see :meth:`Bill.saw`), under the model serving now."""
        self.bill.saw(chunk, self.model.name, self.model.provider)

    def _estimated(self, model: str, chars: int) -> tuple[Usage, Cost]:
        """One attempt counted locally: the prompt as the hold counts it, ``chars`` of answer."""
        prompt = estimate_prompt(self.messages, tools_chars=self.spec_chars)
        usage = Usage(prompt, -(-chars // CHARS_PER_TOKEN), 0, 1, estimated=True)
        return usage, self.prices.priced(model, usage, model)[1]

    def cut(self) -> None:
        """Charge a call cut under way, estimated (see the class); nothing while it waited to retry."""
        bill = self.bill
        if bill.charged or time.monotonic() < bill.retry_until:
            return
        name = self.model.name  # a routed model: the one the request went to
        bill.charge(self.prices, name, self._estimated(name, bill.streamed)[0], name)
        if self.state is not None:
            self.state.add_usage(bill.model, bill.usage, bill.cost)

    async def _charge_lost(self) -> None:
        """Attempts that broke off mid-answer before a retry or a fallback (:attr:`Bill.lost`) were
        billed: each is charged by estimate under its own model's name and price, apart from the call."""
        for model, provider, chars in self.bill.lost:
            usage, cost = self._estimated(model, chars)
            self.lost_charged.append((model, usage, cost))
            if self.state is not None:
                self.state.add_usage(model, usage, cost)
            if self.budget is not None:
                with contextlib.suppress(Exception):  # as a release: never fails the call it follows
                    await self.budget.settle(None, model, provider, usage, cost)
        self.bill.lost.clear()

    async def __aexit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        answered = self.bill.charged
        if not answered and kind is not None and issubclass(kind, asyncio.CancelledError | GeneratorExit):
            self.cut()
        elif not answered and kind is not None and self.bill.streamed:
            self.cut()  # failed after writing words (its last attempt broke off): billed, so charged
        if self.bill.lost:
            await self._charge_lost()
        if self.budget is None:
            return
        bill = self.bill
        settle = self.budget.settle(self.token, bill.model, self.model.provider, bill.usage, bill.cost)
        if answered:
            await settle
        else:
            with contextlib.suppress(Exception):
                await settle
