"""Multi-model routing: tiers, fallback within a tier, escalation between tiers, provider cooldown.

Two objects with different lifetimes:

* :class:`Router` lives as long as the process (or one per server's tier table, made with
  :meth:`Router.with_tiers`, all sharing one :class:`Breakers` and one cache of built models). It
  classifies a task and hands out a :class:`RoutedModel`.
* :class:`RoutedModel` lives for one run. It implements :class:`~agent.models.base.Model` and
  :class:`~agent.models.base.Escalating`, so the loop needs no router-specific code.

Fallback (inside one ``stream()`` call): when the serving model fails with an error another model may
not have - retries exhausted on 429/5xx/timeouts (``ModelUnavailableError``), a rejected key, an unknown
model, or a retryable error from an adapter configured without retries - the next model takes over and
a :class:`~agent.models.base.SwitchNotice` ("switched to X because Y") is yielded first. The order is:
the rest of the current tier, then stronger tiers up to ``max_tier``, then weaker tiers the run has not
already escalated away from (a cheaper answer beats none). **Text streamed before a SwitchNotice is
void**: the new model answers the same request from scratch, exactly as after a RetryNotice.

Escalation (the task, not the provider, failed): the loop calls :meth:`RoutedModel.escalate` after two
turns of invalid tool calls or an empty answer; a ``ContextOverflowError`` escalates inside ``stream()``.
The run moves to the next tier's first available model for the rest of the run.

Research tiers (``research``, ``ROUTER_RESEARCH_TIERS``, default ``complex=medium``): a run of a tier
listed there does its tool steps (search, read, check) on the research tier's models and hands over to
its own tier's model for the final answer, the way GPT-Researcher splits its fast and smart models. The
expensive model then writes from everything found instead of paying for every intermediate step, and may
still call tools itself if the material is thin. The researcher is told not to write the answer, and
its text is held back until it calls a tool, so the thread never previews an answer that is then
replaced. A run that outgrows a tier's step limit while on the research tier of the next one keeps its
researcher and gains that tier as its writer, losing nothing it found.

Cooldown: each provider has a circuit breaker. One failure that got past the adapter's own retries opens
it for ``cooldown`` seconds (doubling on each failed probe, up to ``max_cooldown``; a rejected key or an
unknown model waits ``max_cooldown`` at once). After the cooldown one request is let through as a probe
(half-open): success closes the breaker, failure opens it again. An unknown model cools down only that
model, not its whole provider. The clock is injectable so tests need no sleeping.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import structlog

from agent.config import ConfigError
from agent.events import Usage
from agent.logs import redact
from agent.messages import Message
from agent.models.base import (
    ContextOverflowError,
    Model,
    ModelAuthError,
    ModelChunk,
    ModelError,
    ModelNotFoundError,
    ModelResponse,
    ModelSettings,
    ModelUnavailableError,
    SwitchNotice,
    TextChunk,
)
from agent.models.classifier import Classification, Classifier
from agent.models.prices import PriceTable
from agent.models.tiers import TIERS, Tier, TierTable, merge_tiers, parse_tier, tier_index, validate_tiers

log = structlog.get_logger("agent.router")

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float | None = None
    probing: bool = False
    last_error: str = ""


class Breakers:
    """Circuit breakers by key (a provider, or ``provider:model`` for an unknown model)."""

    def __init__(
        self,
        *,
        cooldown: float = 60.0,
        max_cooldown: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cooldown <= 0 or max_cooldown < cooldown:
            raise ValueError("cooldown must be > 0 and max_cooldown >= cooldown")
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self._b: dict[str, _Breaker] = {}

    def state(self, key: str) -> BreakerState:
        b = self._b.get(key)
        if b is None or b.open_until is None:
            return "closed"
        return "open" if self.clock() < b.open_until or b.probing else "half_open"

    def available(self, key: str) -> bool:
        """Would a request be let through now (closed, or half-open with no probe in flight)?"""
        return self.state(key) != "open"

    def retry_in(self, key: str) -> float:
        b = self._b.get(key)
        if b is None or b.open_until is None:
            return 0.0
        return max(0.0, b.open_until - self.clock())

    def last_error(self, key: str) -> str:
        b = self._b.get(key)
        return b.last_error if b else ""

    def acquire(self, keys: Sequence[str]) -> bool:
        """Take permission for one request; a half-open key becomes this request's probe."""
        if not all(self.available(k) for k in keys):
            return False
        for k in keys:
            if self.state(k) == "half_open":
                self._b[k].probing = True
        return True

    def release(self, keys: Sequence[str]) -> None:
        """The request ended without telling us anything (cancelled, or a request-side error)."""
        for k in keys:
            b = self._b.get(k)
            if b is not None:
                b.probing = False

    def success(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._b.pop(k, None)

    def failure(self, key: str, error: str, *, cooldown: float | None = None) -> float:
        """Open ``key``; returns the cooldown chosen (doubling per consecutive failure)."""
        b = self._b.setdefault(key, _Breaker())
        b.failures += 1
        wait = cooldown if cooldown is not None else self.cooldown * 2 ** (b.failures - 1)
        wait = min(wait, self.max_cooldown)
        b.open_until = self.clock() + wait
        b.probing = False
        b.last_error = error
        return wait

    def snapshot(self) -> dict[str, tuple[BreakerState, float, str]]:
        """Key → (state, seconds until the next probe, last error): for an admin status view."""
        return {k: (self.state(k), self.retry_in(k), b.last_error) for k, b in self._b.items()}


def _provider_key(model: Model) -> str:
    return model.provider


def _model_key(model: Model) -> str:
    return f"{model.provider}:{model.name}"


def _falls_back(e: ModelError) -> bool:
    return isinstance(e, ModelUnavailableError | ModelAuthError | ModelNotFoundError) or e.retryable


def _why(model: Model, e: ModelError) -> str:
    """Short, user-facing cause ("Y" in "switched to X because Y"); secrets already masked by adapters."""
    if isinstance(e, ModelAuthError):
        return f"{model.provider} rejected the API key for {model.name}"
    if isinstance(e, ModelNotFoundError):
        return f"{model.provider} does not know the model {model.name}"
    if e.status:
        what = f"HTTP {e.status}"
    elif "timed out" in e.message:
        what = "timeouts"
    elif "could not be reached" in e.message:
        what = "connection failures"
    else:
        what = "errors"
    return f"{model.name} is unavailable ({what} after retries)"


class Router:
    """Tier table + model builder + shared breakers + classifier.

    Args:
        tiers: ``{"simple": [...], "medium": [...], "complex": [...]}``, each list primary first.
        build: spec → :class:`Model`. A :class:`ConfigError` (e.g. no key for that provider) marks the
            spec as unconfigured: it is skipped, and listed in :attr:`unconfigured`.
        breakers: share one between routers so a provider outage is known to every server.
        classifier: decides the tier of a task; ``None`` means always ``default_tier``.
        max_tier: the strongest tier a run may use unless :meth:`route` is given another cap.
        step_limits: model calls a run may make on a tier before it moves up (``after_step``); a tier
            not listed (or 0) has no limit. Default: simple 3, medium 6.
        research: ``{run tier: research tier}``: runs of the key tier do their tool steps on the value
            tier's models and hand over for the answer (module docstring). Default: none.
    """

    def __init__(
        self,
        tiers: Mapping[str, Sequence[str]],
        build: Callable[[str], Model],
        *,
        breakers: Breakers | None = None,
        classifier: Classifier | None = None,
        default_tier: str = "medium",
        max_tier: str = "complex",
        step_limits: Mapping[str, int] | None = None,
        research: Mapping[str, str] | None = None,
        _models: dict[str, Model | ConfigError] | None = None,
    ) -> None:
        table = validate_tiers(dict(tiers), "router tiers")
        missing = [t for t in TIERS if t not in table]
        if missing:
            raise ConfigError(
                f"router tiers: missing {', '.join(missing)}; every tier needs at least one model"
            )
        self.tiers: TierTable = table
        self.build = build
        self.breakers = breakers or Breakers()
        self.classifier = classifier
        self.default_tier = parse_tier(default_tier, "default tier")
        self.max_tier = parse_tier(max_tier, "max tier")
        self.step_limits: dict[Tier, int] = {
            parse_tier(t, "step limit tier"): n
            for t, n in (DEFAULT_STEP_LIMITS if step_limits is None else step_limits).items()
            if n > 0
        }
        self.research: dict[Tier, Tier] = validate_research(research or {})
        self._models: dict[str, Model | ConfigError] = _models if _models is not None else {}
        built = [self.model(s) for t in TIERS for s in table[t]]  # eager: start-up logs name what is skipped
        if not any(built):
            raise ConfigError("no model in any tier can be used: " + "; ".join(self.unconfigured.values()))

    def with_tiers(
        self,
        overrides: Mapping[str, Sequence[str]] | None,
        research: Mapping[str, str | None] | None = None,
    ) -> Router:
        """A router for one server: its tier overrides over ours, same breakers, builder and models.

        ``research`` overrides the research tiers per run tier; ``None`` as a value turns one off.
        """
        merged: dict[str, str] = dict(self.research)
        for tier, helper in (research or {}).items():
            if helper is None:
                merged.pop(tier, None)
            else:
                merged[tier] = helper
        return Router(
            merge_tiers(self.tiers, overrides, "server tiers"),
            self.build,
            breakers=self.breakers,
            classifier=self.classifier,
            default_tier=self.default_tier,
            max_tier=self.max_tier,
            step_limits=self.step_limits,
            research=merged,
            _models=self._models,
        )

    def model(self, spec: str) -> Model | None:
        """The built model for ``spec`` (cached), or None when it cannot be configured."""
        got = self._models.get(spec)
        if got is None:
            try:
                got = self.build(spec)
            except ConfigError as e:
                got = e
                log.warning("router_model_unconfigured", spec=spec, reason=str(e))
            self._models[spec] = got
        return None if isinstance(got, ConfigError) else got

    def cheapest(self, prices: PriceTable, tier: str = "simple") -> str | None:
        """The usable spec of ``tier`` with the lowest price for a typical short call (the judge)."""
        probe = Usage(prompt_tokens=1000, completion_tokens=100)
        best: tuple[float, str] | None = None
        for spec in self.tiers[parse_tier(tier)]:
            m = self.model(spec)
            cost = prices.cost(m.name, probe) if m else None
            if cost is not None and cost.known and (best is None or cost.usd < best[0]):
                best = (cost.usd, spec)
        return best[1] if best else None

    @property
    def unconfigured(self) -> dict[str, str]:
        return {s: str(m) for s, m in self._models.items() if isinstance(m, ConfigError)}

    async def classify(
        self, task: str, *, requested: str | None = None, max_tier: str | None = None
    ) -> Classification:
        """The tier for ``task``: the user's request if any, else the classifier; capped at ``max_tier``."""
        cap = parse_tier(max_tier, "max tier") if max_tier else self.max_tier
        if requested:
            wanted = parse_tier(requested, "requested tier")
            decision = Classification(wanted, "requested", (f"asked for {wanted}",))
        elif self.classifier is not None:
            decision = await self.classifier.classify(task)
        else:
            decision = Classification(self.default_tier, "default")
        if tier_index(decision.tier) > tier_index(cap):
            decision = Classification(
                cap, decision.source, (*decision.reasons, f"capped at {cap}"), decision.model, decision.usage
            )
        return decision

    async def route(
        self, task: str, *, requested: str | None = None, max_tier: str | None = None
    ) -> RoutedModel:
        decision = await self.classify(task, requested=requested, max_tier=max_tier)
        return self.at_tier(decision.tier, max_tier=max_tier, decision=decision)

    def at_tier(
        self, tier: str, *, max_tier: str | None = None, decision: Classification | None = None
    ) -> RoutedModel:
        cap = parse_tier(max_tier, "max tier") if max_tier else self.max_tier
        t = parse_tier(tier)
        if tier_index(t) > tier_index(cap):
            t = cap
        return RoutedModel(self, t, max_tier=cap, decision=decision)


DEFAULT_STEP_LIMITS: dict[str, int] = {"simple": 3, "medium": 6}
"""A simple task is a look-up (about 2 calls), a medium one a few reads (about 4): past these the task
was bigger than its tier."""

RESEARCHER_NOTE = (
    "\n\nYou are the researcher for this request: a stronger model will write the final answer from this "
    "conversation. Use the tools to find, read and check what the answer needs. When you have enough, "
    "reply with one short line saying so, without writing the answer itself."
)


def _with_researcher_note(messages: Sequence[Message]) -> Sequence[Message]:
    if not messages or messages[0].role != "system":
        return [Message("system", RESEARCHER_NOTE.strip()), *messages]
    return [replace(messages[0], content=messages[0].content + RESEARCHER_NOTE), *messages[1:]]


def validate_research(research: Mapping[str, str], origin: str = "research tiers") -> dict[Tier, Tier]:
    """``{run tier: research tier}``; a research tier must be weaker than the tier it researches for."""
    out: dict[Tier, Tier] = {}
    for run, helper in research.items():
        r, h = parse_tier(run, f"{origin}: run tier"), parse_tier(helper, f"{origin}: research tier")
        if tier_index(h) >= tier_index(r):
            raise ConfigError(
                f"{origin}: {r}={h} would research on a tier no cheaper than the one writing; "
                f"the research tier must be below {r} (e.g. complex=medium)"
            )
        out[r] = h
    return out


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
    def router(self) -> Router:
        """The (server's) router this run routes in: its tiers serve side jobs such as the reader."""
        return self._router

    @property
    def spec(self) -> str:
        return self._spec

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

    def _tier_chain(self, tier: Tier) -> list[str]:
        return list(self._router.tiers[tier])

    def _chain(self) -> list[str]:
        """Fallback order from the current tier: its models, stronger tiers, then weaker ones not left."""
        order: list[Tier] = [self._tier]
        i, cap = tier_index(self._tier), tier_index(self.max_tier)
        order += [t for t in TIERS[i + 1 : cap + 1]]
        order += [t for t in reversed(TIERS[:i]) if t not in self._left]
        out: list[str] = []
        for t in order:
            for s in self._router.tiers[t]:
                if s not in out:
                    out.append(s)
        return out

    def _keys(self, model: Model) -> list[str]:
        return [_provider_key(model), _model_key(model)]

    def _usable(self, spec: str) -> Model | None:
        return self._router.model(spec)

    def _first_available(
        self, specs: Sequence[str], skip: set[str] | frozenset[str] = frozenset()
    ) -> str | None:
        for s in specs:
            m = self._usable(s)
            if (
                s not in skip
                and m is not None
                and all(self._router.breakers.available(k) for k in self._keys(m))
            ):
                return s
        return None

    def _first_buildable(
        self, specs: Sequence[str], skip: set[str] | frozenset[str] = frozenset()
    ) -> str | None:
        return next((s for s in specs if s not in skip and self._usable(s) is not None), None)

    def _next(self, tried: set[str]) -> str | None:
        """The next model to try after ``tried`` failed or was skipped in this call."""
        chain = self._chain()
        if self._spec in chain:  # continue after the current position, then wrap around
            i = chain.index(self._spec)
            chain = chain[i + 1 :] + chain[:i]
        return self._first_available(chain, tried)

    def _pick(self, tier: Tier, skip: frozenset[str] = frozenset()) -> str | None:
        specs = [s for s in self._tier_chain(tier) if s not in skip]
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
            notice = SwitchNotice(old, self.name, f"{reason}; moving up to the {t} tier")
            log.info("router_escalated", from_model=old, to_model=self.name, tier=t, reason=reason)
            return notice
        return None

    def hand_over(self) -> SwitchNotice | None:
        """The researcher is done: the run's own tier writes the answer (None when no hand-over is due)."""
        if self._writer is None:
            return None
        tier, self._writer = self._writer, None
        pick = self._pick(tier)
        if pick is None:  # nothing of the writing tier can be built: the researcher's answer stands
            return None
        old = self.name
        self._tier, self._spec, self._calls_on_tier = tier, pick, 0
        log.info("router_hand_over", from_model=old, to_model=self.name, tier=tier)
        return SwitchNotice(old, self.name, f"{old} gathered the material; the {tier} tier writes the answer")

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
            keys = self._keys(model)
            if not breakers.acquire(keys):
                tried.add(self._spec)
                wait = max(breakers.retry_in(k) for k in keys)
                why = f"{model.provider} is cooling down after errors (next try in {wait:.0f} s)"
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
                        if not researching:
                            yield chunk
                        elif isinstance(chunk, TextChunk):
                            held.append(chunk)  # shown only once the researcher turns out to call tools
                        elif isinstance(chunk, ModelResponse):
                            if chunk.message.tool_calls:
                                for h in held:
                                    yield h
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
                if not _falls_back(e):
                    breakers.release(keys)
                    raise
                unknown = isinstance(e, ModelNotFoundError)
                wait = breakers.failure(
                    _model_key(model) if unknown else _provider_key(model),
                    redact(e.message),
                    cooldown=breakers.max_cooldown if unknown or isinstance(e, ModelAuthError) else None,
                )
                breakers.release(keys)
                why = _why(model, e)
                log.warning(
                    "router_model_failed",
                    model=model.name,
                    provider=model.provider,
                    cooldown=round(wait, 1),
                    error=e.message,
                )
                tried.add(self._spec)
                nxt = self._next(tried)
                if nxt is None:
                    if isinstance(e, ModelUnavailableError):
                        raise
                    raise ModelUnavailableError(
                        f"{why}, and no other model is available: {e.message}",
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
            return

    def after_step(self) -> SwitchNotice | None:
        if self.decision is not None and self.decision.source == "requested":
            return None  # the user chose this tier (to save money, or to compare): keep to it
        if self._writer is not None:
            return (
                None  # researching for a stronger tier: the step limit of the serving tier is not this run's
            )
        limit = self._router.step_limits.get(self._tier)
        if limit is None or self._calls_on_tier < limit:
            return None
        up = TIERS[tier_index(self._tier) + 1] if tier_index(self._tier) < tier_index(self.max_tier) else None
        if up is not None and self._router.research.get(up) == self._tier:
            # The next tier researches on this one: keep the researcher and let that tier write.
            self._writer = up
            log.info("router_writer_added", model=self.name, tier=up, steps=self._calls_on_tier)
            return None
        return self.escalate(
            f"it was still working after {self._calls_on_tier} steps on the {self._tier} tier"
        )

    def _switch(self, spec: str, why: str) -> SwitchNotice:
        old = self.name
        self._spec = spec
        w = self._writer
        if w is not None and spec in self._tier_chain(w) and spec not in self._tier_chain(self._tier):
            self._tier, self._writer = w, None  # a writer-tier model took over: it researches and writes
        log.info("router_fallback", from_model=old, to_model=self.name, reason=why)
        return SwitchNotice(old, self.name, why)
