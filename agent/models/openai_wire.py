"""The OpenAI Chat Completions wire format: messages and tools as the API takes them, usage as servers
report it, and the odd but legal shapes real servers send (arguments as objects, content as parts,
``<think>`` blocks, parallel calls streamed at one index).

Why apart from the adapter (``openai.py``): these are pure functions of JSON, tested on their own, and
the adapter is the HTTP conversation around them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.events import Usage
from agent.messages import Message, well_formed
from agent.models.base import ModelSettings
from agent.models.openai_calls import wire_id
from agent.models.tokens import CHARS_PER_TOKEN, MAX_REPORTED_TOKENS, count, estimated_usage

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""The JSON httpx's ``json=`` writes (the same options, so the same text), with the encoder made once:
httpx makes a new one for every request."""


class _Wire:
    """One message in this wire format, as a dict (for local token counts) and as its JSON text."""

    __slots__ = ("data", "text")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data, self.text = data, _encode(data)


def _wire(m: Message) -> _Wire:
    """``m``'s wire form, made on its first call and kept on the message (:attr:`Message.wire`): every
    call sends the whole conversation, and converting and encoding all of it again on every step was
    the part of the engine's overhead that grows with the history."""
    w = m.wire
    if type(w) is _Wire:
        return w
    role = m.role
    d: dict[str, Any] = {"role": role, "content": m.content or ""}
    if role == "tool":
        d["tool_call_id"] = wire_id(m.tool_call_id or "")
        if m.name:
            d["name"] = m.name
    elif role == "assistant":
        if m.tool_calls:
            d["tool_calls"] = [
                {
                    "id": wire_id(c.id),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments or "{}"},
                }
                for c in m.tool_calls
            ]
    elif role == "user" and m.images:
        d["content"] = [
            {"type": "text", "text": m.content or ""},
            *(
                {"type": "image_url", "image_url": {"url": f"data:{i.media_type};base64,{i.data}"}}
                for i in m.images
            ),
        ]
    w = m.wire = _Wire(d)
    return w


def to_wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [_wire(m).data for m in messages]


def encode_body(
    body: dict[str, Any], messages: Sequence[Message], s: ModelSettings, reasoning: bool = False
) -> bytes:
    """``body`` as JSON with ``messages`` spliced in from each message's cached text, and ``tools`` from
    :func:`_tools_text`: the same JSON as encoding the whole body, but for the order of its keys
    (``tools``, then ``messages``, go last). ``messages`` set through ``s.extra`` is sent as is.
    ``reasoning``: every assistant turn carries ``reasoning_content`` (its own, else empty), as
    DeepSeek's thinking mode requires ("Missing `reasoning_content` field in the assistant message",
    HTTP 400, at a run's second step); sent only to such servers, since OpenAI refuses the field."""
    if "messages" in s.extra:
        return _encode(body).encode()
    tools = body.get("tools")
    text = _tools_text(tools) if isinstance(tools, list) and "tools" not in s.extra else None
    rest = _encode({k: v for k, v in body.items() if k != "messages" and (text is None or k != "tools")})
    head = rest[:-1] + "," if len(rest) > 2 else "{"
    if text is not None:
        head += '"tools":' + text + ","
    texts = [_wire(m).text for m in messages]
    if reasoning:
        texts = [
            t[:-1] + ',"reasoning_content":' + _encode(m.reasoning) + "}" if m.role == "assistant" else t
            for m, t in zip(messages, texts, strict=True)
        ]
    return (head + '"messages":[' + ",".join(texts) + "]}").encode()


_TOOLS_TEXT: dict[tuple[Any, ...], tuple[list[Any], str]] = {}
_TOOLS_KEPT = 64


def _tools_text(tools: list[Any]) -> str | None:
    """The JSON of a request's tool list, encoded once for as long as its specs are the same objects.

    Every call of a run, and every run of a server, sends the same specs (the bot's 11 tools are
    5.5 kB of JSON): encoding them again took ~150 µs per model call under load, about 4% of the bot's
    CPU per agent step in ``bench/bot_load.py``. The key holds each spec's strings, and the identity of
    its other values (the parameter schemas, which tools never change once made); the entry keeps those
    values alive, so an identity is never reused while it is a key. None: a shape not made by
    :func:`to_wire_tools`, encoded as usual."""
    key: list[tuple[Any, ...]] = []
    held: list[Any] = []
    for t in tools:
        spec = t.get("function") if type(t) is dict and len(t) == 2 and t.get("type") == "function" else None
        if type(spec) is not dict:
            return None
        one: list[Any] = []
        for k, v in spec.items():
            if type(v) is str:
                one += (k, v)
            else:
                one += (k, id(v))
                held.append(v)
        key.append(tuple(one))
    frozen = tuple(key)
    hit = _TOOLS_TEXT.get(frozen)
    if hit is not None:
        return hit[1]
    text = _encode(tools)
    if len(_TOOLS_TEXT) >= _TOOLS_KEPT:  # the oldest goes: spec sets change rarely (MCP servers, /config)
        del _TOOLS_TEXT[next(iter(_TOOLS_TEXT))]
    _TOOLS_TEXT[frozen] = (held, text)
    return text


