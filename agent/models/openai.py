"""OpenAI-compatible Chat Completions (OpenAI, OpenRouter, Groq, DeepSeek, Together, Ollama, vLLM,
LM Studio, llama.cpp) over httpx, streaming (SSE) or not.

Tolerances learnt from real servers: assistant turns with tool calls send ``content: ""`` rather than
``null`` (llama-cpp-python answers 500 to null); usage may arrive in a final chunk with no choices
(``stream_options.include_usage``; a server that refuses those is asked without them), in the last
choice chunk, or not at all (then it is counted locally and marked estimated: :mod:`agent.models.tokens`);
cached prompt tokens are ``prompt_tokens_details.cached_tokens`` (OpenAI) or ``prompt_cache_hit_tokens``
(DeepSeek); reasoning models (gpt-5, o-series, gpt-oss on Groq) include hidden reasoning in
``completion_tokens`` and report it as ``completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from agent.messages import Message, ToolCall
from agent.models.adapter import HTTPModel
from agent.models.base import (
    ContextOverflowError,
    ModelChunk,
    ModelError,
    ModelResponse,
    ModelSettings,
    NoApiAtURLError,
    TextChunk,
    ThinkingChunk,
)
from agent.models.bounds import answer_chars, answer_cut, fragment_chars
from agent.models.error_bodies import error_body
from agent.models.http import ERROR_BODY_BYTES, bounded_sse, endpoint_url, read_text, whole_answer_bytes
from agent.models.openai_calls import ToolCallAssembler, arguments_text
from agent.models.openai_wire import (
    ThinkFilter,
    content_text,
    encode_body,
    reasoning_text,
    reported_usage,
    to_wire_messages,
    to_wire_tools,
    usage_of,
    without_thinking,
)
from agent.models.reasoning import HEADROOM, openai_effort, openai_reasons
from agent.models.server_fixes import refusal_fix, small_context_fix

log = structlog.get_logger("agent.models")


def key_headers(base_url: str, key: str | None) -> dict[str, str]:
    """How a Chat Completions server is sent the key: ``Authorization: Bearer``, or Azure OpenAI's own
    ``api-key`` header where the base URL carries Azure's ``api-version`` query: its deployment URLs read
    a key only from ``api-key`` (a bearer token there must be an Entra ID token), so every call was a
    401 "rejected the API key" for a key that was right."""
    if not key:
        return {}
    if "api-version=" in urlsplit(base_url).query:
        return {"api-key": key}
    return {"Authorization": f"Bearer {key}"}


NO_PATH = "unexpected endpoint or method"
"""LM Studio's answer, with HTTP 200, to a path it does not serve (a base URL without /v1)."""


