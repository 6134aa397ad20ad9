"""The one interface every model adapter implements, and the errors they raise.

The loop only sees :class:`Model`; wire formats live in their own modules. Pydantic-ai's
Model protocol is the example: test doubles implement the same Protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agent.events import Usage
from agent.logs import redact
from agent.messages import Message
from agent.models.reasoning import Effort


@dataclass(slots=True)
class ModelSettings:
    temperature: float | None = None
    max_tokens: int | None = None
    """A cap on the visible output; reasoning models get room to think on top (agent.models.reasoning)."""
    stream: bool = True
    timeout: float | None = None
    reasoning_effort: Effort | None = None
    """How hard models that think by default should think; None leaves the provider's default."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TextChunk:
    """A piece of streamed assistant text."""

    text: str


@dataclass(slots=True)
class RetryNotice:
    """The adapter will retry after ``delay`` seconds; text streamed before it is void."""

    attempt: int
    max_attempts: int
    delay: float
    error: str


@dataclass(slots=True)
class ModelResponse:
    """The complete assistant turn, always the last item of a stream."""

    message: Message
    usage: Usage
    model: str
    finish_reason: str | None = None


@dataclass(slots=True)
class SwitchNotice:
    """A routing model moved to another model (fallback after errors, or escalation)."""

    from_model: str
    to_model: str
    reason: str


ModelChunk = TextChunk | RetryNotice | SwitchNotice | ModelResponse


@runtime_checkable
class Model(Protocol):
    """A chat model that can call tools.

    ``name`` is what users and price tables see (``gpt-4o-mini``); ``provider`` names the wire/endpoint
    (``openai``), so the router can put a whole provider on cooldown.
    """

    name: str
    provider: str

    def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncIterator[ModelChunk]:
        """Yield :class:`TextChunk` and :class:`RetryNotice` items, then one :class:`ModelResponse`."""
        ...


async def final_response(
    model: Model, messages: Sequence[Message], settings: ModelSettings
) -> ModelResponse | None:
    """One call without tools, for side jobs (judge, reader): only the final response matters."""
    response: ModelResponse | None = None
    async with contextlib.aclosing(model.stream(messages, [], settings)) as chunks:
        async for chunk in chunks:
            if isinstance(chunk, ModelResponse):
                response = chunk
    return response


@runtime_checkable
class Escalating(Protocol):
    """A model that can move to a stronger one when the current one fails the task (router)."""

    def escalate(self, reason: str) -> SwitchNotice | None:
        """Switch to the next stronger model for the rest of the run; None when there is none."""
        ...

    def after_step(self) -> SwitchNotice | None:
        """Called after each tool step: move up when the current tier has used its step allowance.

        A task still at work after the steps its tier is meant for was routed too low (the work done is
        the best evidence of how big a task is), so a stronger model carries on with what was found.
        """
        ...

    def hand_over(self) -> SwitchNotice | None:
        """Called when the model answered without tools: a cheaper researcher hands the run to the model
        that writes the answer. A notice means "ask again": the researcher's reply is dropped."""
        ...


class ModelError(Exception):
    """A model call failed. ``retryable`` is False for errors retrying cannot fix (bad key, unknown model)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        message = redact(message)  # shown in threads and retry notes: no keys, no URL userinfo (14.10)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class ModelAuthError(ModelError):
    """The key is missing, wrong or not allowed to use this model."""


class ModelNotFoundError(ModelError):
    """The server does not know the model (or the base URL is wrong)."""


class ContextOverflowError(ModelError):
    """The conversation is longer than the model's context window."""


class ModelUnavailableError(ModelError):
    """Transient failures outlasted every retry."""
