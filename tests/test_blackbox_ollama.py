"""README's Ollama set-up (``OPENAI_BASE_URL=http://localhost:11434/v1``, ``AGENT_MODEL=llama3.1``, no key)
against a loopback server with Ollama's quirks: ``GET /v1/models`` lists every model with its tag
(``llama3.1:latest``) while chat accepts the bare name too, and an unknown model is a 404 naming it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.fakes.discord_server import FakeDiscord
from tests.test_blackbox_operator import agentbot

PULLED = {"llama3.1:latest", "qwen2.5:7b"}


def _known(name: str) -> bool:
    return name in PULLED or f"{name}:latest" in PULLED


async def _models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": n, "object": "model"} for n in sorted(PULLED)]}
    )


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not _known(body["model"]):
        message = f'model "{body["model"]}" not found, try pulling it first'
        return web.json_response({"error": {"message": message, "type": "api_error"}}, status=404)
    reply = {"role": "assistant", "content": "pong"}
    return (
        web.json_response(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
            }
        )
        if not body.get("stream")
        else await _stream(request, body)
    )


async def _stream(request: web.Request, body: dict) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for delta, finish in (({"role": "assistant", "content": "pong"}, None), ({}, "stop")):
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    return resp


@pytest.fixture
async def ollama() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
    await runner.cleanup()


async def test_doctor_accepts_readmes_ollama_model_name_without_its_tag(
    ollama: str, fake: FakeDiscord, tmp_path: Path
) -> None:
    env = {
        "OPENAI_BASE_URL": ollama,
        "AGENT_MODEL": "llama3.1",
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "MEMORY_ENABLED": "false",
        "ROUTER_CLASSIFIER": "heuristic",
        "PYTHON_SANDBOX": "off",
    }
    code, out, err = await agentbot(tmp_path, "ask", "ping", env=env)
    assert (code, out) == (0, "pong\n"), err  # the bare name works for chat, as on Ollama
    code, out, err = await agentbot(tmp_path, "doctor", env=env)
    line = next(x for x in out.splitlines() if "provider openai" in x)
    assert line.startswith("ok") and "llama3.1" in line, (
        line
    )  # not "does not serve llama3.1 (llama3.1:latest)"
    assert code == 0, out + err
    # A model that was never pulled is still named.
    code, out, _ = await agentbot(tmp_path, "doctor", env=env | {"AGENT_MODEL": "mistral"})
    line = next(x for x in out.splitlines() if "provider openai" in x)
    assert code == 1 and line.startswith("FAIL") and "does not serve mistral" in line, line
