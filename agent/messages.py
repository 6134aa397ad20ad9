"""Provider-neutral conversation messages.

Each wire format (OpenAI, Anthropic, Gemini) maps to and from these, and sessions store them as JSON,
so history survives restarts and can move between providers.
"""

from __future__ import annotations

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

    def to_dict(self) -> dict[str, Any]:
        """Without the empty optional fields (no images, no tool calls, no tool call id, no name)."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != []}

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
        )
