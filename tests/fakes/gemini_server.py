"""A scripted Gemini API (``/v1beta/models/{m}:generateContent`` and ``:streamGenerateContent?alt=sse``).

Real HTTP on 127.0.0.1; the key is checked in ``x-goog-api-key`` the way Google does (a bad key is
HTTP 400 ``API_KEY_INVALID``, not 401). Replies are :class:`tests.fakes.anthropic_server.Reply`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.fakes.anthropic_server import Reply
from tests.fakes.llm_server import ScriptedServer


def google_error(
    status: int,
    gstatus: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    body = {"error": {"code": status, "message": message, "status": gstatus, "details": details or []}}
    return Reply(status=status, error_body=body, headers=headers or {})


class FakeGemini(ScriptedServer):
    PREFIX = "/v1beta"

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{call}", self._generate)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        body = await request.json()
        self.requests.append(body)
        self.paths.append(request.path_qs)
        self.headers.append(dict(request.headers))
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            return web.json_response(
                {
                    "error": {
                        "code": 400,
                        "message": "API key not valid. Please pass a valid API key.",
                        "status": "INVALID_ARGUMENT",
                        "details": [
                            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
                        ],
                    }
                },
                status=400,
            )
        if self.known_models is not None and model not in self.known_models:
            return web.json_response(
                {
                    "error": {
                        "code": 404,
                        "message": f"models/{model} is not found for API version v1beta",
                        "status": "NOT_FOUND",
                    }
                },
                status=404,
            )
        budget = ((body.get("generationConfig") or {}).get("thinkingConfig") or {}).get("thinkingBudget")
        if budget is not None and "-pro" in model and not 128 <= budget <= 32768:
            # what Gemini 2.5 Pro answers: it cannot switch thinking off
            message = f"Budget {budget} is invalid. This model only works in thinking mode."
            return web.json_response(
                {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}, status=400
            )
        reply = (
            self._queue.pop(0)
            if self._queue
            else google_error(500, "INTERNAL", "fake Gemini: script exhausted")
        )
        if reply.hang:
            await asyncio.sleep(3600)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return web.json_response(reply.error_body or {}, status=reply.status, headers=reply.headers)
        version = reply.model or model
        usage = {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": reply.completion_tokens - reply.reasoning_tokens,
            "thoughtsTokenCount": reply.reasoning_tokens,
            "cachedContentTokenCount": reply.cached_tokens,
            "totalTokenCount": reply.prompt_tokens + reply.completion_tokens,
        }
        call_parts: list[dict[str, Any]] = []
        for i, (name, args) in enumerate(reply.tool_calls):
            part: dict[str, Any] = {"functionCall": {"name": name, "args": json.loads(args)}}
            if i == 0 and reply.thought_signature:
                part["thoughtSignature"] = reply.thought_signature
            call_parts.append(part)

        def response(parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
            cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            out: dict[str, Any] = {"candidates": [cand], "modelVersion": version}
            if last:
                cand["finishReason"] = reply.finish or "STOP"
                out["usageMetadata"] = usage
            return out

        if method == "generateContent":
            parts = ([{"text": reply.text}] if reply.text else []) + call_parts
            return web.json_response(response(parts, True))
        if method != "streamGenerateContent" or request.query.get("alt") != "sse":
            return web.json_response(
                {"error": {"code": 400, "message": "bad method", "status": "INVALID_ARGUMENT"}}, status=400
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = max(1, reply.fragment)
        chunks = [response([{"text": reply.text[i : i + n]}], False) for i in range(0, len(reply.text), n)]
        if reply.stream_error or reply.cut:
            await resp.write(b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks))
            if reply.stream_error:
                err = {
                    "error": {
                        "code": 503,
                        "message": "The model is overloaded.",
                        "status": reply.stream_error,
                    }
                }
                await resp.write(b"data: " + json.dumps(err).encode() + b"\r\n\r\n")
                await resp.write_eof()
            else:
                assert request.transport is not None
                request.transport.close()
            return resp
        chunks.append(response(call_parts, True))
        for c in chunks:
            await resp.write(b"data: " + json.dumps(c).encode() + b"\r\n\r\n")
            if reply.split_writes:
                await asyncio.sleep(0)
        await resp.write_eof()
        return resp
