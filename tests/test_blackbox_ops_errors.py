"""Error bodies of the servers operators run, as they send them, read by the adapters over real HTTP on
127.0.0.1."""

from __future__ import annotations

import httpx
import pytest
from aiohttp import web

from agent.messages import Message
from agent.models.base import ContextOverflowError, ModelSettings
from agent.models.openai import OpenAIChatModel
from tests.fakes.served import served


async def test_llama_cpps_context_overflow_is_a_context_overflow(http: httpx.AsyncClient) -> None:
    # llama.cpp's server (llama-server, --ctx-size 4096): the router escalates a conversation that
    # outgrew a model to a bigger tier only when it is told so; this was a plain failed call.
    body = {
        "error": {
            "code": 400,
            "message": "request (4476 tokens) exceeds the available context size (4096 tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 4476,
            "n_ctx": 4096,
        }
    }

    async def chat(request: web.Request) -> web.Response:
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app) as url:
        model = OpenAIChatModel("qwen2.5-7b", base_url=f"{url}/v1", client=http, max_attempts=1)
        with pytest.raises(ContextOverflowError, match="too long"):
            async for _ in model.stream([Message("user", "x")], [], ModelSettings(stream=False)):
                pass
