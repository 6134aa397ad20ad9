"""One run's model over a :class:`~agent.models.router.Router`: fallback, escalation, research hand-over.

:class:`RoutedModel` implements :class:`~agent.models.base.Model` and :class:`~agent.models.base.Routing`:
the loop reports each step as a :class:`~agent.models.base.StepOutcome` and gets back the switch made, if
any; where the run stands is typed data (:class:`~agent.events.RouteDecision`, ``route``).

Fallback (inside one ``stream()`` call): when the serving model fails with an error another model may
not have - retries exhausted on 429/5xx/timeouts (``ModelUnavailableError``), a rejected key, an unknown
model, or a retryable error from an adapter configured without retries - the next model takes over and
a :class:`~agent.models.base.SwitchNotice` ("switched to X because Y") is yielded first. The order is:
the rest of the current tier, then stronger tiers up to ``max_tier``, then weaker tiers the run has not
already escalated away from (a cheaper answer beats none). **Text streamed before a SwitchNotice is
void**: the new model answers the same request from scratch, exactly as after a RetryNotice.

Escalation (the task, not the provider, failed; ``after_step``: two steps of invalid tool calls or an empty
answer; a ``ContextOverflowError`` inside ``stream()``) moves the run to the next tier's first available model.

Research tiers (``research``, ``ROUTER_RESEARCH_TIERS``, default ``complex=medium``): a run of a tier
listed there does its tool steps (search, read, check) on the research tier's models and hands over to
its own tier's model for the answer, as GPT-Researcher splits its fast and smart models: the expensive
model writes from everything found (tools still at hand) instead of paying for every step. The
researcher is told not to write the answer; its text is held back until it calls a tool, so the thread
never previews an answer that is then replaced. A run that outgrows a tier's step limit while on the
research tier of the next one keeps its researcher and gains that tier as its writer. With a hand-down
(``ROUTER_HAND_DOWN_CALLS``, off by default) on a run the classifier sent up without being sure, a
researcher done within that many calls answers itself instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence, Set
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from agent.config import ConfigError
from agent.events import RouteDecision, SwitchKind
from agent.messages import Message
from agent.models.base import (
    ContextOverflowError,
    Model,
    ModelChunk,
    ModelError,
    ModelNotFoundError,
    ModelResponse,
    ModelSettings,
    ModelUnavailableError,
    StepOutcome,
    SwitchNotice,
    TextChunk,
    ThinkingChunk,
)
from agent.models.breakers import breaker_keys, falls_back, why_unavailable
from agent.models.classifier import Classification
from agent.models.tiers import TIERS, Tier, tier_index

if TYPE_CHECKING:
    from agent.models.router import Router

log = structlog.get_logger("agent.router")


RESEARCHER_NOTE = (
    "\n\nYou are the researcher for this request: a stronger model will write the final answer from this "
    "conversation. Use the tools to find, read and check what the answer needs. When you have enough, "
    "reply with one short line saying so, without writing the answer itself."
)


def _with_researcher_note(messages: Sequence[Message]) -> Sequence[Message]:
    if not messages or messages[0].role != "system":
        return [Message("system", RESEARCHER_NOTE.strip()), *messages]
    return [replace(messages[0], content=messages[0].content + RESEARCHER_NOTE), *messages[1:]]


class RoutedModel:
    """One run's model: starts at a tier, falls back and escalates (see the module docstring).

    ``name`` and ``provider`` always describe the model that serves the next (or current) call, so the
    loop's budget reservations, ``StepStarted`` events and per-provider usage settle on the right one.
    """

    def __init__(
        self, router: Router, tier: Tier, *, max_tier: Tier, decision: Classification | None = None
    ) -> None:
        self._router = router
        self.start_tier: Tier = tier
        self.max_tier: Tier = max_tier
        self.decision = decision
        self._tier: Tier = tier
        """The tier whose models serve calls now (the research tier until the hand-over)."""
        self._writer: Tier | None = None
        """The run's own tier while a research tier serves its tool steps; None once it writes."""
        self._left: set[Tier] = set()
        """Tiers this run escalated away from: they failed the task, so fallback avoids them."""
        self._calls_on_tier = 0
        """Calls on the serving tier (a hand-down's measure of the research)."""
        self._calls = 0
        """Calls of the whole run (the step limits' measure of the task)."""
        self._invalid_steps = 0
        spec = self._first_available(self._chain()) or self._first_buildable(self._chain())
        if spec is None:
            raise ConfigError(
                f"no model of the {tier} tier or any fallback can be used: "
                + ("; ".join(router.unconfigured.values()) or "check the tier settings")
            )
        self._spec = spec
        helper = router.research.get(tier)  # always weaker than ``tier`` (validate_research)
        if helper is not None:
            research = self._pick(helper)
            if research is not None and research != spec:  # one model for both jobs: nothing to split
                self._tier, self._writer, self._spec = helper, tier, research

    # -- what is serving ------------------------------------------------------------------------

    @property
    def tier(self) -> Tier:
        """The run's tier: the one that writes the answer."""
        return self._writer or self._tier

    @property
    def writer(self) -> str | None:
        """The model that will write the answer while a research tier serves, else None."""
        if self._writer is None:
            return None
        spec = self._pick(self._writer)
        m = self._router.model(spec) if spec else None
        return m.name if m else None

    @property
    def route(self) -> RouteDecision:
        """Where the run stands, as typed data for headers, footers and events."""
        d = self.decision
        return RouteDecision(
            tier=self.tier,
            model=self.name,
            writer=self.writer,
            reasons=d.reasons if d else (),
            source=d.source if d else "",
            judge_model=d.model if d and d.usage is not None else None,
            judge_usage=d.usage if d else None,
            judge_provider=d.provider if d else None,
            judge_asked=d.asked if d else None,
        )

    @property
    def router(self) -> Router:
        """The (server's) router this run routes in: its tiers serve side jobs such as the reader."""
        return self._router

    @property
    def current(self) -> Model:
        m = self._router.model(self._spec)
        assert m is not None  # only buildable specs are ever chosen
        return m

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def provider(self) -> str:
        return self.current.provider

    def __repr__(self) -> str:
        return f"RoutedModel(tier={self._tier!r}, model={self._spec!r})"

    # -- choosing -------------------------------------------------------------------------------

    def _chain(self) -> list[str]:
        """Fallback order from the current tier: its models, stronger tiers, then weaker ones not left."""
        i, cap = tier_index(self._tier), tier_index(self.max_tier)
        order = [
            self._tier,
            *TIERS[i + 1 : cap + 1],
            *(t for t in reversed(TIERS[:i]) if t not in self._left),
        ]
        return list(dict.fromkeys(s for t in order for s in self._router.tiers[t]))

    def _first_available(self, specs: Sequence[str], skip: Set[str] = frozenset()) -> str | None:
        ok = self._router.breakers.available
        return next(
            (
                s
                for s in specs
                if s not in skip and (m := self._router.model(s)) and all(map(ok, breaker_keys(m)))
            ),
            None,
        )

    def _first_buildable(self, specs: Sequence[str]) -> str | None:
        return next((s for s in specs if self._router.model(s) is not None), None)

    def _next(self, tried: set[str]) -> str | None:
        """The next model to try after ``tried`` failed or was skipped in this call."""
        chain = self._chain()
        if self._spec in chain:  # continue after the current position, then wrap around
            i = chain.index(self._spec)
            chain = chain[i + 1 :] + chain[:i]
        return self._first_available(chain, tried)

    def _pick(self, tier: Tier, skip: frozenset[str] = frozenset()) -> str | None:
        specs = [s for s in self._router.tiers[tier] if s not in skip]
        return self._first_available(specs) or self._first_buildable(specs)

    def escalate(self, reason: str) -> SwitchNotice | None:
        """Move to the next stronger tier (within ``max_tier``) whose model differs from the current one."""
        current = self._spec
        for t in TIERS[tier_index(self._tier) + 1 : tier_index(self.max_tier) + 1]:
            pick = self._pick(t, frozenset({current}))
            if pick is None:
                continue
            old = self.name
            self._left.add(self._tier)
            self._tier = t
            if self._writer is not None and tier_index(t) >= tier_index(self._writer):
                self._writer = None  # the researcher failed: the writer's tier does the rest itself
            self._spec = pick
            self._calls_on_tier = 0
            log.info("router_escalated", from_model=old, to_model=self.name, tier=t, reason=reason)
            return self._notice(old, f"{reason}; moving up to the {t} tier", "escalation")
        return None

    def _hand_over(self) -> SwitchNotice | None:
        """The researcher is done: the run's own tier writes the answer (None when no hand-over is due),
        or, done within the router's ``hand_down`` calls on a run routed to that tier, the researcher."""
        if self._writer is None:
            return None
        tier, self._writer = self._writer, None
        calls = self._calls_on_tier
        doubted = self.decision is not None and self.decision.doubtful  # never what a user asked for
        if doubted and tier == self.start_tier and 0 < calls <= self._router.hand_down:
            # Short research is evidence the ask was smaller than routed, as long research is of the
            # opposite (_past_step_limit). The same model answers: the loop asks again, now untold.
            log.info("router_hand_down", model=self.name, tier=self._tier, calls=calls)
            why = (
                f"{self.name} finished its research in {calls} calls, so it writes the answer itself "
                f"(ask for the {tier} tier to have that tier write it)"
            )
            return self._notice(self.name, why, "hand_over")
        pick = self._pick(tier)
        if pick is None:  # nothing of the writing tier can be built: the researcher's answer stands
            return None
        old = self.name
        self._tier, self._spec, self._calls_on_tier = tier, pick, 0
        log.info("router_hand_over", from_model=old, to_model=self.name, tier=tier)
        return self._notice(
            old, f"{old} gathered the material; the {tier} tier writes the answer", "hand_over"
        )

    # -- serving --------------------------------------------------------------------------------

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], settings: ModelSettings
    ) -> AsyncIterator[ModelChunk]:
        breakers = self._router.breakers
        tried: set[str] = set()
        held: list[ModelChunk] = []
        while True:
            researching = self._writer is not None  # may change mid-call: fallback, overflow escalation
            sent = _with_researcher_note(messages) if researching else messages
            model = self.current
            keys = breaker_keys(model)
            if not breakers.acquire(keys):
                tried.add(self._spec)
                wait = max(breakers.retry_in(k) for k in keys)
                cooling = model.provider if not breakers.available(keys[0]) else model.name
                why = f"{cooling} is cooling down after errors (next try in {wait:.0f} s)"
                nxt = self._next(tried)
                if nxt is None:
                    raise ModelUnavailableError(
                        f"every model this run may use is cooling down after errors; {why}",
                        provider=model.provider,
                        model=model.name,
                        retryable=True,
                    )
                yield self._switch(nxt, why)
                continue
            try:
                async with contextlib.aclosing(model.stream(sent, tools, settings)) as chunks:
                    async for chunk in chunks:
                        if not researching or isinstance(chunk, ThinkingChunk):  # thinking: billed, passed on
                            yield chunk
                        elif isinstance(chunk, TextChunk):
                            held.append(chunk)  # shown only once the researcher turns out to call tools
                            # ...but written and billed now: counted as it streams (empty text, shown as
                            # nothing), or an attempt that broke off before a retry was charged nothing.
                            yield TextChunk("", len(chunk.text) if chunk.received is None else chunk.received)
                        elif isinstance(chunk, ModelResponse):
                            if chunk.message.tool_calls:
                                for h in held:
                                    yield replace(h, received=0)  # counted as it came
                            held.clear()
                            yield chunk
                        else:  # a retry voids the text streamed before it
                            held.clear()
                            yield chunk
            except ContextOverflowError:
                breakers.release(keys)
                notice = self.escalate(f"the conversation is too long for {model.name}")
                if notice is None:
                    raise
                yield notice
                tried.clear()
                continue
            except ModelError as e:
                if not falls_back(e):
                    breakers.release(keys)
                    raise
                unknown = isinstance(e, ModelNotFoundError)
                tried.add(self._spec)
                # An unknown model with nothing to fall back to cools nothing down: the operator's fix
                # (`ollama pull`) needs no restart, and a cooldown would refuse the next turn for 15 min.
                wait = 0.0 if unknown and self._next(tried) is None else breakers.model_failed(model, e)
                breakers.release(keys)
                why = why_unavailable(model, e)
                log.warning(
                    "router_model_failed",
                    model=model.name,
                    provider=model.provider,
                    cooldown=round(wait, 1),
                    error=e.message,
                )
                nxt = self._next(tried)
                if nxt is None:
                    if isinstance(e, ModelUnavailableError):
                        raise
                    raise ModelUnavailableError(
                        f"{why}, and no other model is available: {e.message}",
                        quoted=e.quoted,
                        provider=model.provider,
                        model=model.name,
                        status=e.status,
                        retryable=True,
                    ) from e
                held.clear()
                yield self._switch(nxt, why)
                continue
            except BaseException:  # cancelled or closed mid-stream: the probe (if any) proved nothing
                breakers.release(keys)
                raise
            breakers.success(keys)
            self._calls_on_tier += 1
            self._calls += 1
            return

    def after_step(self, outcome: StepOutcome) -> SwitchNotice | None:
        """The switch this step calls for: hand-over after the researcher's last step, escalation after an
        empty answer, two steps of invalid tool calls or a tier's step allowance used up."""
        if not outcome.tool_calls:
            if outcome.can_continue and (handed := self._hand_over()) is not None:
                return handed
            return self.escalate("it returned an empty answer") if outcome.empty else None
        if outcome.next_is_last and (handed := self._hand_over()) is not None:
            return handed  # the last step is the writer's: a researcher's would end on its "done" line
        self._invalid_steps = self._invalid_steps + 1 if outcome.all_invalid else 0
        if self._invalid_steps >= 2:
            notice = self.escalate("its tool calls were invalid twice in a row")
            if notice is not None:
                self._invalid_steps = 0
            return notice
        return self._past_step_limit()

    def _past_step_limit(self) -> SwitchNotice | None:
        """A task still at work after the steps its tier is meant for was routed too low (the work done is
        the best evidence of how big a task is), so a stronger model carries on with what was found.
        The run's calls count, not the tier's: a complex task routed simple has done 6 calls when it is
        3 calls into the medium tier, and gains the complex writer there instead of ending on medium."""
        if self.decision is not None and self.decision.source == "requested":
            return None  # the user chose this tier (to save money, or to compare): keep to it
        if self._writer is not None:
            return None  # researching for a stronger tier: the serving tier's step limit is not this run's
        limit = self._router.step_limits.get(self._tier)
        if limit is None or self._calls < limit:
            return None
        up = TIERS[tier_index(self._tier) + 1] if tier_index(self._tier) < tier_index(self.max_tier) else None
        if up is not None and self._router.research.get(up) == self._tier:
            # The next tier researches on this one: keep the researcher and let that tier write.
            self._writer = up
            log.info("router_writer_added", model=self.name, tier=up, steps=self._calls)
            return None
        return self.escalate(f"it was still working after {self._calls} steps on the {self._tier} tier")

    def _switch(self, spec: str, why: str) -> SwitchNotice:
        old = self.name
        self._spec = spec
        w = self._writer
        if w is not None and spec in self._router.tiers[w] and spec not in self._router.tiers[self._tier]:
            self._tier, self._writer = w, None  # a writer-tier model took over: it researches and writes
        log.info("router_fallback", from_model=old, to_model=self.name, reason=why)
        return self._notice(old, why, "fallback")

    def _notice(self, old: str, reason: str, kind: SwitchKind) -> SwitchNotice:
        return SwitchNotice(old, self.name, reason, kind, self.route)
