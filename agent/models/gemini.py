"""Google Gemini API (``models/{m}:generateContent`` and ``:streamGenerateContent?alt=sse``) over httpx.

Mapping to the neutral :class:`~agent.messages.Message` list, and why:

* System messages become ``systemInstruction``; assistant turns are role ``model``; tool results are
  ``functionResponse`` parts in a ``user`` turn (consecutive results merged into one turn, as Gemini
  pairs the N calls of a model turn with the N responses of the next turn by position and name).
* Gemini's function calls carry no id (the generativelanguage endpoint), yet the loop pairs calls and
  results by id. Ids are synthesised as ``gm_`` + sha256(conversation length, position, name, args):
  the same reply to the same conversation gets the same ids, and no two turns share one.
* ``functionResponse.response`` must be an object: a tool output that is a JSON object is sent as
  is (``{"error": ...}`` observations stay readable), anything else as ``{"result": text}``.
* Tool schemas go in ``parametersJsonSchema`` (full JSON Schema) rather than ``parameters`` (an OpenAPI
  subset that rejects ``additionalProperties``, ``$ref`` and friends).
* Thought signatures: Gemini 3 and later reject a replayed ``functionCall`` part without the
  ``thoughtSignature`` it came with. The neutral ``ToolCall`` has no field for it, so the adapter keeps
  signatures in memory by call id (bounded) and replays them; for a call it has no signature for
  (history from another model, or from before a restart) it sends Google's documented
  ``skip_thought_signature_validator`` sentinel on the turn's first call, for Gemini 3+ only.
* The key goes in the ``x-goog-api-key`` header, never in the URL, so it cannot leak through URLs in
  logs or error messages.

Usage: ``promptTokenCount`` includes ``cachedContentTokenCount`` (implicit caching, on by default for
2.5+); thinking tokens (``thoughtsTokenCount``) are billed as output, so they count as completion tokens.
Pro models bill a prompt above 200k tokens at a higher rate for all its tokens: genai-prices' tiers
(:mod:`agent.models.prices`) choose it per call from ``promptTokenCount``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.events import Usage
from agent.messages import Message, ToolCall
from agent.models.adapter import HTTPModel, args_object, json_object, merge_turns, split_system
from agent.models.base import ModelResponse, ModelSettings
from agent.models.http import endpoint_url
from agent.models.reasoning import HEADROOM, gemini_budget, gemini_thinks
from agent.models.tokens import DEFAULT_MAX_TOKENS, count, estimated_usage

SKIP_SIGNATURE = "skip_thought_signature_validator"

_VERSION_RE = re.compile(r"^gemini-(\d+)")
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "MALFORMED_FUNCTION_CALL": "malformed_function_call",
}
_MAX_SIGNATURES = 4096
_PROMPT_KEYS = ("contents", "systemInstruction", "tools")


def synth_call_id(turn: int, position: int, name: str, args: str) -> str:
    digest = hashlib.sha256(f"{turn}|{position}|{name}|{args}".encode()).hexdigest()
    return f"gm_{digest[:20]}"


def needs_signatures(model: str) -> bool:
    m = _VERSION_RE.match(model.removeprefix("models/"))
    return bool(m) and int(m.group(1)) >= 3


def to_wire(
    messages: Sequence[Message], signatures: dict[str, str] | None = None, *, sentinel: bool = False
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Neutral messages → (``systemInstruction`` or None, ``contents``)."""
    signatures = signatures or {}
    system, turns = split_system(messages)
    names: dict[str, str] = {}
    wire: list[tuple[str, list[dict[str, Any]]]] = []
    for m in turns:
        parts: list[dict[str, Any]] = []
        if m.role == "tool":
            role = "user"
            name = m.name or names.get(m.tool_call_id or "", "") or "tool"
            parts.append({"functionResponse": {"name": name, "response": json_object(m.content, "result")}})
        elif m.role == "assistant":
            role = "model"
            if m.content:
                parts.append({"text": m.content})
            for i, c in enumerate(m.tool_calls):
                names[c.id] = c.name
                part: dict[str, Any] = {"functionCall": {"name": c.name, "args": args_object(c.arguments)}}
                sig = signatures.get(c.id)
                if sig:
                    part["thoughtSignature"] = sig
                elif sentinel and i == 0:
                    part["thoughtSignature"] = SKIP_SIGNATURE
                parts.append(part)
        else:
            role = "user"
            if m.content:
                parts.append({"text": m.content})
            parts += [{"inlineData": {"mimeType": i.media_type, "data": i.data}} for i in m.images]
        wire.append((role, parts))
    instruction = {"parts": [{"text": "\n\n".join(system)}]} if system else None
    return instruction, merge_turns(wire, "parts")


def to_wire_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    decls = []
    for t in tools:
        d: dict[str, Any] = {"name": t["name"], "description": t.get("description") or t["name"]}
        params = t.get("parameters")
        if params and params.get("properties"):
            d["parametersJsonSchema"] = params
        decls.append(d)
    return [{"functionDeclarations": decls}]


def parse_usage(raw: dict[str, Any] | None) -> Usage | None:
    """``usageMetadata`` (None if absent or all zero). The prompt includes the cached part; tool-use
    prompt tokens (a built-in tool's results) are billed as input; thoughts are billed as output."""
    if not isinstance(raw, dict):
        return None
    thoughts = count(raw.get("thoughtsTokenCount"))
    usage = Usage(
        prompt_tokens=count(raw.get("promptTokenCount")) + count(raw.get("toolUsePromptTokenCount")),
        completion_tokens=count(raw.get("candidatesTokenCount")) + thoughts,
        cached_tokens=count(raw.get("cachedContentTokenCount")),
        requests=1,
        reasoning_tokens=thoughts,
    )
    return usage if usage.total_tokens else None


