"""Multi-model routing: a tier table, the models built from it, a classifier and shared breakers.

:class:`Router` lives as long as the process (or one per server's tier table, made with
:meth:`Router.with_tiers`, all sharing one :class:`~agent.models.breakers.Breakers` and one cache of built
models). It classifies a task and hands out a :class:`~agent.models.routed.RoutedModel`, which lives for
one run and does the fallback, escalation and research hand-over (see its module).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import structlog

from agent.config import ConfigError
from agent.events import Usage
from agent.models.base import Model
from agent.models.breakers import Breakers
from agent.models.classifier import Classification, Classifier
from agent.models.prices import PriceTable
from agent.models.routed import RoutedModel
from agent.models.tiers import TIERS, Tier, TierTable, merge_tiers, parse_tier, tier_index, validate_tiers
from agent.setting_parsers import validate_research

__all__ = ["DEFAULT_STEP_LIMITS", "Breakers", "RoutedModel", "Router", "validate_research"]

log = structlog.get_logger("agent.router")


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
        hand_down: a run the classifier sent up to a tier with a researcher without being sure
            (``Classification.doubtful``) whose researcher is done within this many calls is answered
            by the researcher (``ROUTER_HAND_DOWN_CALLS``); 0, the default, never.
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
        hand_down: int = 0,
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
        if hand_down < 0:
            raise ConfigError("hand-down calls must be 0 (off) or more")
        self.hand_down = hand_down
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
        merged = {t: h for t, h in {**self.research, **(research or {})}.items() if h is not None}
        return Router(
            merge_tiers(self.tiers, overrides, "server tiers"),
            self.build,
            breakers=self.breakers,
            classifier=self.classifier,
            default_tier=self.default_tier,
            max_tier=self.max_tier,
            step_limits=self.step_limits,
            research=merged,
            hand_down=self.hand_down,
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
