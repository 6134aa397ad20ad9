"""``agentbot doctor``'s checks against servers an operator really runs, on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from agent.config import AgentSettings, ConfigError, parse_settings
from bot.doctor import _provider
from tests.fakes.served import served


async def test_the_model_probe_waits_model_timeout_and_names_it_when_the_server_stays_silent(
    tmp_path: Path,
) -> None:
    # llama.cpp lists its GGUF file, not the name asked for, so doctor makes a one-token call; a
    # CPU-only server answers it only once the model is loaded. doctor gave up at its own 10 s with
    # "FAIL provider openai: ReadTimeout" for a server `ask` (MODEL_TIMEOUT, 120 s) used fine.
    silent, released = asyncio.Event(), asyncio.Event()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "/models/qwen2.5-7b-q4_k_m.gguf"}]})

    async def chat(request: web.Request) -> web.Response:
        if silent.is_set():
            await released.wait()  # answers nothing until the test is over
        await asyncio.sleep(0.3)  # loading the model
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": "p"}}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app) as url, httpx.AsyncClient(timeout=0.1) as client:  # doctor's own, shortened
        env = {"OPENAI_BASE_URL": f"{url}/v1", "MODEL_TIMEOUT": "1", "DATA_DIR": str(tmp_path)}
        s = parse_settings(AgentSettings, env)
        specs = {"llama": ["AGENT_MODEL"]}
        assert "serves every model" in await _provider("openai", specs, s, client)
        silent.set()
        with pytest.raises(ConfigError, match=r"sent nothing for 1 s .* raise MODEL_TIMEOUT"):
            await _provider("openai", specs, s, client)
        released.set()  # else the server's shutdown waits 60 s for the handler


async def test_a_wrong_gemini_key_is_named_as_the_key_not_the_base_url(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # Google answers a wrong key with HTTP 400 API_KEY_INVALID (not 401), on ListModels too.
    async def models(request: web.Request) -> web.Response:
        error = {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
        return web.json_response({"error": error}, status=400)

    app = web.Application()
    app.router.add_get("/v1beta/models", models)
    async with served(app) as url:
        env = {"GEMINI_BASE_URL": f"{url}/v1beta", "GEMINI_API_KEY": "AIza-wrong", "DATA_DIR": str(tmp_path)}
        s = parse_settings(AgentSettings, env)
        with pytest.raises(ConfigError, match=r"rejected the API key .*check GEMINI_API_KEY$"):
            await _provider("gemini", {"gemini:gemini-2.5-flash": ["AGENT_MODEL"]}, s, http)


async def test_a_model_ollama_lacks_is_named_with_the_base_url_as_the_operator_set_it(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # It said "http://127.0.0.1:PORT does not serve llama3.1", without the /v1 the operator had set
    # right, while every other message says a path usually ends in /v1.
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "llama3.1:8b"}]})

    async def chat(request: web.Request) -> web.Response:
        error = {"message": 'model "llama3.1" not found, try pulling it first', "type": "api_error"}
        return web.json_response({"error": error}, status=404)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app) as url:
        s = parse_settings(AgentSettings, {"OPENAI_BASE_URL": f"{url}/v1", "DATA_DIR": str(tmp_path)})
        with pytest.raises(ConfigError) as e:
            await _provider("openai", {"llama3.1": ["AGENT_MODEL"]}, s, http)
    assert str(e.value).startswith(f"{url}/v1 does not serve llama3.1 (AGENT_MODEL)"), e.value
    assert str(e.value).endswith("(llama3.1:8b)")


async def test_an_anthropic_gateway_without_a_model_list_is_checked_with_a_one_token_call(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # Anthropic-compatible gateways (DeepSeek's, z.ai's, LiteLLM's) serve POST /v1/messages but no
    # GET /v1/models: doctor failed them ("answered HTTP 404: check ANTHROPIC_BASE_URL") while runs worked.
    asked: list[str] = []

    async def messages(request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        asked.append(model)
        if model != "glm-4.6":
            error = {"type": "not_found_error", "message": f"model: {model}"}
            return web.json_response({"type": "error", "error": error}, status=404)
        return web.json_response({"type": "message", "content": [{"type": "text", "text": "p"}]})

    app = web.Application()
    app.router.add_post("/api/anthropic/v1/messages", messages)
    async with served(app) as url:
        env = {
            "ANTHROPIC_BASE_URL": f"{url}/api/anthropic",
            "ANTHROPIC_API_KEY": "k",
            "DATA_DIR": str(tmp_path),
        }
        s = parse_settings(AgentSettings, env)
        assert "serves every model" in await _provider(
            "anthropic", {"anthropic:glm-4.6": ["AGENT_MODEL"]}, s, http
        )
        with pytest.raises(ConfigError, match=r"does not serve anthropic:glm-5 \(complex\)"):
            await _provider("anthropic", {"anthropic:glm-5": ["complex"]}, s, http)
    assert asked == ["glm-4.6", "glm-5"]


async def test_a_one_token_call_refused_for_the_key_credit_or_a_failing_server_is_named(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # A gateway without a model list answered the one-token call 401, 402 or 500: doctor counted the
    # model as served and said ok, and every run then failed.
    status = {"glm-key": 401, "glm-credit": 402, "glm-down": 503}

    async def messages(request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        error = {"type": "error", "message": "no"}
        return web.json_response({"type": "error", "error": error}, status=status[model])

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    async with served(app) as url:
        env = {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "k", "DATA_DIR": str(tmp_path)}
        s = parse_settings(AgentSettings, env)
        for model, said in (
            (
                "glm-key",
                r"rejected the API key on a one-token call to glm-key \(HTTP 401\): check ANTHROPIC_API_KEY",
            ),
            ("glm-credit", r"HTTP 402 \(payment required\): add credit to the account of ANTHROPIC_API_KEY"),
            ("glm-down", r"failed a one-token call to glm-down \(HTTP 503\)"),
        ):
            with pytest.raises(ConfigError, match=said):
                await _provider("anthropic", {f"anthropic:{model}": ["AGENT_MODEL"]}, s, http)


async def test_an_ollama_model_that_cannot_call_tools_fails_doctor_before_every_run_does(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # Ollama lists gemma2 like any model and refuses a call with tools (HTTP 400 "does not support
    # tools"): doctor said ok, and every run then failed at its first step.
    capabilities = {"gemma2": ["completion"], "llama3.1": ["completion", "tools"]}

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": f"{m}:latest"} for m in capabilities]})

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "0.13.5"})

    async def show(request: web.Request) -> web.Response:
        name = (await request.json())["model"].removesuffix(":latest")
        return web.json_response({"capabilities": capabilities[name], "details": {"family": name}})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/api/version", version)
    app.router.add_post("/api/show", show)
    async with served(app) as url:
        s = parse_settings(AgentSettings, {"OPENAI_BASE_URL": f"{url}/v1", "DATA_DIR": str(tmp_path)})
        assert "serves every model" in await _provider("openai", {"llama3.1": ["AGENT_MODEL"]}, s, http)
        with pytest.raises(ConfigError, match=r"is Ollama, and gemma2 cannot call tools"):
            await _provider("openai", {"gemma2": ["AGENT_MODEL"], "llama3.1": ["complex"]}, s, http)


async def test_a_gemini_model_named_as_googles_docs_write_it_is_served(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # Google's docs and AI Studio's "Get code" write models/gemini-2.5-flash, which runs accept; doctor
    # said the endpoint "does not serve gemini:models/gemini-2.5-flash", listing gemini-2.5-flash.
    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {"models": [{"name": "models/gemini-2.5-flash"}, {"name": "models/gemini-2.0-flash"}]}
        )

    app = web.Application()
    app.router.add_get("/v1beta/models", models)
    async with served(app) as url:
        env = {"GEMINI_BASE_URL": f"{url}/v1beta", "GEMINI_API_KEY": "AIza-k", "DATA_DIR": str(tmp_path)}
        s = parse_settings(AgentSettings, env)
        specs = {"gemini:models/gemini-2.5-flash": ["AGENT_MODEL"], "gemini:gemini-2.0-flash": ["simple"]}
        assert "serves every model" in await _provider("gemini", specs, s, http)
        with pytest.raises(ConfigError, match=r"does not serve gemini:models/gemini-9 \(complex\)"):
            await _provider("gemini", {"gemini:models/gemini-9": ["complex"]}, s, http)