class OpenAIChatModel(HTTPModel):
    """One model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    WIRE = "Chat Completions"
    KEY_ENV = "OPENAI_API_KEY (or this provider's key)"
    BASE_ENV = "OPENAI_BASE_URL"
    DEFAULT_BASE_URL = "https://api.openai.com/v1"
    TOOLS_MAY_FAIL = True

    def __init__(
        self,
        name: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        client: httpx.AsyncClient,
        provider: str = "openai",
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        default_max_tokens: int | None = None,
    ) -> None:
        """``default_max_tokens``: the cap sent when the settings give none (the factory sets
        :data:`~agent.models.tokens.DEFAULT_MAX_TOKENS` for a model with a known price)."""
        super().__init__(
            name,
            base_url=base_url,
            api_key=api_key,
            client=client,
            provider=provider,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self.default_max_tokens = default_max_tokens
        self._warned_temperature = False
        self._think_opened = False  # it sent a bare </think>: its template opens the block in the prompt
        self._stream_options = True  # False once the server refused them
        # Made once: per-request header dicts were merged by httpx on every call (Content-Type: the body's).
        # The body is sent as encoded bytes (encode_body), so the JSON content type is ours to set.
        self._json_headers = {"Content-Type": "application/json"} | key_headers(self.base_url, api_key)
        self._sse_headers = self._json_headers | {"Accept": "text/event-stream"}
        self._url: tuple[str, httpx.URL] | None = None
        # Sent back where the server sends it (encode_body); on DeepSeek's API from a resumed turn's first call
        self._reasoning_back = urlsplit(self.base_url).hostname == "api.deepseek.com"

    def _endpoint(self) -> httpx.URL:
        """``/chat/completions`` as a parsed URL, made once per base URL: httpx parses a string URL on
        every request (~35 µs, a third of building the request; ``bench/bot_load.py``)."""
        if self._url is None or self._url[0] != self.base_url:
            self._url = (self.base_url, httpx.URL(endpoint_url(self.base_url, "/chat/completions")))
        return self._url[1]

    def _status_error(self, status: int, headers: httpx.Headers, text: str) -> ModelError:
        """llama.cpp's server refuses every request offering tools with HTTP 500 without ``--jinja`` (and,
        in builds before mid-2025, when streamed); Ollama a model larger than the machine's memory: retried
        as a 5xx, each run waited ~17 s to end with the server's words and no fix."""
        if (fix := refusal_fix(text)) is None:
            error = super()._status_error(status, headers, text)
            if (small := small_context_fix(text)) is None or not isinstance(error, ContextOverflowError):
                return error
            # Not "too long for this model" (at 900 tokens, for a model of 128k): the server's own limit
            return ContextOverflowError(
                f"{self.name} at {self.base_url}: the conversation is past the context this server was "
                f"started with: {small}. Server said: {self._mask(error_body(text).message)}",
                quoted=error.quoted,
                provider=self.provider,
                model=self.name,
                status=status,
            )
        return ModelError(
            f"{self.name} at {self.base_url} refused the request (HTTP {status}): {fix}. "
            f"Server said: {self._mask(error_body(text).message)}",
            provider=self.provider,
            model=self.name,
            status=status,
        )

    def _kept_reasoning(self, text: Any, s: ModelSettings) -> str:
        """``reasoning_content`` kept with the reply, to the answer bound; from the first, sent back."""
        if not isinstance(text, str) or not text:
            return ""
        self._reasoning_back = True
        return text[: answer_chars(self.name, s.max_tokens)]

    def _body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], s: ModelSettings
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.name, "messages": to_wire_messages(messages)}
        if tools:
            body["tools"] = to_wire_tools(tools)
        if openai_reasons(self.name):
            # Both would be refused with a 400: reasoning models take only the default temperature, and
            # max_completion_tokens, which also bounds the hidden thinking.
            if s.temperature is not None and not self._warned_temperature:
                self._warned_temperature = True
                log.warning(
                    "temperature_ignored", model=self.name, reason="reasoning models take only the default"
                )
            if (cap := s.max_tokens or self.default_max_tokens) is not None:
                body["max_completion_tokens"] = cap + HEADROOM
            if s.reasoning_effort is not None:
                body["reasoning_effort"] = openai_effort(self.name, s.reasoning_effort)
        else:
            if s.temperature is not None:
                body["temperature"] = s.temperature
            if (cap := s.max_tokens or self.default_max_tokens) is not None:
                body["max_tokens"] = cap
        if s.stream:
            body["stream"] = True
            if self._stream_options:
                body["stream_options"] = {"include_usage": True}
        body.update(s.extra)
        return body

    def _call_args(self, messages: Sequence[Message]) -> dict[str, Any]:
        return {"messages": messages}

    def _error_with_200(self, data: Any, resp: httpx.Response, text: str) -> ModelError | None:
        """OpenRouter and some proxies answer HTTP 200 with ``{"error": {"code", "message"}}`` and no
        choices: read as an empty answer, it hid the server's message and was asked again. Its ``code``
        (an HTTP status) decides as a real status would; without one it is retryable."""
        if not isinstance(data, dict) or data.get("choices") or "error" not in data:
            return None
        err = data["error"]
        code = err.get("code") if isinstance(err, dict) else None
        if isinstance(code, int) and 400 <= code < 600:
            return self._status_error(code, resp.headers, text)
        said = self._mask(error_body(text).message)
        if NO_PATH in said.lower():
            # LM Studio's 404, with HTTP 200: retried as a server's hiccup, five times, and never said the fix.
            return NoApiAtURLError(
                f"no {self.WIRE} API at {self.base_url} (it answered '{said}', LM Studio's word for a path "
                f"it does not serve): check {self.BASE_ENV} (its path usually ends in /v1, as in "
                "http://localhost:1234/v1)",
                quoted=(said,),
                provider=self.provider,
                model=self.name,
            )
        return ModelError(
            f"{self.name}: {self.base_url} answered HTTP 200 with an error: {said}",
            quoted=(said,),
            provider=self.provider,
            model=self.name,
            retryable=True,
        )

    async def _complete_once(
        self, body: dict[str, Any], s: ModelSettings, messages: Sequence[Message]
    ) -> ModelResponse:
        try:
            async with self._client.stream(
                "POST",
                self._endpoint(),
                content=encode_body(body, messages, s, self._reasoning_back),
                headers=self._json_headers,
                timeout=s.timeout or httpx.USE_CLIENT_DEFAULT,
            ) as resp:
                if resp.status_code >= 300:  # a redirect too: never followed (agent.models.http)
                    said = await read_text(resp, ERROR_BODY_BYTES, cut=True)
                    raise self._refused(resp, body, said)
                text = await read_text(resp, whole_answer_bytes(answer_chars(self.name, s.max_tokens)))
        except httpx.TransportError as e:  # timeouts included; a body past its bound too
            raise self._transport_error(e) from e
        try:
            data = json.loads(text)
            if (refused := self._error_with_200(data, resp, text)) is not None:
                raise refused
            choice = (data.get("choices") or [{}])[0]
            msg = choice.get("message") or {}
        except (ValueError, AttributeError, IndexError, RecursionError) as e:
            raise self._bad_payload(resp) from e
        calls = [
            ToolCall(
                id=c.get("id") or f"call_{len(messages)}_{i}",
                name=(c.get("function") or {}).get("name", ""),
                arguments=arguments_text((c.get("function") or {}).get("arguments")),
            )
            for i, c in enumerate(msg.get("tool_calls") or [])
        ]
        reasoning = self._kept_reasoning(msg.get("reasoning_content"), s)
        text = without_thinking(content_text(msg.get("content")))
        reply = Message("assistant", text, tool_calls=calls, reasoning=reasoning)
        self._no_text_calls(reply, body)
        return ModelResponse(
            message=reply,
            usage=usage_of(reported_usage(data), body, reply, len(reasoning_text(msg))),
            model=data.get("model") or self.name,
            finish_reason=choice.get("finish_reason"),
        )

    async def _stream_once(
        self, body: dict[str, Any], s: ModelSettings, messages: Sequence[Message]
    ) -> AsyncIterator[ModelChunk]:
        think = ThinkFilter(opened=self._think_opened)  # the live text and the answer, one filter
        calls = ToolCallAssembler()
        usage_raw: dict[str, Any] | None = None
        finish: str | None = None
        done = False  # a stream that ends with neither [DONE] nor a finish_reason was cut off
        model_name = self.name
        kept, most = 0, answer_chars(self.name, s.max_tokens)  # text and arguments read, and the bound
        thought = 0  # characters of reasoning_content: billed, never shown
        said: list[str] = []  # reasoning_content itself (to the answer bound), sent back in later calls
        try:
            async with self._client.stream(
                "POST",
                self._endpoint(),
                content=encode_body(body, messages, s, self._reasoning_back),
                headers=self._sse_headers,
                timeout=s.timeout or httpx.USE_CLIENT_DEFAULT,
            ) as resp:
                if resp.status_code >= 300:  # a redirect too: never followed (agent.models.http)
                    said = await read_text(resp, ERROR_BODY_BYTES, cut=True)
                    if (
                        resp.status_code in (400, 422)
                        and "stream_options" in body
                        and "stream_options" in said
                    ):
                        # Azure before api-version 2024-09 and some proxies refuse the usage request: ask
                        # again without it at once (usage is then counted locally), and from now on.
                        self._stream_options = False
                        body.pop("stream_options")
                        raise ModelError(
                            f"{self.name}: the server refused stream_options; asking without them",
                            provider=self.provider,
                            model=self.name,
                            retryable=True,
                            retry_after=0.01,
                        )
                    raise self._refused(resp, body, said)
                ctype = resp.headers.get("content-type", "")
                if "text/event-stream" not in ctype:
                    # Some servers ignore stream=true and answer with one JSON body.
                    whole = await read_text(resp, whole_answer_bytes(most))
                    try:  # a proxy's HTML page, or JSON that is not an object, was a traceback
                        data = json.loads(whole)
                        if (refused := self._error_with_200(data, resp, whole)) is not None:
                            raise refused
                        msg = ((data.get("choices") or [{}])[0]).get("message") or {}
                    except (ValueError, AttributeError, IndexError, RecursionError) as e:
                        raise self._bad_payload(resp) from e
                    if shown := think.feed(content_text(msg.get("content"))):
                        yield TextChunk(shown)
                    calls.add([dict(c, index=i) for i, c in enumerate(msg.get("tool_calls") or [])])
                    thought = len(reasoning_text(msg))
                    said.append(msg.get("reasoning_content") or "")
                    usage_raw = reported_usage(data)
                    done = True
                else:
                    async with contextlib.aclosing(bounded_sse(resp, whole_answer_bytes(most))) as events:
                        async for sse in events:
                            data_s = sse.data
                            if not data_s:
                                continue
                            if data_s[0] != "{" and data_s.strip() == "[DONE]":  # JSON chunks: no strip
                                # Read on to the end of the body rather than break: breaking would leave
                                # httpx's inner byte iterators to be finalised by a stray task.
                                done = True
                                continue
                            try:
                                data = json.loads(data_s)
                            except (ValueError, RecursionError) as e:  # deep nesting: RecursionError
                                raise ModelError(
                                    f"{self.name}: malformed stream chunk from the server",
                                    provider=self.provider,
                                    model=self.name,
                                    retryable=True,
                                ) from e
                            try:  # a chunk of another shape ([1], "x", a number for a name)
                                # OpenRouter's mid-stream error comes beside a choice whose finish_reason is
                                # "error": the text before it is not the whole answer.
                                if data.get("error") and (
                                    not data.get("choices")
                                    or data["choices"][0].get("finish_reason") == "error"
                                ):
                                    err = data["error"]
                                    msg_text = err.get("message") if isinstance(err, dict) else err
                                    raise self._midstream("an error", msg_text, None, True)
                                model_name = data.get("model") or model_name
                                if usage := reported_usage(data):
                                    usage_raw = usage
                                for choice in data.get("choices") or ():
                                    delta = choice.get("delta") or {}
                                    piece = delta.get("content")
                                    if piece and type(piece) is not str:
                                        piece = content_text(piece)
                                    if piece:  # counted when it comes, shown when the filter says
                                        yield TextChunk(think.feed(piece), len(piece))
                                    kept += len(piece or "")
                                    if thinking := reasoning_text(delta):
                                        thought += len(thinking)
                                        if "reasoning_content" in delta and thought <= most:
                                            said.append(thinking)
                                        yield ThinkingChunk(len(thinking))
                                    if delta.get("tool_calls"):
                                        calls.add(delta["tool_calls"])
                                        kept += (wrote := sum(map(fragment_chars, delta["tool_calls"])))
                                        yield TextChunk("", wrote)  # billed output: counted, not shown
                                    if choice.get("finish_reason"):
                                        finish = choice["finish_reason"]
                            except (AttributeError, TypeError, KeyError, IndexError) as e:  # was a traceback
                                raise self._bad_payload() from e
                            if kept > most:  # the server ignores max_tokens: the answer ends here, cut
                                finish, done = "length", True
                                answer_cut(self.name, most)
                                break
        except httpx.TransportError as e:  # timeouts included
            raise self._transport_error(e) from e
        if not done and finish is None:  # a proxy's read timeout ends the body cleanly mid-answer
            raise ModelError(
                f"{self.name}: the stream stopped before the answer was finished (no finish_reason, "
                "no [DONE]; a proxy's timeout?)",
                provider=self.provider,
                model=self.name,
                retryable=True,
            )
        if rest := think.end():
            yield TextChunk(rest, 0)  # received (and counted) before
        self._think_opened = self._think_opened or think.bare_close
        reasoning = self._kept_reasoning("".join(r for r in said if type(r) is str), s)
        reply = Message("assistant", think.text, tool_calls=calls.calls(len(messages)), reasoning=reasoning)
        self._no_text_calls(reply, body)
        yield ModelResponse(
            message=reply,
            usage=usage_of(usage_raw, body, reply, thought),
            model=model_name,
            finish_reason=finish,
        )
