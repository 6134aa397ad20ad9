"""Anthropic Messages API (``POST /v1/messages``) over httpx, streaming (SSE) or not.

Mapping to the neutral :class:`~agent.messages.Message` list, and why:

* System messages become the top-level ``system`` parameter (Anthropic has no system role).
* Tool results become ``tool_result`` blocks inside a *user* message, and consecutive messages of one
  role are merged, because the API rejects two user (or two assistant) turns in a row and wants every
  result of one assistant turn in the single user message that follows it.
* Tool-call ids from other providers (a run that fell back from OpenAI) are made to fit Anthropic's
  ``^[a-zA-Z0-9_-]+$``; arguments must be a JSON object (:func:`~agent.models.adapter.args_object`).
* Prompt caching: a ``cache_control`` breakpoint (5-minute TTL) on the last tool (tools are identical
  for every run) and on the last message, so every step writes what is new since the previous step to
  the cache and reads the rest from it. The API reports ``input_tokens`` (after the last breakpoint,
  uncached), ``cache_creation_input_tokens`` (written: billed 1.25x input for 5-minute entries, 2x for
  1-hour ones, split in ``cache_creation.ephemeral_5m/1h_input_tokens``) and ``cache_read_input_tokens``
  (0.1x). Usage keeps all three: ``prompt_tokens`` is their sum, ``cache_write_tokens`` and
  ``cached_tokens`` the parts, and :mod:`agent.models.prices` bills each at its rate; so *every* step
  pays its writes (1.25x on the new tail), which is what Anthropic charges. Caching still pays: a step
  re-sends the whole conversation, and all but the tail is read at 0.1x. Prompts below the model's
  minimum cacheable length (1-4k tokens) are neither written nor charged extra.
  Extended thinking is not requested, and Anthropic would fold it into ``output_tokens`` without a
  separate count, so ``reasoning_tokens`` stays 0 here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import httpx

from agent.events import Usage
from agent.messages import Message, ToolCall
from agent.models.adapter import HTTPModel, args_object, merge_turns, split_system
from agent.models.base import ModelError, ModelResponse, ModelSettings
from agent.models.error_bodies import error_body
from agent.models.http import endpoint_url
from agent.models.tokens import DEFAULT_MAX_TOKENS, count, estimated_usage

_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")
_CACHE = {"type": "ephemeral"}
_PROMPT_KEYS = ("messages", "system", "tools")
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


def _wire_id(call_id: str | None) -> str:
    return _ID_BAD.sub("_", call_id or "") or "toolu_missing"


def _blocks(m: Message) -> tuple[str, list[dict[str, Any]]]:
    if m.role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": _wire_id(m.tool_call_id),
            "content": m.content or "(no output)",
        }
        return "user", [result]
    blocks: list[dict[str, Any]] = []
    if m.content.strip():
        # Trailing whitespace on an assistant turn is rejected by the API.
        blocks.append({"type": "text", "text": m.content.rstrip() if m.role == "assistant" else m.content})
    for i in m.images if m.role == "user" else ():
        blocks.append(
            {"type": "image", "source": {"type": "base64", "media_type": i.media_type, "data": i.data}}
        )
    for c in m.tool_calls if m.role == "assistant" else ():
        blocks.append(
            {"type": "tool_use", "id": _wire_id(c.id), "name": c.name, "input": args_object(c.arguments)}
        )
    return m.role, blocks


def to_wire(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Neutral messages → (system text, Anthropic ``messages``) with roles merged as the API demands."""
    system_parts, turns = split_system(messages)
    out = merge_turns(map(_blocks, turns), "content")
    for turn in out:  # tool_result blocks must come first in a user message
        turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if out and out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": "(conversation continues)"}]})
    return "\n\n".join(system_parts), out


def to_wire_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": t["name"],
            "description": t.get("description") or t["name"],
            "input_schema": t.get("parameters") or {"type": "object", "properties": {}},
        }
        for t in tools
    ]


