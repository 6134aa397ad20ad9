"""What every HTTP model adapter shares: its settings, key masking, and the errors that are not wire-specific."""

from __future__ import annotations

import re
from typing import ClassVar

import httpx

from agent.models.base import ModelError
from agent.models.http import transport_error

SECRET_RE = re.compile(r"(sk-ant|sk|gsk|pk|rk)-[-_A-Za-z0-9*]{6,}|AIza[-_A-Za-z0-9]{20,}")


class HTTPModel:
    """Base of the OpenAI-compatible, Anthropic and Gemini adapters."""

    WIRE: ClassVar[str] = "model"
    """How the wire format is named in messages ("Anthropic Messages")."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None,
        client: httpx.AsyncClient,
        provider: str,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.name = name
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._client = client
        self.max_attempts = max(1, max_attempts)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}({self.name!r}, base_url={self.base_url!r})"

    def _mask(self, text: str) -> str:
        """Servers sometimes echo the key they rejected: never pass it on."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return SECRET_RE.sub("***", text)

    def _transport_error(self, e: httpx.HTTPError) -> ModelError:
        return transport_error(e, name=self.name, base_url=self.base_url, provider=self.provider)

    def _bad_payload(self) -> ModelError:
        return ModelError(
            f"{self.name}: the server sent a response that is not {self.WIRE} JSON",
            provider=self.provider,
            model=self.name,
            retryable=True,
        )
