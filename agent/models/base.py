"""The one interface every model adapter implements, and the errors they raise.

The loop only sees :class:`Model`; wire formats live in their own modules. Pydantic-ai's
Model protocol is the example: test doubles implement the same Protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agent.events import RouteDecision, SwitchKind, Usage
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
    received: int | None = None
    """Characters of the model's text this piece stands for, when not ``len(text)``: the start of a reply
    held back (it may open with a think block) or the block itself, never shown, were written and billed
    all the same, so a call cut under way is charged for them (``text`` is then empty)."""


@dataclass(slots=True)
class ThinkingChunk:
    """Hidden reasoning a model streamed (DeepSeek's and vLLM's ``reasoning_content``, OpenRouter's and
    Ollama's ``reasoning``): neither shown nor part of the answer, but billed as output, so a call cut
    while the model thinks (Stop, a proxy's timeout before a retry) is charged its ``chars``."""

    chars: int


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
    """A routing model moved to another model (fallback after errors, escalation, or hand-over)."""

    from_model: str
    to_model: str
    reason: str
    kind: SwitchKind = "fallback"
    route: RouteDecision | None = None


ModelChunk = TextChunk | ThinkingChunk | RetryNotice | SwitchNotice | ModelResponse


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
        """Yield :class:`TextChunk`, :class:`ThinkingChunk` and :class:`RetryNotice` items, then one
        :class:`ModelResponse`."""
        ...


async def final_response(
    model: Model,
    messages: Sequence[Message],
    settings: ModelSettings,
    on_switch: Callable[[], Awaitable[None]] | None = None,
) -> ModelResponse | None:
    """One call without tools, for side jobs (judge, reader): only the final response matters.
    ``on_switch`` is awaited when a routed model moves to another model mid-call, before its request
    (the reader's budget hold is made again at that model's prices)."""
    response: ModelResponse | None = None
    async with contextlib.aclosing(model.stream(messages, [], settings)) as chunks:
        async for chunk in chunks:
            if isinstance(chunk, ModelResponse):
                response = chunk
            elif on_switch is not None and isinstance(chunk, SwitchNotice):
                await on_switch()
    return response


@dataclass(slots=True, frozen=True)
class StepOutcome:
    """What one step did, as plain facts: a routing model decides from these whether to switch."""

    tool_calls: int
    all_invalid: bool = False
    """Every tool call of the step had arguments that could not be read."""
    empty: bool = False
    """No text and no tool calls."""
    can_continue: bool = True
    """Another step is allowed after this one."""
    next_is_last: bool = False
    """The next step is the run's last (a researcher's last call would leave the answer unwritten)."""


@runtime_checkable
class Routing(Protocol):
    """A model that routes between models (agent.models.router): the loop tells it what each step did
    and it answers with the switch it made, if any; its standing is typed data (:class:`RouteDecision`).

    After a step without tool calls, a ``hand_over`` or ``escalation`` notice means "ask again": the
    reply is dropped (hand-over: a researcher's "done" line) or the empty answer is asked for again.
    """

    @property
    def route(self) -> RouteDecision: ...

    def after_step(self, outcome: StepOutcome) -> SwitchNotice | None: ...


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
        quoted: Iterable[str] = (),
    ) -> None:
        message = redact(message)  # shown in threads and retry notes: no keys, no URL userinfo (14.10)
        super().__init__(message)
        self.message = message
        self.quoted = tuple(q for q in map(redact, quoted) if q.strip() and q in message)
        """The parts of ``message`` that are the server's own words (its error text and type): a thread
        shows them as written, never as Markdown, links or mentions in the bot's voice."""
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class ModelAuthError(ModelError):
    """The key is missing, wrong or not allowed to use this model."""


class ModelNotFoundError(ModelError):
    """The server does not know the model (or the base URL is wrong)."""


class NoApiAtURLError(ModelNotFoundError):
    """A 404 that names no model: nothing answers at that path, so the base URL is what to fix."""


class ContextOverflowError(ModelError):
    """The conversation is longer than the model's context window."""


class ModelUnavailableError(ModelError):
    """Transient failures outlasted every retry."""
