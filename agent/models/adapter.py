"""What every HTTP model adapter shares: its settings, key masking, the retry policy (agent.retry), and the
one mapping from an HTTP status and error body to this library's errors."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from httpx_sse import ServerSentEvent

from agent.messages import Message
from agent.models.base import (
    ContextOverflowError,
    ModelAuthError,
    ModelChunk,
    ModelError,
    ModelNotFoundError,
    ModelSettings,
    ModelUnavailableError,
    NoApiAtURLError,
    RetryNotice,
    TextChunk,
)
from agent.models.bounds import answer_chars, answer_cut, answer_room
from agent.models.error_bodies import error_body
from agent.models.http import ERROR_BODY_BYTES, bounded_sse, read_text, whole_answer_bytes
from agent.models.server_fixes import TEXT_CALL_FIX, tool_call_as_text
from agent.models.transport_errors import redirect_error, transport_error
from agent.retry import RetryPolicy, RetryWait, parse_retry_after, said_duration

SECRET_RE = re.compile(r"(sk-ant|sk|gsk|pk|rk)-[-_A-Za-z0-9*]{6,}|AIza[-_A-Za-z0-9]{20,}")
# What OpenAI, Anthropic, Gemini and OpenAI-compatible servers say when the conversation is too long.
_CONTEXT_RE = re.compile(
    r"context (length|window)|maximum context|too many tokens|prompt is too long|exceed context limit"
    r"|exceeds the maximum number of tokens|input token count|exceeds the available context size"
    r"|reduce the length of the messages"  # Groq and Cerebras say only this (code context_length_exceeded)
    # Text Generation Inference (Together, Hugging Face's router): its validation errors name no context.
    r"|`inputs` tokens \+ `max_new_tokens` must be|`inputs` must have less than \d+ tokens"
    r"|longer than the maximum model length",  # vLLM's "The decoder prompt (length N) is longer than ..."
    re.I,
)
_TOOLS_RE = re.compile(r"tool|function", re.I)


class HTTPModel:
    """Base of the OpenAI-compatible, Anthropic and Gemini adapters."""

    WIRE: ClassVar[str] = "model"
    """How the wire format is named in messages ("Anthropic Messages")."""
    KEY_ENV: ClassVar[str] = "the provider's API key"
    BASE_ENV: ClassVar[str] = "the base URL"
    MODEL_HINT: ClassVar[str] = "GET {base_url}/models lists them"
    TOOLS_MAY_FAIL: ClassVar[bool] = False
    """Servers of this wire may not support tool calls: say so when a 400 mentions them."""
    KEY_HEADER: ClassVar[str] = "x-api-key"
    HEADERS: ClassVar[dict[str, str]] = {"Content-Type": "application/json"}
    DEFAULT_BASE_URL: ClassVar[str] = ""
    PROVIDER: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        client: httpx.AsyncClient,
        base_url: str | None = None,
        provider: str | None = None,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.name = name
        self.provider = provider or self.PROVIDER
        self.base_url = (base_url or self.DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key
        self._client = client
        self.max_attempts = max(1, max_attempts)
        self.retry = RetryPolicy(self.max_attempts, backoff_initial, backoff_max)

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}({self.name!r}, base_url={self.base_url!r})"

    def _headers(self, stream: bool = False) -> dict[str, str]:
        h = dict(self.HEADERS)
        if self._api_key:
            h[self.KEY_HEADER] = self._api_key
        if stream:
            h["Accept"] = "text/event-stream"
        return h

    def _mask(self, text: str) -> str:
        """Servers sometimes echo the key they rejected: never pass it on."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return SECRET_RE.sub("***", text)

    def _transport_error(self, e: httpx.HTTPError) -> ModelError:
        return transport_error(e, name=self.name, base_url=self.base_url, provider=self.provider)

    def _bad_payload(self, resp: httpx.Response | None = None) -> ModelError:
        """Mostly a web page answering 200 (Open WebUI's address, a wrong port, a captive portal): the
        setting to check is the base URL. A page said to be HTML is not retried (it was, five times,
        ~17 s, for the same page) and counts as no API at that address (the router falls back)."""
        html = resp is not None and "html" in resp.headers.get("content-type", "").lower()
        return (NoApiAtURLError if html else ModelError)(
            f"{self.name}: {self.base_url} sent a response that is not {self.WIRE} JSON: check that "
            f"{self.BASE_ENV} is the API's address, not a web page's",
            provider=self.provider,
            model=self.name,
            retryable=not html,
        )

    def _status_error(self, status: int, headers: httpx.Headers, text: str) -> ModelError:
        """The one mapping from an HTTP status and error body to an error, for every wire format."""
        body = error_body(text)
        detail = self._mask(body.message)
        common: dict[str, Any] = {"provider": self.provider, "model": self.name, "status": status}
        common["quoted"] = (detail, body.kind)
        said = f"HTTP {status}" + (f" ({body.kind})" if body.kind else "")
        if status < 400:
            where = {"name": self.name, "base_url": self.base_url, "setting": self.BASE_ENV}
            return redirect_error(status, headers, provider=self.provider, **where)
        if status in (401, 403) or body.bad_key:
            return ModelAuthError(
                f"{self.base_url} rejected the API key (HTTP {status}): check {self.KEY_ENV} and that it "
                f"may use model '{self.name}'. Server said: {detail}",
                **common,
            )
        if status == 404 and self.name.lower() not in text.lower():
            # Every server tried names the model it does not know (OpenAI, Ollama, vLLM, Anthropic,
            # Gemini); a 404 that does not ("404 page not found") is a path with no API: the base URL.
            want = urlsplit(self.DEFAULT_BASE_URL).path
            hint = f" (its path usually ends in {want}, as in {self.DEFAULT_BASE_URL})" if want else ""
            return NoApiAtURLError(
                f"no {self.WIRE} API at {self.base_url} (HTTP 404: its path was not found): check "
                f"{self.BASE_ENV}{hint}, then the model name '{self.name}'. Server said: {detail}",
                **common,
            )
        if status == 404:
            hint = self.MODEL_HINT.format(base_url=self.base_url)
            return ModelNotFoundError(
                f"model '{self.name}' was not found at {self.base_url} (HTTP 404): check the model name "
                f"({hint}) and {self.BASE_ENV}. Server said: {detail}",
                **common,
            )
        if status == 402 or (status == 429 and body.kind == "insufficient_quota"):
            # Out of credit (OpenAI's 429 insufficient_quota, OpenRouter's and DeepSeek's 402): retrying
            # never helps, so it is not retried; another provider's model may still serve (the router).
            return ModelUnavailableError(
                f"{self.name}: the account of {self.KEY_ENV} is out of credit or quota at {self.base_url} "
                f"(HTTP {status}): check its plan and billing. Server said: {detail}",
                retryable=False,
                **common,
            )
        if status in (408, 429) or status >= 500:
            wait = parse_retry_after(headers)
            wait = wait if wait is not None else body.retry_after
            if wait is not None and wait > self.retry.max_retry_after:
                # A daily quota asks for hours: waiting the capped 120 s four times only delayed this.
                return ModelUnavailableError(
                    f"{self.name}: {said} from {self.base_url}: the server asks to wait {said_duration(wait)} "
                    f"before trying again, longer than agentbot waits: {detail}",
                    retryable=False,
                    retry_after=wait,
                    **common,
                )
            return ModelError(
                f"{self.name}: {said} from {self.base_url}: {detail}",
                retryable=True,
                retry_after=wait,
                **common,
            )
        if status == 413 or _CONTEXT_RE.search(detail):
            return ContextOverflowError(
                f"{self.name}: the conversation is too long for this model: {detail}", **common
            )
        if status == 400 and '"tool_use_failed"' in text:
            # Groq's answer when the model wrote a call its parser could not read (Llama, Kimi): another
            # sample usually can. Read as "this server or model may not support tools", the run ended.
            return ModelError(
                f"{self.name} wrote a tool call {self.base_url} could not read: {detail}",
                retryable=True,
                **common,
            )
        if status == 400 and self.TOOLS_MAY_FAIL and _TOOLS_RE.search(detail):
            return ModelError(
                f"{self.name} at {self.base_url} refused the request, apparently over tool calling "
                f"(HTTP 400): this server or model may not support tools. Server said: {detail}",
                **common,
            )
        return ModelError(f"{self.name}: {said} from {self.base_url}: {detail}", **common)

    def _refused(self, resp: httpx.Response, body: dict[str, Any], text: str) -> ModelError:
        """The error for a refused request; a cap on the answer that does not fit beside the
        conversation (vLLM, OpenAI, SGLang and Anthropic refuse ``max_tokens`` past the context left) is
        lowered to the room the server names, and the call asked again (after the usual backoff). With
        ``AGENT_MAX_TOKENS=4096`` on an 8k-context model every run ended once its conversation passed 4k
        tokens, said as "the conversation is too long for this model" where the conversation fit."""
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        cap, room = body.get(key), answer_room(text) if resp.status_code == 400 else None
        if room is None or not isinstance(cap, int) or room >= cap:
            return self._status_error(resp.status_code, resp.headers, text)
        body[key] = room
        return ModelError(
            f"{self.name}: {key}={cap} does not fit beside this conversation in the model's context; "
            f"asking again for an answer of at most {room} tokens",
            provider=self.provider,
            model=self.name,
            retryable=True,
            retry_after=0.01,
        )

    def _body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], s: ModelSettings
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _url(self, stream: bool) -> str:
        raise NotImplementedError

    def _reply(self, **extra: Any) -> Any:
        """A new reply of this wire: ``add(event, data)`` folds in one response object or stream event
        and returns its new visible text, ``finished`` says whether its stop reason came, ``response(body)``
        makes the :class:`ModelResponse`; ``size`` and ``cut()`` bound it (:mod:`agent.models.bounds`)."""
        raise NotImplementedError

    def _call_args(self, messages: Sequence[Message]) -> dict[str, Any]:
        """Extra keyword arguments for one call's attempts (Gemini numbers turns); none by default."""
        return {}

    def stream(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], settings: ModelSettings
    ) -> AsyncIterator[ModelChunk]:
        # The retry policy's iterator is returned as it is, not wrapped in another generator: every
        # streamed chunk and every wait on the socket passes through each layer, and the streaming
        # path's overhead against a minimal client was in the layers (bench/loop_overhead.py).
        body = self._body(messages, tools, settings)
        extra = self._call_args(messages)
        once = self._stream_once if settings.stream else self._complete_once
        return self.retry.stream(lambda: once(body, settings, **extra), _retryable, _notice, self._gave_up)

    def _complete_once(
        self, body: dict[str, Any], s: ModelSettings, **extra: Any
    ) -> AsyncIterator[ModelChunk]:
        return self._stream_once(body, s, **extra)  # ``s.stream`` is False: one JSON response

    async def _stream_once(
        self, body: dict[str, Any], s: ModelSettings, **extra: Any
    ) -> AsyncIterator[ModelChunk]:
        """The response object, or each server-sent event as it comes, folded into the reply; a malformed
        one is retryable."""
        reply = self._reply(**extra)
        most = answer_chars(self.name, s.max_tokens)
        timeout = s.timeout or httpx.USE_CLIENT_DEFAULT
        try:
            async with self._client.stream(
                "POST", self._url(s.stream), json=body, headers=self._headers(s.stream), timeout=timeout
            ) as resp:
                if resp.status_code >= 300:  # a redirect too: never followed (agent.models.http)
                    said = await read_text(resp, ERROR_BODY_BYTES, cut=True)
                    raise self._refused(resp, body, said)
                one = whole_answer_bytes(most)  # an event, or a whole answer, to the answer bound in JSON
                # A stream asked for and answered as JSON (a gateway that drops Gemini's ?alt=sse gets its
                # chunks as one JSON array; one that ignores stream, one object) is read whole: read as
                # events, it failed five times as "could not be reached (SSEError)".
                sse_said = s.stream and "text/event-stream" in resp.headers.get("content-type", "")
                events = bounded_sse(resp, one) if sse_said else _one(resp, one)
                async with contextlib.aclosing(events) as events:
                    async for sse in events:
                        if s.stream and not sse.data:
                            continue
                        size = reply.size
                        try:
                            data = json.loads(sse.data)
                            pieces = [
                                reply.add(sse.event if sse_said else "", _object(item))
                                for item in (data if type(data) is list and not sse_said else (data,))
                            ]
                        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
                            raise self._bad_payload(resp) from e
                        if (piece := "".join(pieces)) or reply.size > size:
                            # ``size`` counts a tool call's arguments too: billed output, so counted (unshown)
                            yield TextChunk(piece, reply.size - size)
                        if s.stream and reply.size > most:  # the server ignores max_tokens: cut here
                            reply.cut()
                            answer_cut(self.name, most)
                            break
        except httpx.HTTPError as e:
            raise self._transport_error(e) from e
        if s.stream and not reply.finished:
            # A proxy's read timeout can end the body cleanly mid-answer: the text so far is not the answer.
            raise ModelError(
                f"{self.name}: the stream stopped before the answer was finished (no stop reason; a "
                "proxy's timeout?)",
                provider=self.provider,
                model=self.name,
                retryable=True,
            )
        yield reply.response(body)

    def _no_text_calls(self, reply: Message, body: dict[str, Any]) -> None:
        """Fail a reply that is only a tool call written as text (:func:`tool_call_as_text`), naming the
        server's setting: taken as the answer, the run ended "answered" with the call printed."""
        if not reply.tool_calls and (named := tool_call_as_text(reply.content, body.get("tools"))):
            raise ModelError(
                f"{self.name} at {self.base_url} wrote its call to {named} as text, and {TEXT_CALL_FIX}",
                provider=self.provider,
                model=self.name,
            )

    def _midstream(self, what: str, message: object, status: int | None, retryable: bool) -> ModelError:
        """An error the server reported inside a successful response (an SSE ``error`` event)."""
        return ModelError(
            f"{self.name}: the server reported {what} mid-stream: {self._mask(str(message or ''))}",
            quoted=(self._mask(str(message or "")), what),
            provider=self.provider,
            model=self.name,
            status=status,
            retryable=retryable,
        )

    def _gave_up(self, e: Exception) -> Exception | None:
        """A retryable error that outlasted the attempts becomes ``ModelUnavailableError`` (router falls back)."""
        if not isinstance(e, ModelError) or not e.retryable:
            return None
        return ModelUnavailableError(
            f"{self.name}: still failing after {self.max_attempts} attempt{'s' if self.max_attempts > 1 else ''}: "
            f"{e.message}",
            quoted=e.quoted,
            provider=self.provider,
            model=self.name,
            status=e.status,
            retryable=True,
        )