def parse_usage(raw: dict[str, Any] | None) -> Usage | None:
    """The API's usage (None if it sent none): the three input counts are disjoint, so they add up."""
    if not isinstance(raw, dict):
        return None
    uncached = count(raw.get("input_tokens"))
    written = count(raw.get("cache_creation_input_tokens"))
    read = count(raw.get("cache_read_input_tokens"))
    split = raw.get("cache_creation") if isinstance(raw.get("cache_creation"), dict) else {}
    usage = Usage(
        prompt_tokens=uncached + written + read,
        completion_tokens=count(raw.get("output_tokens")),
        cached_tokens=read,
        requests=1,
        cache_write_tokens=written,
        cache_write_1h_tokens=min(written, count(split.get("ephemeral_1h_input_tokens"))),
    )
    return usage if usage.total_tokens else None


class _Reply:
    """One reply, from the whole ``message`` object or from its stream of events: content blocks by
    index, streamed tool input arriving as ``partial_json`` pieces."""

    def __init__(self, owner: AnthropicModel) -> None:
        self.owner = owner
        self.blocks: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] = {}
        self.model = owner.name
        self.stop: str | None = None
        self.stopped = False  # message_stop came: the end, even from a gateway that sends no stop_reason
        self.size = 0
        """Characters of text and tool input streamed so far (agent.models.bounds)."""

    def cut(self) -> None:
        self.stop = "max_tokens"
        self.usage = {}  # its counts so far (output: 1) would bill what was read as free: estimated instead

    def add(self, event: str, data: dict[str, Any]) -> str:
        whole = not event  # not streamed: the message object itself
        kind = "message_start" if whole else data.get("type") or event
        if kind == "message_start":
            msg = data if whole else data.get("message") or {}
            self.model = msg.get("model") or self.model
            for i, block in enumerate(msg["content"] if whole else ()):
                self.blocks[i] = {**block, "_json": []}
            self._end(msg, msg)
        elif kind == "content_block_start":
            self.blocks[int(data.get("index", 0))] = {**(data.get("content_block") or {}), "_json": []}
        elif kind == "content_block_delta":
            return self._delta(int(data.get("index", 0)), data.get("delta") or {})
        elif kind == "message_delta":
            self._end(data, data.get("delta") or {})
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            err = data.get("error") or {}
            etype = err.get("type") or "error"
            raise self.owner._midstream(
                etype,
                err.get("message"),
                529 if etype == "overloaded_error" else None,
                etype in ("overloaded_error", "api_error", "rate_limit_error", "timeout_error"),
            )
        return ""

    @property
    def finished(self) -> bool:
        return self.stop is not None or self.stopped

    def _end(self, usage_in: dict[str, Any], stop_in: dict[str, Any]) -> None:
        self.stop = stop_in.get("stop_reason") or self.stop
        self.usage.update({k: v for k, v in (usage_in.get("usage") or {}).items() if v is not None})

    def _delta(self, index: int, delta: dict[str, Any]) -> str:
        slot = self.blocks.setdefault(index, {"type": "text", "text": "", "_json": []})
        kind = delta.get("type")
        if kind == "text_delta":
            piece = delta.get("text") or ""
            slot["text"] = (slot.get("text") or "") + piece
            self.size += len(piece)
            return piece
        if kind == "input_json_delta":
            slot["_json"].append(delta.get("partial_json") or "")
            self.size += len(slot["_json"][-1])
        return ""

    def response(self, body: dict[str, Any]) -> ModelResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        for idx in sorted(self.blocks):
            b = self.blocks[idx]
            if b.get("type") == "text":
                text.append(b.get("text") or "")
            elif b.get("type") == "tool_use":
                raw = "".join(b["_json"])
                if not raw.strip():
                    raw = json.dumps(b.get("input") or {})
                calls.append(
                    ToolCall(id=b.get("id") or f"toolu_{idx}", name=b.get("name") or "", arguments=raw)
                )
        reply = Message("assistant", "".join(text), tool_calls=calls)
        return ModelResponse(
            message=reply,
            usage=parse_usage(self.usage or None) or estimated_usage(body, _PROMPT_KEYS, reply),
            model=self.model,
            finish_reason=_STOP.get(self.stop or "", self.stop),
        )


