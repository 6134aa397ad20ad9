"""Error bodies of the servers operators run, as they send them, read by the adapters over real HTTP on
127.0.0.1."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from agent.config import AgentSettings, ConfigError, parse_settings
from agent.messages import Message
from agent.models.base import ContextOverflowError, ModelError, ModelSettings, ModelUnavailableError
from agent.models.openai import OpenAIChatModel
from bot.doctor import _provider
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
        with pytest.raises(ContextOverflowError, match="past the context this server was started with"):
            async for _ in model.stream([Message("user", "x")], [], ModelSettings(stream=False)):
                pass


@pytest.mark.parametrize("stream", [True, False])
async def test_a_web_page_answering_200_names_the_base_url_setting(
    http: httpx.AsyncClient, stream: bool
) -> None:
    # OPENAI_BASE_URL at Open WebUI's address (port 3000 or 8080) rather than the model server's: its
    # page answers 200, and the error said only "not Chat Completions JSON".
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>Open WebUI</title><div id=app></div>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", page)
    async with served(app) as url:
        model = OpenAIChatModel("llama3.1", base_url=f"{url}/v1", client=http, max_attempts=1)
        with pytest.raises(ModelError) as e:
            async for _ in model.stream([Message("user", "x")], [], ModelSettings(stream=stream)):
                pass
    assert f"{url}/v1 sent a response that is not Chat Completions JSON: check that OPENAI_BASE_URL" in str(
        e.value
    )


async def test_https_to_a_plain_http_server_says_to_write_http_at_once(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Ollama, llama.cpp and vLLM serve plain HTTP; OPENAI_BASE_URL=https://... was "could not be reached
    # (ConnectError): check OPENAI_BASE_URL and that the server runs", retried for 18 s, while it ran.
    asked = 0

    async def chat(request: web.Request) -> web.Response:
        nonlocal asked
        asked += 1
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app) as url:
        https = url.replace("http://", "https://") + "/v1"
        model = OpenAIChatModel("llama3.1", base_url=https, client=http, max_attempts=3, backoff_initial=0.01)
        with pytest.raises(
            ModelUnavailableError, match="answered plain HTTP to https://: write http:// in OPENAI_BASE_URL"
        ):
            async for _ in model.stream([Message("user", "x")], [], ModelSettings()):
                pass
        s = parse_settings(AgentSettings, {"OPENAI_BASE_URL": https, "DATA_DIR": str(tmp_path)})
        with pytest.raises(ConfigError, match=f"^{re.escape(https)} answered plain HTTP to https://"):
            await _provider("openai", {"llama3.1": ["AGENT_MODEL"]}, s, http)
    assert asked == 0


async def test_an_mcp_stdio_server_that_dies_at_start_is_named_with_its_last_stderr_line() -> None:
    # Its stderr went to /dev/null: an operator saw only "Connection closed" for a server whose own
    # last line said what to fix. The token it was given and echoes back is never shown.
    from agent.tools.mcp import McpServer, McpTools

    code = (
        "import os, sys\n"
        "sys.stderr.write('starting with token ' + os.environ['WEATHER_TOKEN'] + '\\n' + 'x' * 100_000 + '\\n')\n"
        "sys.stderr.write(\"ModuleNotFoundError: No module named 'mcp_weather' (token \" + os.environ['WEATHER_TOKEN'] + ')\\n')\n"
        "sys.exit(1)\n"
    )
    server = McpServer(
        name="weather", command=sys.executable, args=("-c", code), env={"WEATHER_TOKEN": "wt-12345678"}
    )
    async with McpTools([server]) as tools:
        why = tools.problems["weather"]
    assert "its last stderr line: ModuleNotFoundError: No module named 'mcp_weather' (token ***)" in why, why
    assert "wt-12345678" not in why
