"""Which models think before they answer, and how each provider is told how much to think.

Reasoning models bill hidden thinking as output, and their APIs differ from the others in ways that
fail a request outright: OpenAI's o-series and gpt-5 family reject ``max_tokens`` (they take
``max_completion_tokens``, which also bounds the thinking) and any ``temperature`` but the default.
Gemini 2.5 Pro and Flash think by default and count it inside ``maxOutputTokens``. So a cap meant for
the visible answer (``AGENT_MAX_TOKENS``, the page reader's notes) would be eaten by thinking and come
back empty: these models get :data:`HEADROOM` tokens on top of it.

``REASONING_EFFORT`` (minimal / low / medium / high) applies only to models that think by default;
models that do not think are never asked to. Anthropic models think only when asked (we do not ask),
and Gemini 3's ``thinkingLevel`` is not mapped yet: neither gets an effort parameter.
"""

from __future__ import annotations

import re
from typing import Literal

Effort = Literal["minimal", "low", "medium", "high"]

HEADROOM = 8192
"""Tokens of hidden thinking allowed on top of a cap meant for the visible output."""

_OPENAI = re.compile(r"^(o[1-9]|gpt-5)([-.]|$)", re.IGNORECASE)
_OPENAI_NO_MINIMAL = re.compile(r"^(o[1-9]|gpt-5\.\d)", re.IGNORECASE)  # o-series; gpt-5.1+ has "none"
_GEMINI = re.compile(r"^(models/)?gemini-2\.5-(pro|flash)(?!-lite)", re.IGNORECASE)
_GEMINI_BUDGET = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}


def openai_reasons(model: str) -> bool:
    """An OpenAI reasoning model by its API name (o1, o3, o4-mini, gpt-5, gpt-5-mini, gpt-5.1, ...)."""
    return bool(_OPENAI.match(model))


def openai_effort(model: str, effort: Effort) -> str:
    """``reasoning_effort`` as this model accepts it: o-series and gpt-5.1+ have no "minimal"."""
    if effort == "minimal" and _OPENAI_NO_MINIMAL.match(model):
        return "none" if model.lower().startswith("gpt-5.") else "low"
    return effort


def gemini_thinks(model: str) -> bool:
    """Gemini 2.5 Pro and Flash think unless told not to; Flash-Lite does not by default."""
    return bool(_GEMINI.match(model))


def gemini_budget(model: str, effort: Effort) -> int:
    """``thinkingBudget`` for an effort; Pro cannot switch thinking off, its least is 128 tokens."""
    budget = _GEMINI_BUDGET[effort]
    return max(budget, 128) if "-pro" in model.lower() else budget