def bearer_gateway(base_url: str, status: int, text: str) -> bool:
    """``status`` and body ``text`` are a 401 from a gateway that may read the key as a bearer token
    (:meth:`AnthropicModel._status_error`): not Anthropic's own API, nor its ``authentication_error``."""
    own = base_url.rstrip("/").removesuffix("/v1") == AnthropicModel.DEFAULT_BASE_URL
    return status == 401 and not own and error_body(text).kind != "authentication_error"


class AnthropicModel(HTTPModel):
    """One Claude model behind the Messages API; ``prompt_cache`` adds the breakpoints the module
    docstring describes, ``default_max_tokens`` goes when the settings give none (the API requires one)."""

    WIRE = "Anthropic Messages"
    KEY_ENV = "ANTHROPIC_API_KEY"
    BASE_ENV = "ANTHROPIC_BASE_URL"
    MODEL_HINT = "e.g. claude-sonnet-4-5"
    HEADERS = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    DEFAULT_BASE_URL = "https://api.anthropic.com"
    PROVIDER = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        prompt_cache: bool = True,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.base_url = self.base_url.removesuffix("/v1")
        self.prompt_cache = prompt_cache
        self.default_max_tokens = default_max_tokens
        self._bearer = False  # a gateway refused the key in x-api-key: it is sent as a bearer token

    def _headers(self, stream: bool = False) -> dict[str, str]:
        h = super()._headers(stream)
        if self._bearer and self._api_key:
            del h[self.KEY_HEADER]
            h["Authorization"] = f"Bearer {self._api_key}"
        return h

    def _status_error(self, status: int, headers: httpx.Headers, text: str) -> ModelError:
        """Gateways of this wire that take the key as a bearer token (Moonshot's and z.ai's Anthropic
        endpoints, as Claude Code's ANTHROPIC_AUTH_TOKEN sends it) answer x-api-key with 401: every call
        "rejected the API key" that was right. Behind a base URL of the operator's, a 401 is asked once
        more with the key as a bearer token, kept for later calls; Anthropic's own API takes x-api-key
        only (a bearer token there is an OAuth token), so neither it nor a gateway passing on its answer
        (an ``authentication_error`` in its body) is asked that way."""
        if not self._bearer and self._api_key and bearer_gateway(self.base_url, status, text):
            self._bearer = True
            return ModelError(
                f"{self.base_url} refused the key in x-api-key (HTTP 401); asking again with it as a bearer token",
                provider=self.provider,
                model=self.name,
                status=status,
                retryable=True,
                retry_after=0.01,
            )
        return super()._status_error(status, headers, text)

    def _body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], s: ModelSettings
    ) -> dict[str, Any]:
        system, wire = to_wire(messages)
        body: dict[str, Any] = {
            "model": self.name,
            "max_tokens": s.max_tokens or self.default_max_tokens,
            "messages": wire,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = to_wire_tools(tools)
        if self.prompt_cache:
            if tools:
                body["tools"][-1]["cache_control"] = _CACHE
            if wire:
                last = wire[-1]["content"][-1]
                wire[-1]["content"][-1] = {**last, "cache_control": _CACHE}
        if s.temperature is not None:
            body["temperature"] = min(s.temperature, 1.0)  # Anthropic's range is 0..1
        if s.stream:
            body["stream"] = True
        body.update(s.extra)
        return body

    def _url(self, stream: bool) -> str:
        return endpoint_url(self.base_url, "/v1/messages")  # a gateway's query stays after the path

    def _reply(self, **extra: Any) -> _Reply:
        return _Reply(self)
