"""What a provider's error body says: one reading of every server's error shape, for the one mapping
from an HTTP status and error body to this library's errors (:mod:`agent.models.adapter`) and for
``agentbot doctor``."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

_BAD_KEY_RE = re.compile(r"API[_ ]KEY[_ ]INVALID|API key not valid|API key expired", re.I)


@dataclass(slots=True)
class ErrorBody:
    """What a provider's error body said, in the terms the one status-to-error mapping needs."""

    message: str
    kind: str = ""
    """The provider's error type or status ("overloaded_error", "RESOURCE_EXHAUSTED"), shown in brackets."""
    bad_key: bool = False
    """The body says the key is wrong, whatever the status (Gemini answers 400)."""
    retry_after: float | None = None
    """A wait the body asks for (Gemini's RetryInfo), used when no header gives one."""


def error_body(text: str) -> ErrorBody:
    """``{"error": {"type" or "status", "message", "details"}}`` (OpenAI, Anthropic, Google and most
    compatible servers; some proxies wrap it in a list), a string ``error``, or plain text. Google's
    ``details`` say why (ErrorInfo's reason) and how long to wait (RetryInfo)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # a hostile gateway's "[" * 100_000 nests past json's limit
        return ErrorBody(_page_text(text)[:300] or "(no details)")
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict) and isinstance(data, dict) and not isinstance(err, str):
        # vLLM's errors are top-level ({"object": "error", "message", "type"}); FastAPI's {"detail"}.
        said = data.get("message") or data.get("detail")
        if isinstance(said, str):
            return ErrorBody(said[:300], str(data.get("type") or ""))
    if not isinstance(err, dict):
        return ErrorBody((err if isinstance(err, str) else str(data))[:300])
    kind = err.get("type") or err.get("status") or ""
    body = ErrorBody(
        _with_provider(str(err.get("message") or err), err)[:300], "" if kind in _NONE else str(kind)
    )
    reason = ""
    for d in err.get("details") or ():
        if not isinstance(d, dict):
            continue
        reason = str(d.get("reason") or reason)
        delay = d.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            with contextlib.suppress(ValueError):
                body.retry_after = max(0.0, float(delay[:-1]))
    body.bad_key = bool(_BAD_KEY_RE.search(f"{reason} {body.message}"))
    return body


_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_MARKUP_RE = re.compile(r"<(script|style)\b.*?</\1>|<[^>]*>", re.I | re.S)


def _page_text(text: str) -> str:
    """A proxy's HTML error page (nginx, Cloudflare) in words: its title, else its text without tags;
    the first 300 characters of markup were all an operator saw."""
    if "<" not in text[:200]:
        return text.strip()
    title = _TITLE_RE.search(text)
    return " ".join((title.group(1) if title else _MARKUP_RE.sub(" ", text)).split())


_NONE = ("None", "null")
"""LiteLLM's proxy writes a missing error type as the string "None": shown as "HTTP 429 (None)"."""


def _with_provider(message: str, err: dict[str, Any]) -> str:
    """OpenRouter's "Provider returned error" with what the provider said (``metadata.raw``, its own
    error body or text) and its name: the bare words were all an operator saw, for every upstream
    refusal alike (a rate limit, a context too long, a model taken down)."""
    meta = err.get("metadata")
    raw = meta.get("raw") if isinstance(meta, dict) else None
    if raw is None or isinstance(raw, bool):
        return message
    said = error_body(raw if isinstance(raw, str) else json.dumps(raw)).message
    who = meta.get("provider_name") if isinstance(meta, dict) else None
    return f"{message} ({who}: {said})" if isinstance(who, str) and who else f"{message} ({said})"
