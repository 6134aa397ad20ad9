"""A scripted OpenAI-compatible Chat Completions server on 127.0.0.1 (real HTTP, streaming and not).

Tests say what the "model" answers next; the agent talks to it exactly as to a real provider.

    async with FakeLLM() as llm:
        llm.script(tool_call("add", {"a": 1, "b": 2}), text("3"))
        model = OpenAIChatModel("gpt-4o-mini", base_url=llm.base_url, client=client)

A reply can also be computed from the request (``llm.responder = fn``), which is how concurrent
sessions (benchmarks, end-to-end tests) get answers that depend on their own conversation.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    """(name, raw JSON arguments) pairs."""
    status: int = 200
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int = 100
    completion_tokens: int = 20
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    """The part of ``completion_tokens`` a reasoning model spent thinking."""
    fragment: int = 7
    """Stream tool-call arguments (and text) in pieces of this many characters."""
    hang: bool = False
    """Accept the request and never answer (to test timeouts and cancellation)."""
    stream_usage: bool = True
    model: str | None = None
    split_writes: bool = False
    """Write each SSE chunk separately (so fragments cross TCP reads) instead of all at once."""
    finish: str | None = None
    """The ``finish_reason`` sent instead of ``stop`` / ``tool_calls`` (``length``: cut at the output cap)."""
    gate: asyncio.Event | None = None
    """Answer only once the test sets it: a run held exactly as long as the test needs, not a guessed delay."""


def text(content: str, **kw: Any) -> Reply:
    return Reply(text=content, **kw)


def tool_call(name: str, args: dict[str, Any] | str, **kw: Any) -> Reply:
    raw = args if isinstance(args, str) else json.dumps(args)
    return Reply(tool_calls=[(name, raw)], **kw)


def tool_calls(*calls: tuple[str, dict[str, Any] | str], **kw: Any) -> Reply:
    return Reply(tool_calls=[(n, a if isinstance(a, str) else json.dumps(a)) for n, a in calls], **kw)


def error(status: int, message: str = "error", headers: dict[str, str] | None = None, **kw: Any) -> Reply:
    return Reply(
        status=status, error_body={"error": {"message": message, "type": "test"}}, headers=headers or {}, **kw
    )


# OpenAI's reasoning models and the parameters each refuses; written from OpenAI's API reference, apart
# from the adapter's own rules, so a test fails when the adapter sends what the real API refuses.
REASONING_EFFORTS = {
    **dict.fromkeys(("gpt-5", "gpt-5-mini", "gpt-5-nano"), ("minimal", "low", "medium", "high")),
    "gpt-5.1": ("none", "low", "medium", "high"),
    **dict.fromkeys(("o1", "o3", "o3-mini", "o4-mini"), ("low", "medium", "high")),
}


def openai_parameter_error(body: dict[str, Any]) -> dict[str, Any] | None:
    """The ``error`` OpenAI answers (HTTP 400) for a parameter this model does not take, else None."""
    model = str(body.get("model", ""))

    def refuse(param: str, message: str, code: str = "unsupported_value") -> dict[str, Any]:
        return {"message": message, "type": "invalid_request_error", "param": param, "code": code}

    efforts = REASONING_EFFORTS.get(model)
    if efforts is None:
        if "reasoning_effort" in body:
            return refuse(
                "reasoning_effort",
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                "unsupported_parameter",
            )
        return None
    if "max_tokens" in body:
        return refuse(
            "max_tokens",
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "unsupported_parameter",
        )
    if body.get("temperature", 1) != 1:
        return refuse(
            "temperature",
            f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
            "Only the default (1) value is supported.",
        )
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in efforts:
        return refuse(
            "reasoning_effort",
            f"Unsupported value: 'reasoning_effort' does not support '{effort}' with this model. "
            f"Supported values are: {', '.join(repr(e) for e in efforts)}.",
        )
    return None


class ScriptedServer:
    """What every scripted provider fake shares: a queue of replies served by an aiohttp app on 127.0.0.1.

    Subclasses add their wire format's routes in :meth:`routes`; ``PREFIX`` is the base URL's path.
    """

    PREFIX = ""
    BACKLOG = 128

    def __init__(self) -> None:
        self._queue: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        self.api_key: str | None = None
        self.known_models: set[str] | None = None
        self.models_route = True
        """False: GET /v1/models answers 404, as some local servers do."""
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PREFIX}"

    def script(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=self.BACKLOG)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            await self._runner.cleanup()


class FakeLLM(ScriptedServer):
    PREFIX = "/v1"
    BACKLOG = 1024

    def __init__(self) -> None:
        super().__init__()
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.report_usage = True
        """False: like llama-cpp-python's server, send no ``usage`` in streams (and none in whole replies)."""
        self.request_times: list[float] = []
        self.auth_headers: list[str | None] = []
        self._ids = itertools.count(1)
        self.record = True
        self._closing = asyncio.Event()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        await super().__aexit__(*exc)

    async def _models(self, request: web.Request) -> web.Response:
        if not self.models_route:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        names = sorted(self.known_models or {"gpt-4o-mini"})
        return web.json_response({"object": "list", "data": [{"id": n, "object": "model"} for n in names]})

    def _next(self, body: dict[str, Any]) -> Reply:
        if self._queue:
            return self._queue.pop(0)
        if self.responder is not None:
            return self.responder(body)
        return Reply(status=500, error_body={"error": {"message": "fake LLM: script exhausted"}})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.record:
            self.requests.append(body)
            self.request_times.append(time.monotonic())
            self.auth_headers.append(request.headers.get("Authorization"))
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        if self.known_models is not None and body.get("model") not in self.known_models:
            return web.json_response(
                {"error": {"message": f"The model `{body.get('model')}` does not exist"}}, status=404
            )
        refused = openai_parameter_error(body)
        if refused is not None:
            return web.json_response({"error": refused}, status=400)
        reply = self._next(body)
        if reply.hang:
            await self._closing.wait()  # until the test's server shuts down
            return web.json_response({"error": {"message": "fake LLM: shutting down"}}, status=503)
        if reply.gate is not None:
            await reply.gate.wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return web.json_response(reply.error_body or {}, status=reply.status, headers=reply.headers)
        model = reply.model or body.get("model", "fake")
        cid = f"chatcmpl-{next(self._ids)}"
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        }
        calls = [
            {"id": f"call_{next(self._ids)}", "type": "function", "function": {"name": n, "arguments": a}}
            for n, a in reply.tool_calls
        ]
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if calls:
                msg["tool_calls"] = calls
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": msg,
                            "finish_reason": reply.finish or ("tool_calls" if calls else "stop"),
                        }
                    ],
                    **({"usage": usage} if self.report_usage else {}),
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        n = max(1, reply.fragment)
        out = [chunk({"role": "assistant", "content": ""})]
        for i in range(0, len(reply.text), n):
            out.append(chunk({"content": reply.text[i : i + n]}))
        for idx, c in enumerate(calls):
            fn = c["function"]
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": idx,
                                "id": c["id"],
                                "type": "function",
                                "function": {"name": fn["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for i in range(0, len(fn["arguments"]), n):
                out.append(
                    chunk(
                        {
                            "tool_calls": [
                                {"index": idx, "function": {"arguments": fn["arguments"][i : i + n]}}
                            ]
                        }
                    )
                )
        out.append(chunk({}, reply.finish or ("tool_calls" if calls else "stop")))
        if (
            self.report_usage
            and reply.stream_usage
            and (body.get("stream_options") or {}).get("include_usage")
        ):
            out.append(
                b"data: "
                + json.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                ).encode()
                + b"\n\n"
            )
        out.append(b"data: [DONE]\n\n")
        if reply.split_writes:
            for piece in out:
                await resp.write(piece)
                await asyncio.sleep(0)
        else:
            await resp.write(b"".join(out))
        await resp.write_eof()
        return resp


def react_responder(
    tool_steps: int, tool: str = "noop", final: str = "done"
) -> Callable[[dict[str, Any]], Reply]:
    """Stateless script for many concurrent sessions: call ``tool`` until ``tool_steps`` results are in."""

    def respond(body: dict[str, Any]) -> Reply:
        done = sum(1 for m in body.get("messages", ()) if m.get("role") == "tool")
        if done < tool_steps:
            return tool_call(tool, {"i": done})
        return text(final)

    return respond


async def _serve_forever(latency: float, tool_steps: int) -> None:
    async with FakeLLM() as llm:
        llm.record = False
        base = react_responder(tool_steps)

        def respond(body: dict[str, Any]) -> Reply:
            reply = base(body)
            reply.delay = latency
            return reply

        llm.responder = respond
        print(llm.port, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":  # used by bench/: the server in its own process, so it doesn't skew CPU figures
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--tool-steps", type=int, default=5)
    ns = ap.parse_args()
    asyncio.run(_serve_forever(ns.latency, ns.tool_steps))
