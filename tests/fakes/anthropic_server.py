"""A scripted Anthropic Messages API (``POST /v1/messages``) on 127.0.0.1: real HTTP, SSE or JSON.

    async with FakeAnthropic() as api:
        api.script(tool_call("add", {"a": 1}), text("3"))
        model = AnthropicModel("claude-haiku-4-5", api_key=KEY, base_url=api.base_url, client=client)

Replies reuse the OpenAI fake's :class:`Reply` fields, plus what only this wire has (a mid-stream
``error`` event, a connection cut after the text, cache writes). ``tests/fakes/gemini_server.py``
uses the same :class:`Reply` so the provider tests read alike.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes import llm_server


@dataclass
class Reply(llm_server.Reply):
    stream_error: str | None = None
    """Send an ``error`` event of this type (``overloaded_error``) after the text, instead of finishing."""
    cut: bool = False
    """Close the connection after the text (a dropped stream)."""
    cache_write_tokens: int = 0
    thought_signature: str | None = None
    """Gemini only: the ``thoughtSignature`` sent with the first function call."""


def text(content: str, **kw: Any) -> Reply:
    return Reply(text=content, **kw)


def tool_call(name: str, args: dict[str, Any] | str, **kw: Any) -> Reply:
    raw = args if isinstance(args, str) else json.dumps(args)
    return Reply(tool_calls=[(name, raw)], **kw)


def tool_calls(*calls: tuple[str, dict[str, Any]], **kw: Any) -> Reply:
    return Reply(tool_calls=[(n, json.dumps(a)) for n, a in calls], **kw)


def error(status: int, etype: str, message: str = "error", headers: dict[str, str] | None = None) -> Reply:
    body = {"type": "error", "error": {"type": etype, "message": message}}
    return Reply(status=status, error_body=body, headers=headers or {})


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic(llm_server.ScriptedServer):
    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[str, str]] = []
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return web.json_response(
                {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
                status=401,
            )
        if self.known_models is not None and body.get("model") not in self.known_models:
            return web.json_response(
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": f"model: {body.get('model')}"},
                },
                status=404,
            )
        reply = (
            self._queue.pop(0) if self._queue else error(500, "api_error", "fake Anthropic: script exhausted")
        )
        if reply.hang:
            await asyncio.sleep(3600)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return web.json_response(reply.error_body or {}, status=reply.status, headers=reply.headers)
        model = reply.model or body.get("model", "claude-fake")
        uncached = max(0, reply.prompt_tokens - reply.cached_tokens - reply.cache_write_tokens)
        usage = {
            "input_tokens": uncached,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cached_tokens,
            "output_tokens": reply.completion_tokens,
        }
        calls = [(f"toolu_{next(self._ids):04d}", n, a) for n, a in reply.tool_calls]
        stop = "tool_use" if calls else "end_turn"
        if not body.get("stream"):
            content: list[dict[str, Any]] = []
            if reply.text:
                content.append({"type": "text", "text": reply.text})
            content += [{"type": "tool_use", "id": i, "name": n, "input": json.loads(a)} for i, n, a in calls]
            return web.json_response(
                {
                    "id": f"msg_{next(self._ids)}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        n = max(1, reply.fragment)
        out = [
            _sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": f"msg_{next(self._ids)}",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
            ),
            _sse("ping", {"type": "ping"}),
        ]
        index = 0
        if reply.text:
            out.append(
                _sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for i in range(0, len(reply.text), n):
                out.append(
                    _sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": reply.text[i : i + n]},
                        },
                    )
                )
            out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
            index = 1
        if reply.stream_error or reply.cut:
            await resp.write(b"".join(out))
            if reply.stream_error:
                await resp.write(
                    _sse(
                        "error",
                        {"type": "error", "error": {"type": reply.stream_error, "message": "Overloaded"}},
                    )
                )
                await resp.write_eof()
            else:
                assert request.transport is not None
                request.transport.close()
            return resp
        for cid, name, args in calls:
            out.append(
                _sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "tool_use", "id": cid, "name": name, "input": {}},
                    },
                )
            )
            for i in range(0, len(args), n):
                out.append(
                    _sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": args[i : i + n]},
                        },
                    )
                )
            out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        out.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": reply.completion_tokens},
                },
            )
        )
        out.append(_sse("message_stop", {"type": "message_stop"}))
        if reply.split_writes:
            for piece in out:
                await resp.write(piece)
                await asyncio.sleep(0)
        else:
            await resp.write(b"".join(out))
        await resp.write_eof()
        return resp
