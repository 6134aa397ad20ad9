"""``agentbot ask`` against OpenAI-compatible servers that answer in odd but real ways (proxies, local
servers, OpenRouter), each a loopback server whose next answers are written byte for byte by the test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.served import served
from tests.test_blackbox_operator import agentbot

Answer = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


class RawServer:
    """``/v1/chat/completions`` answering with the next scripted handler; every request body kept."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if not self.answers:
            return web.json_response({"error": {"message": "script exhausted"}}, status=500)
        return await self.answers.pop(0)(request, body)

    def env(self, **extra: str) -> dict[str, str]:
        return {"OPENAI_BASE_URL": self.url, "AGENT_MODEL": "llama3.1", "MEMORY_ENABLED": "false"} | extra


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server._chat)
    async with served(app) as url:
        server.url = f"{url}/v1"
        yield server


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "llama3.1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def sse(*chunks: dict[str, Any], sep: str = "\n") -> Answer:
    async def answer(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for c in chunks:
            await resp.write(f"data: {json.dumps(c)}{sep}{sep}".encode())
        await resp.write(f"data: [DONE]{sep}{sep}".encode())
        return resp

    return answer


def whole(message: dict[str, Any], finish: str = "stop", **extra: Any) -> Answer:
    async def answer(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        return web.json_response({"id": "c", "object": "chat.completion", "choices": [choice], **extra})

    return answer


def said(text: str) -> Answer:
    return sse(chunk({"content": text}), chunk({}, "stop"))


def call(name: str, arguments: Any, index: int = 0, id: str | None = "call_a") -> dict[str, Any]:
    c: dict[str, Any] = {
        "index": index,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    if id is not None:
        c["id"] = id
    return c


async def test_tool_arguments_sent_as_an_object_run_the_tool(raw: RawServer, tmp_path: Path) -> None:
    # Some servers and proxies send ``arguments`` as a JSON object instead of the string OpenAI sends.
    expr = {"expression": "2**32"}
    raw.answers += [
        sse(chunk({"role": "assistant", "tool_calls": [call("calculator", expr)]}), chunk({}, "tool_calls")),
        said("4294967296"),
        whole({"content": None, "tool_calls": [call("calculator", expr)]}, "tool_calls"),
        whole({"content": "4294967296"}),
    ]
    for stream in ("true", "false"):
        code, out, err = await agentbot(tmp_path, "ask", "2**32?", env=raw.env(AGENT_STREAM=stream))
        assert (code, out) == (0, "4294967296\n"), err[-1500:]
        assert "Traceback" not in err
        tool_result = raw.requests[-1]["messages"][-1]
        assert tool_result["role"] == "tool" and tool_result["content"] == "4294967296", tool_result
        sent = raw.requests[-1]["messages"][-2]["tool_calls"][0]["function"]["arguments"]
        assert json.loads(sent) == expr  # sent back as the string the API expects


async def test_parallel_tool_calls_streamed_whole_at_one_index_stay_two_calls(
    raw: RawServer, tmp_path: Path
) -> None:
    # Some servers stream each parallel call whole, every one at index 0 (or with no index), with its own id.
    first = call("calculator", '{"expression": "2**32"}', id="call_1")
    second = call("calculator", '{"expression": "3*3"}', id="call_2")
    third = call("calculator", '{"expression": "1+1"}', id="call_3")
    del third["index"]
    raw.answers += [
        sse(
            chunk({"role": "assistant", "tool_calls": [first]}),
            chunk({"tool_calls": [second]}),
            chunk({"tool_calls": [third]}),
            chunk({}, "tool_calls"),
        ),
        said("4294967296, 9 and 2"),
    ]
    code, out, err = await agentbot(tmp_path, "ask", "2**32, 3*3 and 1+1?", env=raw.env())
    assert (code, out) == (0, "4294967296, 9 and 2\n"), err[-1500:]
    results = [m["content"] for m in raw.requests[-1]["messages"] if m["role"] == "tool"]
    assert results == ["4294967296", "9", "2"], err  # not one call with '{...}{...}' as arguments


def page(status: int, text: str, content_type: str) -> Answer:
    async def answer(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=status, text=text, content_type=content_type)

    return answer


async def test_a_200_that_is_not_json_is_one_error_line_not_a_traceback(
    raw: RawServer, tmp_path: Path
) -> None:
    # A proxy's login page, or a JSON value that is not an object, answered with 200 to a streamed call.
    raw.answers += [page(200, "<html><body>Sign in to the proxy</body></html>", "text/html")]
    raw.answers += [page(200, "[1, 2]", "application/json")]
    for _ in range(2):
        code, out, err = await agentbot(tmp_path, "ask", "hi", env=raw.env(MODEL_MAX_ATTEMPTS="1"))
        assert code == 1 and out == "", err[-1500:]
        assert "Traceback" not in err and "Error:" not in err, err[-1500:]
        line = next(x for x in err.splitlines() if x.startswith("error:"))
        assert "not Chat Completions JSON" in line and "1 attempts" not in line, line


def error_200(message: str, code: int | None = None) -> Answer:
    async def answer(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        err: dict[str, Any] = {"message": message} | ({"code": code} if code is not None else {})
        return web.json_response({"error": err})

    return answer


async def test_an_error_sent_with_http_200_is_shown_and_retried_by_its_code(
    raw: RawServer, tmp_path: Path
) -> None:
    # OpenRouter (and some proxies) answer HTTP 200 with {"error": {"code", "message"}} and no choices.
    raw.answers += [error_200("Rate limit exceeded: free-models-per-day", 429), said("Paris.")]
    code, out, err = await agentbot(tmp_path, "ask", "Capital of France?", env=raw.env())
    assert (code, out) == (0, "Paris.\n"), err[-1500:]
    assert "Rate limit exceeded" in err and "retrying" in err, err
    raw.requests.clear()
    raw.answers += [error_200("No auth credentials found", 401), said("never")]
    for stream in ("true", "false"):
        code, out, err = await agentbot(tmp_path, "ask", "hi", env=raw.env(AGENT_STREAM=stream))
        assert code == 1 and out == "", err[-1500:]
        line = next(x for x in err.splitlines() if x.startswith("error:"))
        assert "No auth credentials found" in line and "OPENAI_API_KEY" in line, line
        assert "empty answer" not in err and "estimated" not in err, err  # nothing was answered or billed
        raw.answers[:] = [error_200("No auth credentials found", 401)]
    assert len(raw.requests) == 2  # a refused key is not asked again
    raw.answers[:] = [error_200("Upstream idle timeout")]  # no code: said as it is, retryable
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=raw.env(MODEL_MAX_ATTEMPTS="1"))
    assert code == 1 and out == "" and "Upstream idle timeout" in err and "HTTP 200" in err, err[-1500:]


async def test_content_sent_as_a_list_of_parts_is_the_answer(raw: RawServer, tmp_path: Path) -> None:
    # Mistral's reasoning models (and some proxies) send content as typed parts, thinking apart from text.
    parts = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
        {"type": "text", "text": "Paris."},
    ]
    raw.answers += [
        sse(
            chunk({"role": "assistant", "content": parts[:1]}),
            chunk({"content": parts[1:]}),
            chunk({}, "stop"),
        ),
        whole({"content": parts}),
    ]
    for stream in ("true", "false"):
        code, out, err = await agentbot(
            tmp_path, "ask", "Capital of France?", env=raw.env(AGENT_STREAM=stream)
        )
        assert (code, out) == (0, "Paris.\n"), err[-1500:]


async def test_a_proxys_html_error_page_is_said_in_words_not_markup(raw: RawServer, tmp_path: Path) -> None:
    style = "<style>" + "body{font-family:sans-serif;margin:0 auto;}" * 20 + "</style>"
    html = f"<!DOCTYPE html><html><head>{style}<title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>"
    raw.answers += [page(502, html, "text/html")]
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=raw.env(MODEL_MAX_ATTEMPTS="1"))
    assert code == 1 and out == ""
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "502 Bad Gateway" in line and "<" not in line and "font-family" not in line, line


def refuse(status: int, body: dict[str, Any]) -> Answer:
    async def answer(request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return answer


async def test_error_bodies_of_vllm_and_fastapi_servers_are_said_plainly(
    raw: RawServer, tmp_path: Path
) -> None:
    # vLLM's errors are top-level ({"object": "error", "message", "type", "code"}); FastAPI's {"detail"}.
    raw.answers += [
        refuse(
            400, {"object": "error", "message": "Input is invalid: tool_choice", "type": "BadRequestError"}
        ),
        refuse(400, {"detail": "max_tokens must be at most 4096"}),
    ]
    for want in ("Server said: Input is invalid: tool_choice", "max_tokens must be at most 4096"):
        code, out, err = await agentbot(tmp_path, "ask", "hi", env=raw.env())
        assert code == 1 and out == ""
        line = next(x for x in err.splitlines() if x.startswith("error:"))
        assert want in line and "{'" not in line, line  # not a Python dict's repr


async def test_tool_calls_without_ids_get_ids_unique_in_the_conversation(
    raw: RawServer, tmp_path: Path
) -> None:
    # Some local servers send no tool-call id; every step's first call became "call_0", and proxies in
    # front of Anthropic (and Mistral's API) refuse a conversation with a tool_call id used twice.
    async def strict(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        ids = [c["id"] for m in body["messages"] for c in m.get("tool_calls") or ()]
        if len(ids) != len(set(ids)):
            return web.json_response(
                {"error": {"message": f"tool_use ids must be unique: {ids}"}}, status=400
            )
        return await answers.pop(0)(request, body)

    step = sse(
        chunk({"role": "assistant", "tool_calls": [call("calculator", '{"expression": "1+1"}', id=None)]})
    )
    answers = [step, step, said("2 and 2")]
    raw.answers += [strict, strict, strict]
    for stream in ("true", "false"):
        code, out, err = await agentbot(tmp_path, "ask", "1+1 twice", env=raw.env(AGENT_STREAM=stream))
        assert (code, out) == (0, "2 and 2\n"), err[-1500:]
        whole_step = whole(
            {"content": None, "tool_calls": [call("calculator", '{"expression": "1+1"}', id=None)]},
            "tool_calls",
        )
        answers[:] = [whole_step, whole_step, whole({"content": "2 and 2"})]
        raw.answers[:] = [strict, strict, strict]


async def test_a_reasoning_models_think_block_is_not_part_of_the_answer(
    raw: RawServer, tmp_path: Path
) -> None:
    # vLLM without --reasoning-parser, llama.cpp with --reasoning-format none and older Ollama leave
    # DeepSeek-R1 / Qwen3 thinking in the content; R1's template opens <think> in the prompt itself.
    raw.answers += [
        sse(
            chunk({"content": "<think>\nThe user asks for"}),
            chunk({"content": " a capital.\n</think>\n\nParis."}),
        ),
        whole({"content": "Okay, France's capital is Paris.\n</think>\n\nParis."}),
    ]
    for stream in ("true", "false"):
        code, out, err = await agentbot(
            tmp_path, "ask", "Capital of France?", env=raw.env(AGENT_STREAM=stream)
        )
        assert (code, out) == (0, "Paris.\n"), err[-1500:]


async def test_a_server_that_refuses_stream_options_is_asked_again_without_them(
    raw: RawServer, tmp_path: Path
) -> None:
    # Azure OpenAI before api-version 2024-09 and some proxies refuse the usage request in streams.
    async def picky(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if "stream_options" in body:
            message = "Unrecognized request argument supplied: stream_options"
            return web.json_response(
                {"error": {"message": message, "type": "invalid_request_error"}}, status=400
            )
        return await answers.pop(0)(request, body)

    answers = [
        sse(chunk({"role": "assistant", "tool_calls": [call("calculator", '{"expression": "2**10"}')]})),
        said("1024"),
    ]
    raw.answers += [picky] * 3
    code, out, err = await agentbot(tmp_path, "ask", "2**10?", env=raw.env())
    assert (code, out) == (0, "1024\n"), err[-1500:]
    assert ["stream_options" in b for b in raw.requests] == [True, False, False]  # remembered for step 2


async def test_an_account_out_of_credit_is_said_at_once_not_retried(raw: RawServer, tmp_path: Path) -> None:
    # OpenAI answers 429 insufficient_quota (retrying never helps); OpenRouter and DeepSeek answer 402.
    message = "You exceeded your current quota, please check your plan and billing details."
    raw.answers += [
        refuse(
            429, {"error": {"message": message, "type": "insufficient_quota", "code": "insufficient_quota"}}
        ),
        refuse(
            402, {"error": {"message": "Insufficient credits. Add more using https://x/credits", "code": 402}}
        ),
    ]
    for said_ in (message, "Insufficient credits"):
        raw.requests.clear()
        code, out, err = await agentbot(tmp_path, "ask", "hi", env=raw.env())
        assert code == 1 and out == "", err[-1500:]
        assert "retrying" not in err and len(raw.requests) == 1, err  # not 16 s of retries first
        line = next(x for x in err.splitlines() if x.startswith("error:"))
        assert said_ in line and "OPENAI_API_KEY" in line, line


async def test_openrouters_mid_stream_error_is_retried_not_passed_off_as_the_answer(
    raw: RawServer, tmp_path: Path
) -> None:
    # OpenRouter's documented mid-stream error: an "error" object beside a choice whose finish_reason
    # is "error"; the half answer before it was printed as if whole.
    broken = chunk({"content": ""}, "error") | {
        "error": {"code": "server_error", "message": "Provider disconnected"}
    }
    raw.answers += [
        sse(chunk({"content": "The three causes were"}), broken),
        said("The three causes were A, B and C."),
    ]
    code, out, err = await agentbot(tmp_path, "ask", "Why?", env=raw.env())
    assert (code, out) == (0, "The three causes were A, B and C.\n"), err[-1500:]
    assert "Provider disconnected" in err and "retrying" in err, err


async def test_a_rate_limit_for_longer_than_agentbot_waits_is_said_at_once(
    raw: RawServer, tmp_path: Path
) -> None:
    # A daily quota (OpenRouter's free models, Gemini's free tier) asks for hours: four capped 120 s
    # waits came first, eight minutes before the same error.
    async def daily(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        error = {"error": {"message": "Rate limit exceeded: free-models-per-day", "code": 429}}
        return web.json_response(error, status=429, headers={"Retry-After": "36000"})

    raw.answers += [daily, said("never")]
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=raw.env())
    assert code == 1 and out == "" and "retrying" not in err, err[-1500:]
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "free-models-per-day" in line and "10 h" in line, line
    assert len(raw.requests) == 1