@dataclass
class _Turn:
    """One reply being assembled from one or many ``GenerateContentResponse`` objects."""

    owner: GeminiModel
    turn: int
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    signatures: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    finish: str | None = None
    model: str | None = None
    blocked: str | None = None
    size: int = 0
    """Characters of text and call arguments so far (agent.models.bounds)."""

    def cut(self) -> None:
        self.finish = "MAX_TOKENS"
        self.usage = None  # the counts so far are not the answer's: estimated from what was read instead

    def add(self, _event: str, data: dict[str, Any]) -> str:
        if "error" in data and not data.get("candidates"):
            err = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
            code = int(err.get("code") or 500)
            what = f"an error ({err.get('status') or code})"
            raise self.owner._midstream(what, err.get("message"), code, code == 429 or code >= 500)
        if data.get("usageMetadata"):
            self.usage = data["usageMetadata"]
        self.model = data.get("modelVersion") or self.model
        feedback = data.get("promptFeedback") or {}
        if feedback.get("blockReason"):
            self.blocked = feedback["blockReason"]
        new: list[str] = []
        for cand in (data.get("candidates") or [])[:1]:
            if cand.get("finishReason"):
                self.finish = cand["finishReason"]
            for part in (cand.get("content") or {}).get("parts") or ():
                if "functionCall" in part:
                    fc = part["functionCall"] or {}
                    args = json.dumps(fc.get("args") or {}, ensure_ascii=False)
                    name = fc.get("name") or ""
                    cid = fc.get("id") or synth_call_id(self.turn, len(self.calls), name, args)
                    # A name or id that is no text is a bad payload here, not a TypeError when the reply is counted.
                    if not isinstance(name, str) or not isinstance(cid, str):
                        raise TypeError("a functionCall whose name or id is not text")
                    self.calls.append(ToolCall(id=cid, name=name, arguments=args))
                    self.size += len(args)
                    if part.get("thoughtSignature"):
                        self.signatures[cid] = part["thoughtSignature"]
                elif part.get("text") and not part.get("thought"):
                    new.append(part["text"])
        piece = "".join(new)
        if piece:
            self.text.append(piece)
            self.size += len(piece)
        return piece

    @property
    def finished(self) -> bool:
        return self.finish is not None or self.blocked is not None

    def response(self, body: dict[str, Any]) -> ModelResponse:
        self.owner._remember(self.signatures)
        finish = self.finish
        if self.calls and finish in (None, "STOP"):
            reason: str | None = "tool_calls"
        elif self.blocked and not finish:
            reason = "content_filter"
        else:
            reason = _FINISH.get(finish or "", finish.lower() if finish else None)
        reply = Message("assistant", "".join(self.text), tool_calls=list(self.calls))
        return ModelResponse(
            message=reply,
            usage=parse_usage(self.usage) or estimated_usage(body, _PROMPT_KEYS, reply),
            model=self.model or self.owner.name,
            finish_reason=reason,
        )


class GeminiModel(HTTPModel):
    """One Gemini model behind the Gemini API (AI Studio key); ``models/gemini-2.5-flash`` is accepted."""

    WIRE = "Gemini generateContent"
    KEY_ENV = "GEMINI_API_KEY"
    BASE_ENV = "GEMINI_BASE_URL"
    KEY_HEADER = "x-goog-api-key"
    DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
    PROVIDER = "gemini"

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name.removeprefix("models/"), **kwargs)
        self._signatures: OrderedDict[str, str] = OrderedDict()
        self.default_max_tokens = DEFAULT_MAX_TOKENS
        """Sent when the settings give no cap, so the budget's hold of it bounds the call."""

    def _url(self, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return endpoint_url(self.base_url, f"/models/{self.name}:{method}")  # a gateway's query stays last

    def _body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], s: ModelSettings
    ) -> dict[str, Any]:
        instruction, contents = to_wire(messages, self._signatures, sentinel=needs_signatures(self.name))
        body: dict[str, Any] = {"contents": contents}
        if instruction:
            body["systemInstruction"] = instruction
        if tools:
            body["tools"] = to_wire_tools(tools)
        config: dict[str, Any] = {}
        if s.temperature is not None:
            config["temperature"] = s.temperature
        thinks = gemini_thinks(self.name)
        # 2.5 Pro and Flash count their thinking inside this cap
        config["maxOutputTokens"] = (s.max_tokens or self.default_max_tokens) + (HEADROOM if thinks else 0)
        if thinks and s.reasoning_effort is not None:
            config["thinkingConfig"] = {"thinkingBudget": gemini_budget(self.name, s.reasoning_effort)}
        if config:
            body["generationConfig"] = config
        body.update(s.extra)
        return body

    def _remember(self, signatures: dict[str, str]) -> None:
        for cid, sig in signatures.items():
            self._signatures[cid] = sig
            self._signatures.move_to_end(cid)
        while len(self._signatures) > _MAX_SIGNATURES:
            self._signatures.popitem(last=False)

    def _call_args(self, messages: Sequence[Message]) -> dict[str, Any]:
        return {"turn": len(messages)}  # thought signatures are kept per turn

    def _reply(self, turn: int) -> _Turn:  # type: ignore[override]
        return _Turn(self, turn)