def to_wire_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": t} for t in tools]


def parse_usage(raw: dict[str, Any] | None) -> Usage | None:
    """The server's usage, or None if it reported none (no object, or nothing but zeros)."""
    if not isinstance(raw, dict):
        return None
    prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens"))
    if not prompt and not completion:
        return None
    details, out_details = raw.get("prompt_tokens_details"), raw.get("completion_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    reasoning = _count(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    return Usage(prompt, completion, cached or _count(raw.get("prompt_cache_hit_tokens")), 1, reasoning)


def _count(value: Any) -> int:
    # Servers send plain non-negative ints: those skip count()'s checks (it runs ~5 times per call).
    return value if type(value) is int and 0 <= value <= MAX_REPORTED_TOKENS else count(value)


def content_text(value: Any) -> str:
    """A message's ``content`` as text: a string, or the ``text`` parts of a list of typed parts
    (Mistral's reasoning models send ``[{"type": "thinking", ...}, {"type": "text", "text": ...}]``),
    whose thinking is not part of the answer. A list was an AttributeError traceback."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            p["text"]
            for p in value
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


_OPEN, _CLOSE = "<think>", "</think>"
_START, _THINKING, _AFTER, _PLAIN, _ANSWER = range(5)

HOLD_CHARS, HOLD_SECONDS = 2_000, 3.0
"""How much of a reply that opens without ``<think>`` is held back from the live view, in case a bare
``</think>`` shows it was thinking (:class:`ThinkFilter`): at most 2,000 characters (~500 tokens) and
3 s from its first words, whichever ends first. A model that does not think is then seen writing
within 3 s (a hosted one writes ~1,200 characters in that time, so held by characters alone most
answers showed only when done, and ``--show-text`` showed nothing live); R1's first thought is hidden
when it is that short, and beyond it shows live (but never in the answer) as it did before."""


class ThinkFilter:
    """A reply's text without its ``<think>...</think>`` block, as it streams (what to show now, from
    :meth:`feed` and :meth:`end`) and whole (:attr:`text`, the answer): one filter for both, so the live
    view never shows what the answer drops. vLLM without a reasoning parser, llama.cpp with
    ``--reasoning-format none`` and older Ollama leave DeepSeek-R1's or Qwen3's thinking in the content;
    it is not the answer, and sent back it is a waste the model's makers advise against.

    Decisions: a block counts only where the reply opens with it (after any whitespace): a ``<think>``
    after answer text is the answer talking about the tag and is kept. A bare ``</think>`` with no
    ``<think>`` before it closes a block the server's template opened in the prompt (R1's does): the text
    before it is dropped from the answer. Live, the start of a reply that does not open with ``<think>``
    is held back until a ``</think>`` shows it to be thinking (never shown) or the bound
    (:data:`HOLD_CHARS`, :data:`HOLD_SECONDS` by ``clock``) or the reply's end shows it to be answer
    (shown at once): bounded, so a model that never thinks is still seen writing; thinking longer than
    the bound shows live but never reaches the answer. The model is then filtered with ``opened=True`` (:attr:`bare_close`), which holds its
    text back until the ``</think>``, however long (a reply without one is all answer). A block that
    never closes (the output cap reached mid-thought) leaves an empty answer, which the loop explains,
    rather than raw thinking. Tags split across chunks are held back until they are whole."""

    __slots__ = (
        "_clock",
        "_held",
        "_kept",
        "_mode",
        "_opened",
        "_pending",
        "_pending_chars",
        "_pending_since",
        "bare_close",
    )

    def __init__(self, *, opened: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self._mode = _THINKING if opened else _START
        self._opened = opened
        self._held = ""  # a partial tag (or, in an assumed block, its text) not decided yet
        self._kept: list[str] = []  # the answer so far
        self._pending: list[str] | None = []  # the start of a plain reply, not shown yet (None: shown)
        self._pending_chars = 0
        self._pending_since: float | None = None
        self._clock = clock
        self.bare_close = False

    @property
    def text(self) -> str:
        """The answer, an emoji split across two events joined again (:func:`agent.messages.well_formed`)."""
        return well_formed("".join(self._kept), keep_lone=True)

    def feed(self, piece: str) -> str:
        """``piece`` of the stream in; the part of it (and of what was held back) to show now out."""
        mode = self._mode
        if mode == _ANSWER:
            self._kept.append(piece)
            return piece
        if mode == _START:
            held = self._held + piece
            head = held.lstrip()
            if head.startswith(_OPEN):
                self._mode, self._held = _THINKING, ""
                return self.feed(head[len(_OPEN) :])
            if not head or _OPEN.startswith(head):
                self._held = held
                return ""
            self._mode, self._held = _PLAIN, ""
            return self.feed(held)
        if mode == _THINKING:
            seen = len(self._held)
            held = self._held + piece
            at = held.find(_CLOSE, max(0, seen - len(_CLOSE) + 1))
            if at < 0:
                # Only a partial closing tag is worth keeping, unless the block may turn out to be the answer.
                self._held = held if self._opened else held[-(len(_CLOSE) - 1) :]
                return ""
            self._mode, self._held = _AFTER, ""
            return self.feed(held[at + len(_CLOSE) :])
        if mode == _AFTER:
            piece = piece.lstrip()
            if not piece:
                return ""
            self._mode = _ANSWER
            return self.feed(piece)
        # _PLAIN: an answer so far, unless a bare </think> shows it was thinking.
        seen = self._held + piece  # _held: the end of the text so far, where a split tag would start
        self._kept.append(piece)
        if _CLOSE not in seen:
            self._held = seen[-(len(_CLOSE) - 1) :]
            return self._show(piece)
        self._held = ""
        head, _, rest = self.text.partition(_CLOSE)
        if _OPEN in head:
            self._mode = _ANSWER
            return self._show(piece, at_once=True)
        # Thinking: what was held back of it is never shown.
        self.bare_close, self._kept, self._mode, self._pending = True, [], _AFTER, None
        return self.feed(rest)

    def _show(self, piece: str, *, at_once: bool = False) -> str:
        """``piece`` of a plain reply, held back while the reply is short enough to be thinking."""
        pending = self._pending
        if pending is None:
            return piece
        pending.append(piece)
        self._pending_chars += len(piece)
        now = self._clock()
        if self._pending_since is None:
            self._pending_since = now
        if not at_once and self._pending_chars <= HOLD_CHARS and now - self._pending_since < HOLD_SECONDS:
            return ""
        self._pending = None
        return "".join(pending)

    def end(self) -> str:
        """What was held back and turns out to be answer, once the reply is over."""
        held, self._held = self._held, ""
        if self._mode == _START or (self._mode == _THINKING and self._opened):
            self._kept.append(held)
            return held
        if self._mode == _PLAIN:
            return self._show("", at_once=True)
        return ""


def without_thinking(text: str) -> str:
    """``text`` without its ``<think>...</think>`` block (:class:`ThinkFilter`)."""
    f = ThinkFilter()
    f.feed(text)
    f.end()
    return f.text


def usage_of(raw: dict[str, Any] | None, body: dict[str, Any], reply: Message, thought: int = 0) -> Usage:
    """Reported usage, else counted locally (marked estimated): llama-cpp-python's streams send none.
    ``thought``: characters of reasoning the reply carried apart from its text (``reasoning_content``),
    billed as output; counted without them, a thinking model's estimate was its answer alone."""
    if (usage := parse_usage(raw)) is not None:
        return usage
    usage = estimated_usage(body, ("messages", "tools"), reply)
    if thought:
        thinking = -(-thought // CHARS_PER_TOKEN)
        usage.completion_tokens += thinking
        usage.reasoning_tokens += thinking
    return usage


def reasoning_text(part: dict[str, Any]) -> str:
    """The hidden reasoning of a delta or message: ``reasoning_content`` (DeepSeek, vLLM, llama.cpp, LM
    Studio) or ``reasoning`` (OpenRouter, Ollama); not part of the answer."""
    value = part.get("reasoning_content") or part.get("reasoning")
    return value if type(value) is str else ""


def reported_usage(data: dict[str, Any]) -> dict[str, Any] | None:
    """The usage a reply or stream chunk reports, in OpenAI's shape: ``usage``, else Groq's
    ``x_groq.usage`` (its streams' only count when ``include_usage`` is not honoured), else llama.cpp
    server's ``timings`` (``prompt_n`` evaluated + ``cache_n`` reused prompt tokens, ``predicted_n``
    out). Both were ignored, so those calls were counted locally and shown as estimated."""
    if usage := data.get("usage"):
        return usage
    if isinstance(groq := data.get("x_groq"), dict) and isinstance(groq.get("usage"), dict):
        return groq["usage"]
    if isinstance(t := data.get("timings"), dict) and "predicted_n" in t:
        cache = t.get("cache_n")
        cached = cache if type(cache) is int and cache > 0 else 0
        prompt = t.get("prompt_n")
        return {
            "prompt_tokens": (prompt if type(prompt) is int and prompt > 0 else 0) + cached,
            "completion_tokens": t.get("predicted_n"),
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    return None
