"""``agentbot doctor`` against loopback servers that list their models the way the real APIs do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.fakes.served import served
from tests.test_blackbox_operator import agentbot

# Anthropic's GET /v1/models lists dated ids only; its Messages API takes the aliases too.
CLAUDES = ["claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"]


async def _anthropic_models(request: web.Request) -> web.Response:
    if request.headers.get("x-api-key") != "sk-ant-test-0001":
        return web.json_response({"type": "error", "error": {"type": "authentication_error"}}, status=401)
    rows = [{"type": "model", "id": m, "display_name": m} for m in CLAUDES]
    return web.json_response(
        {"data": rows, "has_more": False, "first_id": CLAUDES[0], "last_id": CLAUDES[-1]}
    )


@pytest.fixture
async def anthropic_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/models", _anthropic_models)
    async with served(app) as url:
        yield url


def _env(anthropic_url: str, model: str) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": anthropic_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-0001",
        "AGENT_MODEL": model,
        "MEMORY_ENABLED": "false",
        "ROUTER_CLASSIFIER": "heuristic",
        "PYTHON_SANDBOX": "off",
    }


def _provider_line(out: str) -> str:
    return next(x for x in out.splitlines() if "provider anthropic" in x)


async def test_doctor_accepts_anthropic_aliases_of_the_dated_models_it_lists(
    anthropic_url: str, tmp_path: Path
) -> None:
    # ".../v1" too: the adapter calls {ANTHROPIC_BASE_URL without /v1}/v1/messages, so ask and run take it.
    _, out, _ = await agentbot(
        tmp_path, "doctor", env=_env(anthropic_url + "/v1", "anthropic:claude-sonnet-4-5")
    )
    line = _provider_line(out)
    assert line.startswith("ok"), line  # not "does not serve ..." nor "/v1/v1/models answered HTTP 404"
    # A model Anthropic does not have is still named.
    code, out, _ = await agentbot(tmp_path, "doctor", env=_env(anthropic_url, "anthropic:claude-sonnet-9"))
    line = _provider_line(out)
    assert code == 1 and line.startswith("FAIL") and "claude-sonnet-9" in line, line


async def test_doctor_fails_the_provider_of_agent_model_when_its_key_is_missing(tmp_path: Path) -> None:
    env = {"AGENT_MODEL": "gemini:gemini-2.5-flash", "MEMORY_ENABLED": "false", "PYTHON_SANDBOX": "off"}
    code, out, _ = await agentbot(tmp_path, "doctor", env=env)
    line = next(x for x in out.splitlines() if "provider gemini" in x)
    assert code == 1 and line.startswith("FAIL") and "GEMINI_API_KEY" in line, line  # not "ok ... skipped"


async def _public_models(request: web.Request) -> web.Response:
    return web.json_response(
        {"data": [{"id": "openai/gpt-4o-mini"}, {"id": "meta-llama/llama-3.1-8b-instruct"}]}
    )


async def _keyed_chat(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != "Bearer sk-or-v1-good":
        return web.json_response({"error": {"message": "No auth credentials found", "code": 401}}, status=401)
    body = await request.json()
    if not body.get("messages"):
        return web.json_response({"error": {"message": "messages: required", "code": 400}}, status=400)
    return web.json_response(
        {"error": {"message": "doctor should not pay for a call", "code": 500}}, status=500
    )


async def test_doctor_checks_the_key_where_the_model_list_is_public(tmp_path: Path) -> None:
    # OpenRouter lists its models to anyone: the list alone passed a wrong or missing key.
    app = web.Application()
    app.router.add_get("/api/v1/models", _public_models)
    app.router.add_post("/api/v1/chat/completions", _keyed_chat)
    async with served(app) as url:
        env = {
            "OPENAI_BASE_URL": f"{url}/api/v1",
            "AGENT_MODEL": "openai/gpt-4o-mini",
            "MEMORY_ENABLED": "false",
        }
        env |= {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off"}
        lines = {}
        for key in ("sk-or-v1-good", "sk-or-v1-revoked"):
            _, out, _ = await agentbot(tmp_path, "doctor", env=env | {"OPENAI_API_KEY": key})
            lines[key] = next(x for x in out.splitlines() if "provider openai" in x)
    assert lines["sk-or-v1-good"].startswith("ok"), lines
    assert lines["sk-or-v1-revoked"].startswith("FAIL") and "OPENAI_API_KEY" in lines["sk-or-v1-revoked"], (
        lines
    )


async def test_doctor_prints_its_checks_only_not_log_lines_saying_them_again(tmp_path: Path) -> None:
    # The shipped tiers with only an OpenAI key: each unconfigured model was a log warning on stdout
    # before the report that already says "skipped: ANTHROPIC_API_KEY not set".
    env = {
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "ROUTER_TIERS_FILE": str(Path(__file__).parents[1] / "agent" / "models" / "tiers.toml"),
        "MEMORY_ENABLED": "false",
        "ROUTER_CLASSIFIER": "heuristic",
        "PYTHON_SANDBOX": "off",
    }
    _, out, err = await agentbot(tmp_path, "doctor", env=env)
    assert "router_model_unconfigured" not in out + err, out + err
    *checks, total = out.strip().splitlines()
    assert all(x.startswith(("ok   ", "FAIL ")) for x in checks) and total.endswith("to fix"), out


async def _llamacpp_models(request: web.Request) -> web.Response:
    row = {"id": "/models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "object": "model", "owned_by": "llamacpp"}
    return web.json_response({"object": "list", "data": [row]})


async def _any_model_chat(request: web.Request) -> web.Response:
    body = await request.json()  # llama.cpp's server answers with its one model whatever the name
    reply = {"role": "assistant", "content": "ok"}
    return web.json_response(
        {
            "choices": [{"index": 0, "message": reply, "finish_reason": "length"}],
            "model": body.get("model"),
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }
    )


async def test_doctor_accepts_any_name_on_a_server_that_serves_one_model_under_any_name(
    tmp_path: Path,
) -> None:
    # llama.cpp's llama-server lists its GGUF path and answers a call for "llama3.1" (or any name).
    app = web.Application()
    app.router.add_get("/v1/models", _llamacpp_models)
    app.router.add_post("/v1/chat/completions", _any_model_chat)
    async with served(app) as url:
        env = {"OPENAI_BASE_URL": f"{url}/v1", "AGENT_MODEL": "llama3.1", "MEMORY_ENABLED": "false"}
        env |= {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off"}
        _, out, _ = await agentbot(tmp_path, "doctor", env=env)
    line = next(x for x in out.splitlines() if "provider openai" in x)
    assert line.startswith("ok"), line  # not "does not serve llama3.1 (/models/Meta-Llama-...gguf)"
