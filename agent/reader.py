"""The reader: a cheap model reads long tool results and the agent's model works from its notes.

Why: in a research run most input tokens are pages the agent read. Without a reader every page sits
in the conversation and is re-sent to the (expensive) agent model at every later step; a long page is
also read in 12,000-character windows, each window one more expensive step. With a reader the
cheapest tier's model reads up to 60,000 characters of the page once, for the task at hand, and the
agent model gets the page's header (title, URL, position) and ~350 words of notes. This is the same
split as GPT-Researcher's fast/smart models or open_deep_research's summarisation model; here it is
measured in ``bench/arbitrage.py``.

Nothing is lost: a result is read only when it is long (``min_chars``), never an error, and the notes
say how to get the exact text (``raw: true`` on tools that offer it). If the reader fails, is over
budget or writes nothing, the agent gets the tool's own output as it would without a reader.

The loop (:mod:`agent.loop`) calls :meth:`Reader.read` inside each tool task, so parallel results are
read in parallel and a Stop cancels reading with the tool.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.messages import Message, ToolCall
from agent.models.base import Model, ModelResponse, ModelSettings, final_response

READER_PROMPT = """You read one tool result for a research agent. The agent works from your notes instead of the result itself, so:
- keep every fact, figure, date, name, definition and claim that bears on the agent's task, with its context; quote exact wording where it matters;
- keep links and references that the agent may want to follow or cite;
- leave out navigation, ads, cookie banners and anything off the task;
- if nothing in the result bears on the task, say so in one line and say what the result is about.
Write plain notes (bullet points are fine), at most {words} words, in the result's language. Do not answer the task yourself."""

HEADER_MAX_CHARS = 500


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    min_chars: int = 4000
    """Results shorter than this reach the agent as they are (reading them would not pay)."""
    max_input_chars: int = 100_000
    """Hard cap on what one reading sends to the reader model."""
    max_words: int = 350
    tools: frozenset[str] = field(default_factory=lambda: frozenset({"fetch_url"}))
    """Tools whose results are read: page text, not code output or file contents the agent needs verbatim."""


@dataclass(frozen=True, slots=True)
class Notes:
    """One reading: the observation the agent model gets instead of the result."""

    observation: str
    response: ModelResponse
    source_chars: int


def split_header(text: str) -> tuple[str, str]:
    """(header, body): a result's short first paragraph (title, URL, position) is kept verbatim."""
    head, sep, body = text.partition("\n\n")
    if sep and len(head) <= HEADER_MAX_CHARS:
        return head, body
    return "", text


class Reader:
    """Takes notes on long tool results with ``model`` (meant to be the cheapest tier's)."""

    def __init__(
        self,
        model: Model,
        settings: ReaderSettings | None = None,
        *,
        active: Callable[[], bool] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or ReaderSettings()
        self.active = active
        """Asked before each reading (None: always): a run's tier can move during the run."""
        self.stopped = 0
        """Readings cancelled under way: billed, so counted by estimate (``agentbot ask`` says so)."""

    @property
    def name(self) -> str:
        return self.model.name

    def wants(self, tool: str, text: str, is_error: bool, arguments: dict[str, Any] | None) -> bool:
        """Read this result? Only long, successful results of reading tools, unless the agent asked for raw."""
        if is_error or tool not in self.settings.tools or len(text) < self.settings.min_chars:
            return False
        if self.active is not None and not self.active():
            return False
        return not (arguments or {}).get("raw")

    def messages(self, task: str, call: ToolCall, text: str) -> list[Message]:
        body = text[: self.settings.max_input_chars]
        if len(text) > len(body):
            body += f"\n[result cut at {len(body)} of {len(text)} characters]"
        return [
            Message("system", READER_PROMPT.format(words=self.settings.max_words)),
            Message(
                "user",
                f"The agent's task:\n{task.strip()}\n\nThe agent called {call.name} with "
                f"{_args(call.arguments)}. The result:\n\n{body}",
            ),
        ]

    def model_settings(self) -> ModelSettings:
        # ~1.6 tokens a word with room for lists; a cap stops a runaway reader from costing more than it saves.
        return ModelSettings(stream=False, temperature=None, max_tokens=self.settings.max_words * 2 + 200)

    async def read(
        self,
        task: str,
        call: ToolCall,
        text: str,
        *,
        offers_raw: bool,
        on_switch: Callable[[], Awaitable[None]] | None = None,
    ) -> Notes | None:
        """Notes on ``text``; empty notes (``observation`` "") when the reader wrote nothing, whose call was
        billed all the same (charged by the caller), None when no response came. Raises :class:`ModelError`.
        ``on_switch``: see :func:`~agent.models.base.final_response`."""
        try:
            response = await final_response(
                self.model, self.messages(task, call, text), self.model_settings(), on_switch
            )
        except asyncio.CancelledError:
            self.stopped += 1
            raise
        if response is None:
            return None
        if not response.message.content.strip():
            return Notes("", response, len(text))
        notes = response.message.content.strip()
        header, _ = split_header(text)
        served_by = response.model or self.model.name
        how = f' For the exact text call {call.name} again with "raw": true.' if offers_raw else ""
        note = f"[Notes on this {len(text):,}-character result, taken for your task by {served_by}.{how}]"
        observation = "\n".join(p for p in (header, note) if p) + "\n\n" + notes
        return Notes(observation, response, len(text))


def offers_raw(parameters: dict[str, Any]) -> bool:
    return "raw" in (parameters.get("properties") or {})


def _args(raw: str) -> str:
    try:
        value = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return raw[:300]
    return json.dumps(value, ensure_ascii=False)[:300]
