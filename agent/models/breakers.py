"""Circuit breakers per provider and per model, shared by every router of the process.

Cooldown: each provider and each model has a circuit breaker. One failure that got past the adapter's own
retries opens one for ``cooldown`` seconds (doubling on each failed probe, up to ``max_cooldown``; a
rejected key or an unknown model waits ``max_cooldown`` at once). After the cooldown one request is let
through as a probe (half-open): success closes the breaker, failure opens it again. Which one opens
(:func:`cooled_key`): the provider's when it could not be reached or rejected the key; the model's alone
when the provider answered about that model (unknown, overloaded, rate-limited), and the provider's too
once a second of its models fails so while the first cools down. Every run of the process shares these
breakers (in the bot, every Discord server's): a model one server chose that a gateway answered 503 for
cooled down the whole provider, and another server's runs on a model that worked failed ("every model ...
is cooling down") for up to 15 minutes. The clock is injectable so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.logs import redact
from agent.models.base import (
    Model,
    ModelAuthError,
    ModelError,
    ModelNotFoundError,
    ModelUnavailableError,
    NoApiAtURLError,
)

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float | None = None
    probing: bool = False
    last_error: str = ""
    provider: str = ""
    """Set on a model's breaker opened by an error its provider answered (see :meth:`Breakers.failure`)."""


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

    def model_failed(self, model: Model, e: ModelError) -> float:
        """Open the breaker ``e`` says is failing (:func:`cooled_key`); returns its cooldown. A rejected key
        or an unknown model waits the longest at once: no retry soon will change it."""
        longest = isinstance(e, ModelNotFoundError | ModelAuthError)
        return self.failure(
            cooled_key(model, e),
            redact(e.message),
            cooldown=self.max_cooldown if longest else None,
            provider=outage_of(model, e),
        )

    def failure(self, key: str, error: str, *, cooldown: float | None = None, provider: str = "") -> float:
        """Open ``key``; returns the cooldown chosen (doubling per consecutive failure). ``provider``: ``key``
        is one model of it that it answered an error about; a second such model while the first still cools
        down is an outage of the provider, not of one model, so the provider cools down too."""
        b = self._b.setdefault(key, _Breaker())
        b.failures += 1
        wait = cooldown if cooldown is not None else self.cooldown * 2 ** (b.failures - 1)
        wait = min(wait, self.max_cooldown)
        b.open_until = self.clock() + wait
        b.probing = False
        b.last_error = error
        b.provider = provider
        if provider and any(
            k != key and o.provider == provider and self.state(k) == "open" for k, o in self._b.items()
        ):
            self.failure(provider, error)
        return wait


def breaker_keys(model: Model) -> list[str]:
    """Breaker keys: the provider, and the model on it (an unknown model cools down only itself)."""
    return [model.provider, f"{model.provider}:{model.name}"]


def cooled_key(model: Model, e: ModelError) -> str:
    """The breaker one failure of ``model`` opens (see the module docstring): the model's when the server
    answered about it (an HTTP status: unknown, overloaded, rate-limited), the provider's when the key was
    rejected or the server could not be reached at all (no status: timeouts, connection failures)."""
    if isinstance(e, ModelNotFoundError) or (e.status and not isinstance(e, ModelAuthError)):
        return breaker_keys(model)[1]
    return model.provider


def outage_of(model: Model, e: ModelError) -> str:
    """The provider a second failing model would show is down (``Breakers.failure``'s ``provider``): none
    for an unknown model, which says nothing of the provider's other models."""
    return (
        model.provider
        if cooled_key(model, e) != model.provider and not isinstance(e, ModelNotFoundError)
        else ""
    )


def falls_back(e: ModelError) -> bool:
    """An error another model may not have: the run falls back to the next model and this one cools down."""
    return isinstance(e, ModelUnavailableError | ModelAuthError | ModelNotFoundError) or e.retryable


def why_unavailable(model: Model, e: ModelError) -> str:
    """Short, user-facing cause ("Y" in "switched to X because Y"); secrets already masked by adapters."""
    if isinstance(e, ModelAuthError):
        return f"{model.provider} rejected the API key for {model.name}"
    if isinstance(e, NoApiAtURLError):
        return f"{model.provider} has no API at its base URL (for {model.name})"
    if isinstance(e, ModelNotFoundError):
        return f"{model.provider} does not know the model {model.name}"
    if e.status:
        what = f"HTTP {e.status}"
    elif "timed out" in e.message:
        what = "timeouts"
    elif "could not be reached" in e.message or "dropped the connection" in e.message:
        what = "connection failures"
    else:
        what = "errors"
    return f"{model.name} is unavailable ({what} after retries)"
