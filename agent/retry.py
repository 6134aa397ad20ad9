"""One retry policy for every call that leaves the process: model calls, tools, embeddings, and (for the
bot's streamer) Discord writes.

All of it is tenacity: ``stop_after_attempt``, exponential backoff with jitter
(``wait_exponential_jitter``), and never a shorter wait than the server asked for: an exception with a
``retry_after`` (seconds, from ``Retry-After`` / ``retry-after-ms``, see :func:`parse_retry_after`) waits
at least that long, up to ``max_retry_after``. Four ways to drive it, one per kind of caller:

* :meth:`RetryPolicy.stream` for async iterators (model streams): it yields a :class:`RetryWait` *before*
  each wait, so the consumer can show "retrying in 4 s" while it waits - tenacity's own iterator sleeps
  inside ``__anext__``, where a generator cannot yield;
* :meth:`RetryPolicy.call` for an async call (tools, Discord writes), with an ``on_retry`` notice;
* :meth:`RetryPolicy.sync` for blocking code in worker threads (embeddings);
* :meth:`RetryPolicy.wait` for a caller that keeps its own loop: the bot's streamer retries a failed
  Discord write as a new turn of its writer (which may carry newer text), for as long as it takes.

The first attempt runs without tenacity: it costs ~35 µs a call, and most calls succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

T = TypeVar("T")
N = TypeVar("N")
Retryable = Callable[[BaseException], bool]


@dataclass(frozen=True, slots=True)
class RetryWait:
    """About to wait ``delay`` seconds after attempt ``attempt`` failed with ``error``."""

    attempt: int
    max_attempts: int
    delay: float
    error: BaseException


OnRetry = Callable[[RetryWait], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry: ``initial`` seconds doubling up to ``maximum``, plus up to
    ``initial`` of jitter, ``max_attempts`` attempts in all (1 means no retry)."""

    max_attempts: int = 5
    initial: float = 1.0
    maximum: float = 30.0
    max_retry_after: float = 120.0

    def _wait(self) -> Callable[[RetryCallState], float]:
        base = wait_exponential_jitter(multiplier=self.initial, max=self.maximum, jitter=self.initial)

        def wait(state: RetryCallState) -> float:
            """The backoff, but never shorter than the failed call's ``retry_after`` (capped)."""
            failed = state.outcome.exception() if state.outcome and state.outcome.failed else None
            asked = getattr(failed, "retry_after", None)
            if isinstance(asked, int | float) and asked > 0:
                return max(base(state), min(float(asked), self.max_retry_after))
            return float(base(state))

        return wait

    def _kwargs(self, retryable: Retryable) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(max(1, self.max_attempts)),
            "wait": self._wait(),
            "retry": retry_if_exception(retryable),
            "reraise": True,
        }

    def wait(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait after attempt ``attempt`` (1 = the first) failed with ``error``: the backoff
        with jitter, never shorter than the error's ``retry_after``. ``max_attempts`` is the caller's."""
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        state.set_exception((type(error), error, error.__traceback__))
        return float(self._wait()(state))

    def sync(self, retryable: Retryable) -> Retrying:
        """A tenacity ``Retrying`` for blocking code: ``for attempt in policy.sync(...): with attempt: ...``."""
        return Retrying(**self._kwargs(retryable))

    async def _wait_after(
        self, state: RetryCallState | None, error: Exception, retryable: Retryable
    ) -> tuple[RetryCallState, RetryWait]:
        """Tenacity's verdict on ``error``: the next wait, or ``error`` re-raised (not retryable, or the
        attempts are spent)."""
        if state is None:
            retrying = AsyncRetrying(**self._kwargs(retryable))
            retrying.begin()
            state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        state.set_exception((type(error), error, error.__traceback__))
        action = await state.retry_object.iter(state)  # type: ignore[misc]
        failed = state.attempt_number
        state.prepare_for_next_attempt()
        return state, RetryWait(failed, self.max_attempts, float(action), error)

    async def stream(
        self,
        make: Callable[[], AsyncIterator[T] | Awaitable[T]],
        retryable: Retryable,
        notice: Callable[[RetryWait], N],
        give_up: Callable[[Exception], Exception | None] = lambda e: None,
    ) -> AsyncIterator[T | N]:
        """Items of ``make()`` (an async iterator, or an awaitable of one item), started again after a retryable failure, each retry announced first
        (``notice`` turns the :class:`RetryWait` into the caller's item type).

        Items yielded before a failure are void (the consumer learns it from the notice). The error that
        ends the retrying is raised, or what ``give_up`` makes of it when that is not None.
        """
        state: RetryCallState | None = None
        while True:
            try:
                made = make()
                if inspect.isawaitable(made):  # one item: awaited here, not through another generator
                    yield await made
                    return
                async with contextlib.aclosing(made) as items:
                    async for item in items:
                        yield item
                return
            except Exception as e:
                try:
                    state, wait = await self._wait_after(state, e, retryable)
                except Exception as final:
                    if (instead := give_up(final)) is not None:
                        raise instead from final
                    raise
            yield notice(wait)
            await asyncio.sleep(wait.delay)

    async def call(
        self, fn: Callable[[], Awaitable[T]], retryable: Retryable, on_retry: OnRetry | None = None
    ) -> T:
        """``await fn()``, retried; ``on_retry`` hears of each retry before its wait."""
        state: RetryCallState | None = None
        while True:
            try:
                return await fn()
            except Exception as e:
                state, wait = await self._wait_after(state, e, retryable)
            if on_retry is not None and inspect.isawaitable(res := on_retry(wait)):
                await res
            await asyncio.sleep(wait.delay)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP date), or None."""
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def said_duration(seconds: float) -> str:
    """A wait as a person says it: ``36000`` → "10 h", ``600`` → "10 min"."""
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
