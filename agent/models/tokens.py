"""Token counts made locally: for budget reservations, and for servers that report no usage.

Some OpenAI-compatible servers send no usage at all (llama-cpp-python's streams, whatever
``stream_options`` says). Counting such a call as 0 tokens would let token quotas pass it free and show
$0 for a model with a known price, so the adapters count it here instead and mark the usage
``estimated``, which every report shows.

The count is about 4 characters a token, rounded up, plus a few tokens of framing per message: no
tokenizer of every model ships offline, and an estimate that is labelled as one needs no more. It is
the same rule the pre-call budget reservation uses, so both sides of a quota agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from agent.events import Usage
from agent.messages import Message
from agent.models.reasoning import HEADROOM, gemini_thinks, openai_reasons

CHARS_PER_TOKEN = 4
PER_MESSAGE = 8
"""Role markers and separators each message costs on the wire (OpenAI documents 3-4; rounded up)."""
IMAGE_TOKENS = 1600
"""What one image is counted as, erring high: Claude bills at most ~1,600 tokens an image, OpenAI 765 for
a high-detail 1024x1024, Gemini 258, llava 576. Counted as its base64 text, a 300 KB photo was 100,000
tokens, half a member's daily quota for one picture on a self-hosted vision model."""

DEFAULT_MAX_TOKENS = 8192
"""The answer cap sent when ``AGENT_MAX_TOKENS`` is unset, and so what a call's hold counts: on Anthropic
(the API requires a cap), Gemini, and OpenAI-compatible models with a known price. Enough for a long
research answer on every current model. Sent, the hold is a true bound: uncapped and held at 1,024, one
long gpt-4.1 answer passed a spending limit by what it wrote past them."""

DEFAULT_COMPLETION = 1024
"""Completion tokens reserved for a call sent with no cap: an OpenAI-compatible model without a price
(self-hosted: a cap over its server's context window, vLLM's ``--max-model-len``, would fail every call)."""


MAX_REPORTED_TOKENS = 10**9
"""Most tokens one count a server reports may stand for (100 times the largest context window): one
reported 10**400, its cost became inf and the quota ledger's conversion failed the turn."""


def count(value: Any) -> int:
    """A token count from a server's JSON: a non-negative int, 0 for anything else (null, "12k", -1),
    at most :data:`MAX_REPORTED_TOKENS`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):  # (an int past float's range is fine here)
        return 0
    return min(MAX_REPORTED_TOKENS, max(0, int(value)))


def _tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def _is_image(part: dict[str, Any]) -> bool:
    """An image part of a request body: OpenAI's ``image_url``, Anthropic's ``image``, Gemini's inline data."""
    return part.get("type") in ("image_url", "image") or "inlineData" in part or "inline_data" in part


def _images(value: Any) -> int:
    if isinstance(value, dict):
        return 1 if _is_image(value) else sum(_images(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_images(v) for v in value)
    return 0


def _strings(value: Any) -> Iterable[str]:
    """The texts in ``value``, images left out (:data:`IMAGE_TOKENS` counts each)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        if _is_image(value):
            return
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def tool_chars(tools: Sequence[dict[str, Any]]) -> int:
    """The characters of tool specs' text, for :func:`estimate_prompt`."""
    return sum(len(s) for s in _strings(list(tools)))


def estimate_prompt(messages: Sequence[Message], *, tools_chars: int = 0) -> int:
    """Prompt tokens of neutral messages and tool specs. A run passes its specs' :func:`tool_chars`,
    counted once: walking the bot's specs took ~100 µs on every budget hold, and they do not change."""
    chars = sum(len(m.content) + sum(len(c.arguments) + len(c.name) for c in m.tool_calls) for m in messages)
    images = sum(len(m.images) for m in messages)
    return _tokens(chars + tools_chars) + PER_MESSAGE * len(messages) + IMAGE_TOKENS * images


CUT_PROMPT_MIN = 1024
"""Fewest prompt tokens a server must report before a shortfall counts as a cut (:func:`cut_prompt`):
a context window cut to fit is thousands (Ollama's num_ctx is 2,048 or 4,096 by default), while a server
counting only the tokens its cache lacked (Ollama 0.30 before its fix) reports a step's new words."""


def cut_prompt(model: str, reported: Usage, messages: Sequence[Message], tools_chars: int = 0) -> str | None:
    """What to say when the server reports reading under half of the prompt as counted here: it cut the
    conversation to fit its context window. Ollama's OpenAI endpoint does so silently (``num_ctx``,
    2,048 or 4,096 tokens by default, dropping the oldest messages: the task first), as OpenRouter's
    middle-out transform does on small models; the run went on with a model that no longer knew what it
    was asked. None when the counts agree (the local count errs high by at most ~1.3x on text) or the
    usage is itself an estimate. Images are left out of the local count: 1,600 each is a ceiling."""
    read = reported.prompt_tokens
    if reported.estimated or read < CUT_PROMPT_MIN:
        return None
    images = IMAGE_TOKENS * sum(len(m.images) for m in messages)
    sent = estimate_prompt(messages, tools_chars=tools_chars) - images
    if sent <= 2 * read:
        return None
    return (
        f"{model} read only {read:,} of the ~{sent:,} prompt tokens sent: its server cut the conversation "
        "to fit its context window, so the model no longer sees its start (the task). Raise the server's "
        "context (Ollama: OLLAMA_CONTEXT_LENGTH=32768 for ollama serve, or num_ctx in a Modelfile; "
        "llama.cpp: --ctx-size)"
    )


def estimated_usage(body: dict[str, Any], message_keys: Sequence[str], reply: Message) -> Usage:
    """What a call the server reported no usage for is counted as (reasoning, if any, stays unseen): every
    text of the request body under ``message_keys`` (messages, system, tools, ...) with framing for each
    entry of the first (the message list), and the reply's text and tool calls."""
    chars = sum(len(s) for k in message_keys for s in _strings(body.get(k)))
    turns = body.get(message_keys[0])
    framing = PER_MESSAGE * (len(turns) if isinstance(turns, list) else 1)
    replied = (reply.content, *(c.name + c.arguments for c in reply.tool_calls))
    images = sum(_images(body.get(k)) for k in message_keys)
    return Usage(
        prompt_tokens=_tokens(chars) + framing + IMAGE_TOKENS * images,
        completion_tokens=sum(_tokens(len(text)) for text in replied),
        requests=1,
        estimated=True,
    )


def completion_cap(model: str, max_tokens: int | None) -> int:
    """The most completion tokens one call may bill: the cap (or a default) plus thinking headroom.

    Reasoning models get :data:`~agent.models.reasoning.HEADROOM` on top of a cap (the adapters send it),
    and bill their thinking as output, so a reservation without it would undershoot.
    """
    thinks = openai_reasons(model) or gemini_thinks(model)
    return (max_tokens or DEFAULT_COMPLETION) + (HEADROOM if thinks else 0)
