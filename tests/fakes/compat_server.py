"""An OpenAI-compatible server on 127.0.0.1 that answers as one real server does, byte for byte as its
documentation or source shows it: vLLM, Ollama, llama.cpp's server, DeepSeek and OpenRouter each have
shapes and refusals of their own that the scripted :mod:`tests.fakes.llm_server` does not speak.

    async with CompatServer(vllm_auto_tools=False) as srv:   # vLLM started without tool calling
        srv.answers.append(said("hello"))

Each chat request is answered by the next of ``answers`` (a handler), else by the server's own rules
(``vllm_auto_tools``, ``ollama_num_ctx``), else by ``default``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Self

from aiohttp import web

Answer = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]

VLLM_NO_AUTO_TOOLS = {  # vllm/entrypoints/openai/protocol.py, the request validator's words
    "object": "error",
    "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    } | extra


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [], "usage": usage}


def sse(*chunks: dict[str, Any], comments: tuple[str, ...] = (), done: bool = True) -> Answer:
    """A stream of ``chunks`` (each ``data: {json}``) after ``comments`` (``: text`` lines), then [DONE]
    (``done``; without it and a finish_reason, the stream broke off, as at a proxy's timeout)."""

    async def answer(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for c in comments:
            await resp.write(f": {c}\n\n".encode())
        for c in chunks:
            await resp.write(f"data: {json.dumps(c)}\n\n".encode())
        if done:
            await resp.write(b"data: [DONE]\n\n")
        return resp

    return answer


def said(text: str, usage: tuple[int, int] | None = None) -> Answer:
    extra = (usage_chunk(*usage),) if usage else ()
    return sse(chunk({"role": "assistant", "content": text}), chunk({}, "stop"), *extra)


def tool_call(
    name: str, args: dict[str, Any], usage: tuple[int, int] = (900, 30), id: str | None = "call_a"
) -> Answer:
    """One streamed tool call (``id`` None: sent without one, as mlx-lm and some llama.cpp builds do)."""
    fn = {"name": name, "arguments": json.dumps(args)}
    call = {"index": 0, "type": "function", "function": fn} | ({"id": id} if id is not None else {})
    return sse(
        chunk({"role": "assistant", "tool_calls": [call]}), chunk({}, "tool_calls"), usage_chunk(*usage)
    )


def whole(text: str) -> Answer:
    """A reply not streamed: one ``chat.completion`` object."""

    async def answer(request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
        return web.json_response(
            {"id": "c", "object": "chat.completion", "choices": [choice], "usage": usage}
        )

    return answer


def status(code: int, body: dict[str, Any]) -> Answer:
    async def answer(request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body, status=code)

    return answer


def tokens(value: object) -> int:
    """This fake's tokenizer: 4 characters of JSON a token."""
    return len(json.dumps(value)) // 4


def ollama_cut(body: dict[str, Any], num_ctx: int) -> dict[str, Any]:
    """``body`` as Ollama's chatPrompt leaves it for a model loaded with ``num_ctx``: the oldest messages
    dropped until the rest fit, system messages and the last message kept, nothing said to the client.
    ``prompt_tokens`` (what it reports) is the count of what was left."""
    messages, tools = list(body.get("messages") or []), body.get("tools") or []
    while tokens(messages) + tokens(tools) > num_ctx:
        oldest = next((i for i, m in enumerate(messages[:-1]) if m["role"] != "system"), None)
        if oldest is None:
            break
        del messages[oldest]
    return body | {"messages": messages, "prompt_tokens": min(num_ctx, tokens(messages) + tokens(tools))}


def mistral_id_error(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mistral's 400 for the first tool call id that breaks its rule (mistral-common's validator)."""
    called: set[str] = set()
    for m in messages:
        ids = [c.get("id", "") for c in m.get("tool_calls") or ()]
        if m["role"] == "assistant":
            called = set(ids)
        if m["role"] == "tool":
            ids = [m.get("tool_call_id", "")]
        for i in ids:
            if not (len(i) == 9 and i.isascii() and i.isalnum()):
                said = f"Tool call id was {i} but must be a-z, A-Z, 0-9, with a length of 9."
                return {"object": "error", "message": said, "type": "invalid_function_call", "code": "3280"}
            if m["role"] == "tool" and i not in called:
                said = f"Unexpected tool call id {i} in tool results"
                return {"object": "error", "message": said, "type": "invalid_request_message_order"}
    return None


def remembers_task(answer: str, forgot: str) -> Answer:
    """``answer`` while the conversation still holds a user message, else ``forgot``, as a model that
    lost its task does."""

    async def reply(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        asked = any(m["role"] == "user" for m in body["messages"])
        usage = (body.get("prompt_tokens") or tokens(body["messages"]), 9)
        return await said(answer if asked else forgot, usage)(request, body)

    return reply


class CompatServer:
    """``/v1/chat/completions`` and ``/v1/models`` (listing ``models``); every chat body kept."""

    def __init__(self, *, vllm_auto_tools: bool = True, models: tuple[str, ...] = ("m",)) -> None:
        self.vllm_auto_tools = vllm_auto_tools
        """False: refuse tools as ``vllm serve`` does without ``--enable-auto-tool-choice``."""
        self.mistral_ids = False
        """True: refuse a tool call id that is not 9 letters and digits, as Mistral's API (and its templates
        in vLLM and mlx-lm) does, and a tool result whose id no call of the turn before has."""
        self.deepseek_thinking = False
        """True: refuse a conversation with an assistant turn lacking ``reasoning_content``, as DeepSeek's
        thinking mode does once tools are offered."""
        self.ollama_num_ctx: int | None = None
        """Set: be Ollama (``/api/version``, ``/api/show``, ``/api/ps`` with the models called loaded at this
        context), and cut the prompt to this many tokens as it does (oldest messages first, the system
        prompt and the last message kept), hand the answer only what is left, and report what was read."""
        self.models = models
        self.llama_cpp_n_ctx: int | None = None
        """Set: answer ``GET /props`` as llama-server does, each slot holding this many tokens."""
        self.max_model_len: int | None = None
        """Set: list each model with it, as vLLM does (its ``--max-model-len``)."""
        self.answers: list[Answer] = []
        self.default: Answer = said("default answer")
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.ollama_num_ctx is not None:
            body = ollama_cut(body, self.ollama_num_ctx)
        self.requests.append(body)  # as the model reads it
        if self.deepseek_thinking and body.get("tools"):
            at = next(
                (
                    i
                    for i, m in enumerate(body["messages"])
                    if m["role"] == "assistant" and "reasoning_content" not in m
                ),
                None,
            )
            if at is not None:
                said = (
                    f"Missing `reasoning_content` field in the assistant message at message index {at}. For more "
                    "information, please refer to https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"
                )
                error = {
                    "message": said,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_request_error",
                }
                return web.json_response({"error": error}, status=400)
        if self.mistral_ids and (refused := mistral_id_error(body["messages"])) is not None:
            return web.json_response(refused, status=400)
        if not self.vllm_auto_tools and body.get("tools") and body.get("tool_choice", "auto") == "auto":
            return web.json_response(VLLM_NO_AUTO_TOOLS, status=400)
        answer = self.answers.pop(0) if self.answers else self.default
        return await answer(request, body)

    async def _ollama(self, request: web.Request) -> web.Response:
        if self.ollama_num_ctx is None:
            return web.Response(status=404, text="404 page not found")
        if request.path == "/api/version":
            return web.json_response({"version": "0.12.6"})
        if request.path == "/api/show":
            return web.json_response({"capabilities": ["completion", "tools"]})
        called = sorted({str(b.get("model")) for b in self.requests})
        loaded = [
            {"name": f"{m}:latest", "model": f"{m}:latest", "context_length": self.ollama_num_ctx}
            for m in called
        ]
        return web.json_response({"models": loaded})

    async def _props(self, request: web.Request) -> web.Response:
        if self.llama_cpp_n_ctx is None:
            return web.Response(status=404, text="404 page not found")
        settings = {"n_ctx": self.llama_cpp_n_ctx, "params": {"n_predict": -1}}
        return web.json_response(
            {"default_generation_settings": settings, "total_slots": 4, "chat_template": ""}
        )

    async def _list(self, request: web.Request) -> web.Response:
        extra = {"max_model_len": self.max_model_len} if self.max_model_len else {}
        rows = [{"id": m, "object": "model", "owned_by": "vllm"} | extra for m in self.models]
        return web.json_response({"object": "list", "data": rows})

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._list)
        for path in ("/api/version", "/api/ps"):
            app.router.add_get(path, self._ollama)
        app.router.add_post("/api/show", self._ollama)
        app.router.add_get("/props", self._props)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            await self._runner.cleanup()