def split_system(messages: Sequence[Message]) -> tuple[list[str], list[Message]]:
    """The system texts (Anthropic and Gemini take them apart from the turns) and the other messages."""
    system = [m.content for m in messages if m.role == "system" and m.content.strip()]
    return system, [m for m in messages if m.role != "system"]


def merge_turns(turns: Iterable[tuple[str, list[dict[str, Any]]]], key: str) -> list[dict[str, Any]]:
    """(role, parts) turns, those with no parts left out and consecutive ones of a role joined: Anthropic
    and Gemini reject two turns of one role in a row (and pair a turn's tool calls with the next turn's
    results)."""
    out: list[dict[str, Any]] = []
    for role, parts in turns:
        if out and parts and out[-1]["role"] == role:
            out[-1][key].extend(parts)
        elif parts:
            out.append({"role": role, key: parts})
    return out


def json_object(text: str, fallback: str) -> dict[str, Any]:
    """``text`` as the JSON object Anthropic and Gemini require, else ``{fallback: text}``: the model
    sees what it wrote next to the error observation."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # a model's "[" * 100_000 nests past json's recursion limit
        value = None
    return value if isinstance(value, dict) else {fallback: text}


def args_object(arguments: str) -> dict[str, Any]:
    return json_object(arguments, "_raw_arguments") if arguments.strip() else {}


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    return data


async def _one(resp: httpx.Response, limit: int) -> AsyncIterator[ServerSentEvent]:
    """A whole (not streamed) response, read to ``limit`` bytes, as the one event of a stream."""
    yield ServerSentEvent(data=await read_text(resp, limit))


def _retryable(e: BaseException) -> bool:
    return isinstance(e, ModelError) and e.retryable


def _notice(w: RetryWait) -> RetryNotice:
    error = w.error.message if isinstance(w.error, ModelError) else str(w.error)
    return RetryNotice(w.attempt, w.max_attempts, w.delay, error)
