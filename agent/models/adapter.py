"""What every HTTP model adapter shares: its settings, key masking, and the errors that are not wire-specific."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import httpx
from httpx_sse import EventSource

from agent.messages import Message
from agent.models.base import ModelChunk, ModelError, ModelSettings
from agent.models.http import transport_error, with_retries

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

    def _status_error(self, status: int, headers: httpx.Headers, text: str) -> ModelError:
        raise NotImplementedError

    def _body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], s: ModelSettings
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _call_args(self, messages: Sequence[Message]) -> dict[str, Any]:
        """Extra keyword arguments for one call's attempts (Gemini numbers turns); none by default."""
        return {}

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], settings: ModelSettings
    ) -> AsyncIterator[ModelChunk]:
        body = self._body(messages, tools, settings)
        extra = self._call_args(messages)
        async for chunk in with_retries(
            lambda: (
                self._stream_once(body, settings, **extra)  # type: ignore[attr-defined]
                if settings.stream
                else self._complete_once(body, settings, **extra)  # type: ignore[attr-defined]
            ),
            name=self.name,
            provider=self.provider,
            max_attempts=self.max_attempts,
            initial=self.backoff_initial,
            maximum=self.backoff_max,
        ):
            yield chunk

    async def _sse(
        self, url: str, body: dict[str, Any], headers: dict[str, str], read_timeout: float | None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """POST and yield each server-sent event as (event name, JSON object); HTTP and transport
        failures become this adapter's errors, a malformed event a retryable one."""
        try:
            async with self._client.stream(
                "POST", url, json=body, headers=headers, timeout=read_timeout or httpx.USE_CLIENT_DEFAULT
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise self._status_error(resp.status_code, resp.headers, resp.text)
                async with contextlib.aclosing(EventSource(resp).aiter_sse()) as events:
                    async for sse in events:
                        if not sse.data:
                            continue
                        try:
                            data = json.loads(sse.data)
                        except ValueError as e:
                            raise self._bad_payload() from e
                        if not isinstance(data, dict):
                            raise self._bad_payload()
                        yield sse.event, data
        except httpx.HTTPError as e:
            raise self._transport_error(e) from e
