"""Which models can see images, so attachments are sent as images only where they can be read.

The rules follow the providers' model pages (December 2026): OpenAI's gpt-4o, gpt-4.1, gpt-4.5, gpt-5
and o1/o3/o4 families (not the text-only o1-mini and o3-mini), every Claude 3 and later model, every
Gemini model. Models served by other OpenAI-compatible endpoints (Ollama, vLLM, llama.cpp) are taken
to be text-only unless the operator lists them in ``VISION_MODELS`` (names or ``*`` patterns, e.g.
``llava*,qwen2.5vl*``): sending an image to a text-only local model fails the whole call.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

_OPENAI = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-4-turbo", "o1", "o3", "o4")
_OPENAI_TEXT_ONLY = ("o1-mini", "o1-preview", "o3-mini", "gpt-5-chat-audio")


def accepts_images(provider: str, model: str, extra: Iterable[str] = ()) -> bool:
    """Whether ``model`` of ``provider`` (``openai``, ``anthropic``, ``gemini``) takes image input."""
    name = model.lower().rsplit("/", 1)[-1]  # OpenRouter-style vendor/model names
    if any(fnmatch.fnmatchcase(name, pattern.strip().lower()) for pattern in extra if pattern.strip()):
        return True
    if provider == "anthropic":
        return name.startswith("claude-") and not name.startswith(("claude-2", "claude-instant"))
    if provider == "gemini":
        return name.startswith("gemini-")
    if name.startswith(_OPENAI_TEXT_ONLY):
        return False
    return name.startswith(_OPENAI)
