"""How much of one model answer is read: a bound from the cap the call asked for.

A server that ignores ``max_tokens`` (a proxy dropping it, a local server's runaway generation, a
hostile endpoint) streamed up to the 128 MiB a response body may hold (``agent.models.http``), all of it
kept in memory, shown and written into every checkpoint of the run. The adapters count the characters
of text and tool-call arguments as they arrive and stop reading past :func:`answer_chars`; the answer
then ends as one cut at its output limit (``finish_reason`` ``length``), which the loop marks as cut and
whose cut-off tool calls are not run, as for any answer the server itself cut (README: The agent library, Provider).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import structlog

from agent.models.base import ModelResponse
from agent.models.tokens import completion_cap

log = structlog.get_logger("agent.models")

ANSWER_CHARS_PER_TOKEN = 16
"""Characters one answer may bring per token it may have: four times the ~4 a token holds (code's runs
of spaces hold more, CJK text less), so no answer within its cap comes near it."""
UNCAPPED_ANSWER_TOKENS = 131_072
"""The tokens an answer is bounded by when no cap is set (``AGENT_MAX_TOKENS`` empty): the largest
output any current model offers (128k), so 2 MiB of characters."""


def answer_chars(model: str, max_tokens: int | None) -> int:
    """Most characters of text and tool-call arguments an answer of ``model`` is read to: the cap it
    was asked for (with a reasoning model's thinking headroom) times :data:`ANSWER_CHARS_PER_TOKEN`."""
    tokens = completion_cap(model, max_tokens) if max_tokens else UNCAPPED_ANSWER_TOKENS
    return tokens * ANSWER_CHARS_PER_TOKEN


def fragment_chars(fragment: Any) -> int:
    """The characters of arguments (and name) one streamed OpenAI tool-call fragment brings."""
    fn = fragment.get("function") or {}
    return len(str(fn.get("arguments") or "")) + len(str(fn.get("name") or ""))


def bounded(response: ModelResponse, most: int) -> ModelResponse:
    """``response`` cut at ``most`` characters: one read whole (``AGENT_STREAM=false``, or a server
    answering a stream with one JSON body), which the adapters cannot stop reading midway, and the last
    streamed piece an adapter read past the bound (one event may hold megabytes). Its text is cut, the
    call it ends in keeps its arguments cut (not run: the model is told) and later calls are left out.
    The usage stays what the adapter made of it (what the server reported, or an estimate of what was
    read)."""
    msg = response.message
    size = len(msg.content) + sum(len(c.arguments) for c in msg.tool_calls)
    if size <= most:
        return response
    left = most - len(msg.content[:most])
    calls = []
    for call in msg.tool_calls:
        if left <= 0:
            break
        calls.append(replace(call, arguments=call.arguments[:left]))
        left -= len(call.arguments)
    if response.finish_reason != "length":  # else an adapter stopped reading it, and said so
        answer_cut(response.model, most)
    cut = replace(msg, content=msg.content[:most], tool_calls=calls)
    return replace(response, message=cut, finish_reason="length")


def answer_cut(model: str, most: int) -> None:
    log.warning(
        "answer_cut",
        model=model,
        reason=f"{model} sent more than {most:,} characters in one answer, past what its max_tokens allows; "
        "the rest was not read and the answer is marked as cut",
    )


_ROOM_RES = (
    # vLLM since 0.9: "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum
    # context length is 8192 tokens and your request has 5000 input tokens (4096 > 8192 - 5000)."
    re.compile(r"maximum context length is (\d+) tokens and your request has (\d+) input tokens"),
    # OpenAI and older vLLM: "... maximum context length is 8192 tokens. However, you requested 9096
    # tokens (5000 in the messages, 4096 in the completion)."
    re.compile(
        r"maximum context length is (\d+) tokens\. However, you requested \d+ tokens \((\d+) in the messages"
    ),
    # SGLang: "... maximum context length of 8192 tokens. You requested a total of 9096 tokens: 5000 tokens
    # from the input messages and 4096 tokens for the completion."
    re.compile(
        r"maximum context length of (\d+) tokens\. You requested a total of \d+ tokens: (\d+) tokens from"
    ),
    # Anthropic (Claude 3.7 and later): "input length and `max_tokens` exceed context limit: 188240 + 21333
    # > 200000, decrease input length or `max_tokens` and try again"; the limit comes last.
    re.compile(r"input length and `max_tokens` exceed context limit: (?P<used>\d+) \+ \d+ > (?P<limit>\d+)"),
)
MIN_ANSWER_ROOM = 256
"""Fewer tokens left for an answer than this, and the conversation is what is too long."""


def answer_room(error_text: str) -> int | None:
    """The tokens a server's context-length refusal says are left for the answer, when it refused the
    answer's cap (``max_tokens``) rather than the conversation, else None."""
    for pattern in _ROOM_RES:
        if (m := pattern.search(error_text)) is not None:
            limit, used = (m["limit"], m["used"]) if "limit" in pattern.groupindex else (m[1], m[2])
            room = int(limit) - int(used)
            return room if room >= MIN_ANSWER_ROOM else None
    return None
