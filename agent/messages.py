"""Provider-neutral conversation messages.

Each wire format (OpenAI, Anthropic, Gemini) maps to and from these, and sessions store them as JSON,
so history survives restarts and can move between providers.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """Raw JSON text as the model wrote it; validated only when the tool runs."""


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a user turn: base64 data and its media type (each adapter wraps it its own way)."""

    media_type: str
    data: str
    name: str = ""


@dataclass(slots=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    images: list[ImagePart] = field(default_factory=list)
    """User turns only: attached images, sent to models that can see them (:mod:`agent.models.vision`)."""
    reasoning: str = ""
    """Assistant turns only: the thinking a server sent apart from the answer as ``reasoning_content``.
    DeepSeek's thinking mode refuses a conversation whose tool-calling turns come back without it."""
    wire: Any = field(default=None, init=False, repr=False, compare=False)
    """A wire format's cache of this message (``agent.models.openai``), never stored or compared.

    A message is not changed once it is in a conversation (runs only append), and every model call
    sends the whole conversation: converting and JSON-encoding each message once instead of on every
    call was the largest part of the engine's per-step overhead that grows with the history
    (bench/loop_overhead.py). ``dataclasses.replace`` makes a copy without it."""

    def to_dict(self) -> dict[str, Any]:
        """Without the empty optional fields (no images, no tool calls, no tool call id, no name, no
        reasoning)."""
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [asdict(c) for c in self.tool_calls]
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            d["name"] = self.name
        if self.images:
            d["images"] = [asdict(i) for i in self.images]
        if self.reasoning:
            d["reasoning"] = self.reasoning
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        calls = [ToolCall(**c) for c in d.get("tool_calls") or []]
        return cls(
            role=d["role"],
            content=d.get("content") or "",
            tool_calls=calls,
            tool_call_id=d.get("tool_call_id"),
            name=d.get("name"),
            images=[ImagePart(**i) for i in d.get("images") or []],
            reasoning=d.get("reasoning") or "",
        )


_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str, *, keep_lone: bool = False) -> str:
    """``text`` as every store and Discord can take it: UTF-16 surrogate halves a server split across two
    stream events (JSON ``"\\ud83d"``, then ``"\\ude00"``) joined into their character, a lone half (an
    answer cut between the two) as U+FFFD. Measured: an answer ending in one half never reached its thread
    (the checkpoint's write failed, then every Discord write of it), and the turn hung until its time
    limit. ``keep_lone``: leave a lone half as it is (``agentbot ask`` writes it as its escape, and says so)."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode(
        "utf-16-le", "surrogatepass" if keep_lone else "replace"
    )
