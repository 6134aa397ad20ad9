"""An operator's first contact with servers we did not write (seventh operations round): Azure OpenAI,
LM Studio, LiteLLM-style model names, vLLM's limits, each reproduced by a small loopback server on
127.0.0.1 that answers as the real one does. Each test failed before the fix its commit names."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from agent.config import AgentSettings, ConfigError, parse_settings
from agent.env_file import check_env_lines, check_env_names
from agent.messages import Message
from agent.models.anthropic import AnthropicModel
from agent.models.base import ContextOverflowError, ModelError, ModelResponse, ModelSettings, NoApiAtURLError
from agent.models.factory import missing_key
from agent.models.gemini import GeminiModel
from agent.models.http import make_client
from agent.models.openai import OpenAIChatModel
from agent.models.transport_errors import redirect_error
from bot.ask_input import task_text
from bot.doctor import _provider, run_doctor
from tests.fakes.llm_server import FakeLLM
from tests.fakes.served import served

_ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
}


async def test_an_azure_base_url_with_its_api_version_reaches_the_deployment_with_its_key(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Azure OpenAI's base URL is https://RES.openai.azure.com/openai/deployments/NAME?api-version=...:
    # every call went to .../NAME?api-version=2024-10-21/chat/completions (the path in the query; Azure
    # answers 404), with the key as a bearer token Azure does not read (401). Doctor listed the same way.
    seen: list[tuple[str, str, str | None, str | None]] = []

    async def azure(request: web.Request) -> web.Response:
        seen.append(
            (
                request.path,
                request.query_string,
                request.headers.get("api-key"),
                request.headers.get("Authorization"),
            )
        )
        if request.path.endswith("/chat/completions") and request.headers.get("api-key") == "azure-key-1":
            return web.json_response(_ANSWER)
        return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", azure)
    async with served(app) as url:
        base = f"{url}/openai/deployments/gpt4o?api-version=2024-10-21"
        model = OpenAIChatModel("gpt-4o", base_url=base, api_key="azure-key-1", client=http, max_attempts=1)
        chunks = [c async for c in model.stream([Message("user", "capital of France?")], [], ModelSettings())]
        answer = chunks[-1]
        assert isinstance(answer, ModelResponse) and answer.message.content == "Paris", chunks
        assert seen[0] == (
            "/openai/deployments/gpt4o/chat/completions",
            "api-version=2024-10-21",
            "azure-key-1",
            None,
        )

        settings = AgentSettings(  # type: ignore[call-arg]
            OPENAI_BASE_URL=base, OPENAI_API_KEY="azure-key-1", AGENT_MODEL="gpt-4o", DATA_DIR=str(tmp_path)
        )
        seen.clear()
        said = await _provider("openai", {"gpt-4o": ["AGENT_MODEL"]}, settings, http)
    assert said == "serves every model the tiers name: gpt-4o"
    assert seen and all(q.startswith("api-version=2024-10-21") for _, q, _, _ in seen), seen
    assert ("/openai/deployments/gpt4o/models", "api-version=2024-10-21", "azure-key-1", None) in seen, seen


async def test_anthropic_and_gemini_gateways_with_a_query_in_the_base_url_keep_it_after_the_path(
    http: httpx.AsyncClient,
) -> None:
    # A gateway in front of Claude or Gemini (Azure API Management, a team proxy) may take its own key or
    # version as a query: ".../anthropic?subscription-key=k" sent calls to "?subscription-key=k/v1/messages".
    seen: list[tuple[str, str]] = []

    async def gateway(request: web.Request) -> web.Response:
        seen.append((request.path, request.query_string))
        if "messages" in request.path:
            return web.json_response(
                {
                    "model": "claude-sonnet-4-5",
                    "content": [{"type": "text", "text": "Paris"}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 5, "output_tokens": 1},
                }
            )
        parts = {"content": {"role": "model", "parts": [{"text": "Paris"}]}, "finishReason": "STOP"}
        return web.json_response({"candidates": [parts]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gateway)
    async with served(app) as url:
        kw = {"api_key": "k", "client": http, "max_attempts": 1}
        for model in (
            AnthropicModel("claude-sonnet-4-5", base_url=f"{url}/anthropic?subscription-key=s1", **kw),
            GeminiModel("gemini-2.5-flash", base_url=f"{url}/google/v1beta?subscription-key=s1", **kw),
        ):
            chunks = [c async for c in model.stream([Message("user", "hi")], [], ModelSettings(stream=False))]
            assert isinstance(chunks[-1], ModelResponse) and chunks[-1].message.content == "Paris"
    assert seen == [
        ("/anthropic/v1/messages", "subscription-key=s1"),
        ("/google/v1beta/models/gemini-2.5-flash:generateContent", "subscription-key=s1"),
    ], seen


async def test_lm_studio_at_its_root_is_named_as_the_base_url_by_ask_and_doctor(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    # LM Studio serves its API under /v1 and answers any other path with HTTP 200 and {"error":
    # "Unexpected endpoint or method. (POST /chat/completions)"}. With OPENAI_BASE_URL=http://localhost:1234
    # ask retried it as a hiccup (5 attempts, ~17 s) and never said to add /v1; doctor read the error as
    # an empty model list, counted each model served by the one-token call's 200, and said ok.
    asked: list[str] = []

    async def lm_studio(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.path == "/v1/models":
            return web.json_response({"data": [{"id": "qwen2.5-7b-instruct", "object": "model"}]})
        if request.path.startswith("/v1/"):
            return web.json_response(_ANSWER)
        return web.json_response(
            {"error": f"Unexpected endpoint or method. ({request.method} {request.path})"}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", lm_studio)
    async with served(app) as url:
        model = OpenAIChatModel(
            "qwen2.5-7b-instruct", base_url=url, client=http, max_attempts=3, backoff_initial=0.01
        )
        with pytest.raises(ModelError) as failed:
            async for _ in model.stream([Message("user", "hi")], [], ModelSettings()):
                pass
        assert asked == ["/chat/completions"]  # not retried: the same words would come back
        said = str(failed.value)
        assert "check OPENAI_BASE_URL (its path usually ends in /v1" in said and not failed.value.retryable

        settings = AgentSettings(  # type: ignore[call-arg]
            OPENAI_BASE_URL=url, AGENT_MODEL="qwen2.5-7b-instruct", DATA_DIR=str(tmp_path)
        )
        with pytest.raises(ConfigError) as doctor:
            await _provider("openai", {"qwen2.5-7b-instruct": ["AGENT_MODEL"]}, settings, http)
        assert "answered HTTP 200 with an error, not a model list" in str(doctor.value), doctor.value
        assert "check OPENAI_BASE_URL (its path usually ends in /v1)" in str(doctor.value), doctor.value
        settings = AgentSettings(  # type: ignore[call-arg]
            OPENAI_BASE_URL=f"{url}/v1", AGENT_MODEL="qwen2.5-7b-instruct", DATA_DIR=str(tmp_path)
        )
        said = await _provider("openai", {"qwen2.5-7b-instruct": ["AGENT_MODEL"]}, settings, http)
    assert said == "serves every model the tiers name: qwen2.5-7b-instruct"  # the right URL still passes


@pytest.mark.parametrize(
    ("spec", "keys", "fix"),
    [
        (
            "anthropic/claude-sonnet-4-5",
            {"ANTHROPIC_API_KEY": "sk-ant-test"},
            "AGENT_MODEL=anthropic:claude-sonnet-4-5",
        ),
        ("gemini/gemini-2.5-flash", {"GEMINI_API_KEY": "AIza-test"}, "AGENT_MODEL=gemini:gemini-2.5-flash"),
        ("openai/gpt-4o", {"OPENAI_API_KEY": "sk-test"}, "AGENT_MODEL=gpt-4o"),
        (
            "ollama/llama3.1",
            {},
            "OPENAI_BASE_URL=http://localhost:11434/v1 (Ollama's address) and AGENT_MODEL=llama3.1",
        ),
    ],
)
def test_a_model_named_as_litellm_names_it_is_respelt_before_any_call(
    spec: str, keys: dict[str, str], fix: str, tmp_path: Path
) -> None:
    # LiteLLM and aider write the provider with a slash. Each went to api.openai.com as a bare name: with
    # only ANTHROPIC_API_KEY, ask and run said "OPENAI_API_KEY is not set: put your key in .env"; with a
    # Gemini key they advised AGENT_MODEL=gemini:gemini/gemini-2.5-flash (a 404 at Google); with an OpenAI
    # key every run ended in a 404 for openai/gpt-4o.
    settings = AgentSettings(AGENT_MODEL=spec, DATA_DIR=str(tmp_path), **keys)  # type: ignore[arg-type]
    why = missing_key(settings, spec)
    assert why is not None and why.endswith(f"set {fix}"), why
    # Behind OpenRouter or a LiteLLM proxy the same name is the server's own, and is called as written.
    proxied = AgentSettings(  # type: ignore[call-arg]
        AGENT_MODEL=spec, OPENAI_BASE_URL="https://openrouter.ai/api/v1", DATA_DIR=str(tmp_path)
    )
    assert missing_key(proxied, spec) is None


async def test_an_answer_cap_that_does_not_fit_beside_the_conversation_is_lowered_to_the_room_left(
    http: httpx.AsyncClient,
) -> None:
    # vLLM serving an 8k-context model, AGENT_MAX_TOKENS=4096: once a run's conversation passed 4,096
    # tokens every call was refused with HTTP 400 "'max_tokens' ... is too large", and the run ended with
    # "the conversation is too long for this model" although the conversation fit. OpenAI and older vLLM
    # say the same in other words. Now the call is asked again with the room the server names.
    prompt_tokens = {"vllm": 5000, "openai": 5000, "too long": 8100}
    caps: list[int] = []

    async def vllm(request: web.Request) -> web.Response:
        body = await request.json()
        asked, kind = body["max_tokens"], body["messages"][-1]["content"]
        used = prompt_tokens[kind]
        caps.append(asked)
        if asked <= 8192 - used:
            return web.json_response(_ANSWER)
        said = (
            f"'max_tokens' or 'max_completion_tokens' is too large: {asked}. This model's maximum context "
            f"length is 8192 tokens and your request has {used} input tokens ({asked} > 8192 - {used})."
            if kind != "openai"
            else f"This model's maximum context length is 8192 tokens. However, you requested {asked + used} "
            f"tokens ({used} in the messages, {asked} in the completion). Please reduce the length of the "
            "messages or completion."
        )
        return web.json_response(
            {"object": "error", "message": said, "type": "BadRequestError", "code": 400}, status=400
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", vllm)
    async with served(app) as url:
        model = OpenAIChatModel(
            "Qwen/Qwen2.5-7B-Instruct",
            base_url=f"{url}/v1",
            client=http,
            max_attempts=3,
            backoff_initial=0.01,
        )
        for kind in ("vllm", "openai"):
            caps.clear()
            settings = ModelSettings(max_tokens=4096, stream=kind == "vllm")
            chunks = [c async for c in model.stream([Message("user", kind)], [], settings)]
            assert isinstance(chunks[-1], ModelResponse) and chunks[-1].message.content == "Paris", chunks
            assert caps == [4096, 3192], (kind, caps)
        caps.clear()
        with pytest.raises(ContextOverflowError):  # 92 tokens left: the conversation is what is too long
            async for _ in model.stream([Message("user", "too long")], [], ModelSettings(max_tokens=4096)):
                pass
    assert caps == [4096]


async def test_claude_near_its_context_is_asked_again_with_the_room_left_for_its_answer(
    http: httpx.AsyncClient,
) -> None:
    # Claude 3.7 and later refuse a call whose input plus max_tokens (8,192 when AGENT_MAX_TOKENS is unset)
    # passes the context: a conversation of 195,000 tokens ended the run as "too long" with 5,000 left.
    caps: list[int] = []

    async def claude(request: web.Request) -> web.Response:
        asked = (await request.json())["max_tokens"]
        caps.append(asked)
        if 195_000 + asked > 200_000:
            said = (
                f"input length and `max_tokens` exceed context limit: 195000 + {asked} > 200000, decrease "
                "input length or `max_tokens` and try again"
            )
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": said}}, status=400
            )
        answer = {"content": [{"type": "text", "text": "Paris"}], "stop_reason": "end_turn"}
        return web.json_response(answer | {"usage": {"input_tokens": 195_000, "output_tokens": 1}})

    app = web.Application()
    app.router.add_post("/v1/messages", claude)
    async with served(app) as url:
        model = AnthropicModel(
            "claude-sonnet-4-5", base_url=url, api_key="k", client=http, backoff_initial=0.01
        )
        chunks = [c async for c in model.stream([Message("user", "hi")], [], ModelSettings(stream=False))]
    assert isinstance(chunks[-1], ModelResponse) and chunks[-1].message.content == "Paris", chunks
    assert caps == [8192, 5000]


async def test_a_redirect_is_said_with_where_it_points_at_once_not_retried_as_a_web_page(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    # OPENAI_BASE_URL=http://... to a server that moves callers to https://, or a hotel's captive portal:
    # the redirect was read as "not Chat Completions JSON: check that OPENAI_BASE_URL is the API's address,
    # not a web page's", retried five times, and where it pointed was never said. Redirects are still not
    # followed: the API key would go along.
    asked: list[str] = []
    places = {
        "https": "https://127.0.0.1/v1/chat/completions",
        "portal": "http://portal.example/login?next=x",
        "nowhere": "",
    }

    async def moved(request: web.Request) -> web.Response:
        asked.append(request.path)
        where = places[request.path.split("/")[1]]
        headers = {"Location": where} if where else {}
        return web.Response(
            status=301 if where.startswith("https") else 302, headers=headers, text="<p>Moved"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", moved)
    async with served(app) as url:
        cases = [
            ("https", "set OPENAI_BASE_URL to its base"),
            ("portal", "a login page (captive portal, proxy)"),
        ]
        for place, fix in cases:
            for stream in (True, False):
                asked.clear()
                model = OpenAIChatModel(
                    "gpt-4o-mini",
                    base_url=f"{url}/{place}/v1",
                    api_key="sk-test",
                    client=http,
                    max_attempts=3,
                    backoff_initial=0.01,
                )
                with pytest.raises(ModelError) as failed:
                    async for _ in model.stream([Message("user", "hi")], [], ModelSettings(stream=stream)):
                        pass
                said = str(failed.value)
                assert len(asked) == 1 and not failed.value.retryable, (asked, said)
                assert f"a redirect to {places[place]}, which agentbot does not follow" in said, said
                assert fix in said, said
        settings = AgentSettings(  # type: ignore[call-arg]
            OPENAI_BASE_URL=f"{url}/https/v1",
            OPENAI_API_KEY="sk-test",
            AGENT_MODEL="gpt-4o-mini",
            DATA_DIR=str(tmp_path),
        )
        with pytest.raises(ConfigError) as doctor:  # it said only "did not answer with a model list"
            await _provider("openai", {"gpt-4o-mini": ["AGENT_MODEL"]}, settings, http)
        assert f"answered HTTP 301, a redirect to {places['https']}" in str(doctor.value), doctor.value
        asked.clear()
        claude = AnthropicModel(
            "claude-sonnet-4-5", base_url=f"{url}/nowhere", api_key="sk-ant-test", client=http, max_attempts=3
        )
        with pytest.raises(ModelError, match=r"HTTP 302, a redirect to no address.*check ANTHROPIC_BASE_URL"):
            async for _ in claude.stream([Message("user", "hi")], [], ModelSettings()):
                pass
    assert len(asked) == 1


def test_a_comment_kept_in_a_url_by_docker_env_file_is_named_at_start() -> None:
    # `docker run --env-file .env` keeps what follows the value: OPENAI_BASE_URL=http://ollama:11434/v1
    # `# local models` reached the calls as "/v1%20%20", whose 404 blamed the path. python-dotenv, which
    # agentbot reads .env with, drops such comments, so only values from the environment carry them.
    with pytest.raises(ConfigError) as refused:
        parse_settings(AgentSettings, {"OPENAI_BASE_URL": "http://ollama:11434/v1  # local models"})
    said = str(refused.value)
    assert said.startswith("OPENAI_BASE_URL=") and "put the comment on a line of its own" in said, said
    assert "\n" not in said
    fine = parse_settings(AgentSettings, {"OPENAI_BASE_URL": " http://ollama:11434/v1 "})
    assert fine.openai_base_url == "http://ollama:11434/v1"


def test_another_tools_name_for_the_base_url_in_the_environment_is_named(tmp_path: Path) -> None:
    # OPENAI_API_BASE (LangChain's and LiteLLM's name) in a Compose `environment:` block or a shell profile
    # was ignored without a word: an Ollama set-up called api.openai.com, paid for where a key was set.
    # In .env it was already named; the environment holds other programs' names too, so only these
    # names count there, and only while agentbot's own setting is set nowhere.
    ollama = {"OPENAI_API_BASE": "http://localhost:11434/v1", "PATH": "/usr/bin"}
    with pytest.raises(ConfigError) as refused:
        check_env_names(None, AgentSettings, environ=ollama)
    assert str(refused.value) == (
        "OPENAI_API_BASE is set in the environment, but agentbot does not read it: did you mean "
        "OPENAI_BASE_URL? Set OPENAI_BASE_URL (in .env or the environment), or unset OPENAI_API_BASE"
    )
    check_env_names(None, AgentSettings, environ=ollama | {"OPENAI_BASE_URL": "http://localhost:11434/v1"})
    env = tmp_path / ".env"
    env.write_text("OPENAI_BASE_URL=http://localhost:11434/v1\n")
    check_env_names(str(env), AgentSettings, environ=ollama)  # set in .env: the other name is another tool's


async def test_openrouters_provider_error_says_what_the_provider_said_and_litellm_types_no_none(
    http: httpx.AsyncClient,
) -> None:
    # OpenRouter wraps every upstream refusal as "Provider returned error" with the provider's own words in
    # metadata.raw: a :free model rate-limited upstream read only "HTTP 429 from https://openrouter.ai/api/v1:
    # Provider returned error". LiteLLM's proxy writes a missing error type as "None": "HTTP 429 (None)".
    bodies = [
        {
            "error": {
                "message": "Provider returned error",
                "code": 429,
                "metadata": {
                    "raw": "meta-llama/llama-3.3-70b-instruct:free is temporarily rate-limited upstream",
                    "provider_name": "Venice",
                },
            }
        },
        {"error": {"message": "litellm.RateLimitError: too many requests", "type": "None", "code": "429"}},
    ]

    async def proxy(request: web.Request) -> web.Response:
        return web.json_response(bodies.pop(0), status=429)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", proxy)
    said = []
    async with served(app) as url:
        for name in ("meta-llama/llama-3.3-70b-instruct:free", "gpt-4o"):
            model = OpenAIChatModel(name, base_url=f"{url}/v1", client=http, max_attempts=1)
            with pytest.raises(ModelError) as failed:
                async for _ in model.stream([Message("user", "hi")], [], ModelSettings()):
                    pass
            said.append(str(failed.value))
    assert said[0].endswith(
        "/v1: Provider returned error (Venice: meta-llama/llama-3.3-70b-instruct:free is temporarily "
        "rate-limited upstream)"
    ), said[0]
    assert "HTTP 429 from " in said[1] and "(None)" not in said[1], said[1]


@pytest.mark.parametrize(
    ("spec", "fix"),
    [
        (
            "ollama:llama3.1",
            "(Ollama: http://localhost:11434/v1) and name the model alone: AGENT_MODEL=llama3.1",
        ),
        ("google-gla:gemini-2.5-flash", "Gemini's prefix is gemini: AGENT_MODEL=gemini:gemini-2.5-flash"),
    ],
)
def test_a_server_written_as_a_prefix_as_pydantic_ai_writes_it_is_named(
    spec: str, fix: str, tmp_path: Path
) -> None:
    # pydantic-ai names servers by prefix (ollama:llama3.1, google-gla:gemini-2.5-flash): taken for a bare
    # name, the spec went to OPENAI_BASE_URL whole, and Ollama's 404 said model "ollama:llama3.1" not found.
    settings = AgentSettings(  # type: ignore[call-arg]
        AGENT_MODEL=spec, OPENAI_BASE_URL="http://localhost:11434/v1", DATA_DIR=str(tmp_path)
    )
    why = missing_key(settings, spec)
    assert why is not None and why.endswith(fix), why
    for tagged in ("llama3.1:8b", "mistral:7b", "deepseek-r1:7b"):  # Ollama's own tags pass
        assert missing_key(settings, tagged) is None


async def test_a_web_page_answering_200_is_not_asked_again_and_lets_the_router_fall_back(
    http: httpx.AsyncClient,
) -> None:
    # OPENAI_BASE_URL at Open WebUI's port or a captive portal: its HTML page was asked for five times
    # (~17 s with the default backoff) before the error, and being retryable-then-unavailable it said
    # "still failing after 5 attempts"; the page never changes.
    asked: list[str] = []

    async def page(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(text="<!doctype html><title>Open WebUI</title>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", page)
    async with served(app) as url:
        for stream in (True, False):
            asked.clear()
            model = OpenAIChatModel(
                "llama3.1", base_url=f"{url}/v1", client=http, max_attempts=3, backoff_initial=0.01
            )
            with pytest.raises(
                NoApiAtURLError, match="not Chat Completions JSON: check that OPENAI_BASE_URL"
            ):
                async for _ in model.stream([Message("user", "hi")], [], ModelSettings(stream=stream)):
                    pass
            assert len(asked) == 1, asked


def test_a_location_no_client_could_parse_is_said_not_raised() -> None:
    # urlsplit raises ValueError on "http://[::1/login": from a proxy's redirect that was a crash of the
    # turn, not its error message.
    where = httpx.Headers({"location": "http://[::1/login"})
    said = redirect_error(
        302, where, name="m", base_url="http://x/v1", setting="OPENAI_BASE_URL", provider="openai"
    )
    assert "a redirect to http://[::1/login" in said.message and "set OPENAI_BASE_URL" in said.message


async def test_a_company_proxy_in_the_environment_carries_model_calls_but_not_loopback_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Behind a company proxy with no direct way out, HTTPS_PROXY / HTTP_PROXY were ignored (the client has a
    # transport of its own, so httpx reads no proxy settings): every call to the provider "could not be
    # reached (ConnectError)". A local server stays direct without NO_PROXY=localhost, as it was.
    relayed: list[str] = []

    def answering(words: str, seen: list[str]) -> web.Application:
        async def chat(request: web.Request) -> web.Response:
            seen.append(str(request.url))
            return web.json_response(
                _ANSWER | {"choices": [{"message": {"role": "assistant", "content": words}}]}
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", chat)
        return app

    direct: list[str] = []
    async with (
        served(answering("via the proxy", relayed)) as proxy,
        served(answering("direct", direct)) as local,
    ):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with make_client() as client:
            said = []
            for base in ("http://models.example.invalid/v1", f"{local}/v1"):
                model = OpenAIChatModel("gpt-4o-mini", base_url=base, client=client, max_attempts=1)
                chunks = [
                    c async for c in model.stream([Message("user", "hi")], [], ModelSettings(stream=False))
                ]
                assert isinstance(chunks[-1], ModelResponse), chunks
                said.append(chunks[-1].message.content)
    assert said == ["via the proxy", "direct"]
    assert relayed == ["http://models.example.invalid/v1/chat/completions"] and len(direct) == 1


async def test_doctor_reaches_a_local_server_directly_with_a_proxy_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, llm: FakeLLM, tmp_path: Path
) -> None:
    # A shell that exports HTTP_PROXY for other programs, and Ollama on localhost: runs called it directly,
    # while doctor's client sent its checks to the proxy, which cannot reach this machine's loopback, and
    # failed the provider ("could not be reached") for a set-up that worked.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: a proxy call fails at once
    settings = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "gpt-4o-mini", "DATA_DIR": str(tmp_path)}
    settings |= {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off", "MEMORY_ENABLED": "false"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    said = {c.name: c for c in await run_doctor()}
    assert said["provider openai"].ok, said["provider openai"].detail


def test_a_task_file_saved_with_a_byte_order_mark_reaches_the_model_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `agentbot ask < question.txt` with a file Windows Notepad saved as "UTF-8 with BOM": the task began
    # with U+FEFF, sent to the model (and billed) as part of the question.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\ufeffWhat is 2+2?\n".encode())))
    assert task_text("-") == "What is 2+2?\n"


async def test_an_anthropic_gateway_that_takes_the_key_as_a_bearer_token_is_asked_so(
    http: httpx.AsyncClient,
) -> None:
    # Moonshot's and z.ai's Anthropic-compatible endpoints (set up for Claude Code's ANTHROPIC_AUTH_TOKEN)
    # read the key from Authorization: Bearer and answer x-api-key with 401: every run said "rejected the
    # API key" for a key that was right. Anthropic's own refusal (authentication_error) is not asked again.
    seen: list[tuple[str | None, str | None]] = []

    async def gateway(request: web.Request) -> web.Response:
        seen.append((request.headers.get("x-api-key"), request.headers.get("Authorization")))
        if request.headers.get("Authorization") != "Bearer sk-gateway-1":
            return web.json_response(
                {"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}},
                status=401,
            )
        answer = {
            "content": [{"type": "text", "text": "Paris"}],
            "stop_reason": "end_turn",
            "model": "kimi-k2",
        }
        return web.json_response(answer | {"usage": {"input_tokens": 5, "output_tokens": 1}})

    async def no_list(request: web.Request) -> web.Response:
        seen.append((request.headers.get("x-api-key"), request.headers.get("Authorization")))
        if request.headers.get("Authorization") != "Bearer sk-gateway-1":
            return web.json_response({"error": {"message": "Invalid Authentication"}}, status=401)
        return web.json_response({"error": {"message": "Not Found"}}, status=404)

    app = web.Application()
    app.router.add_post("/anthropic/v1/messages", gateway)
    app.router.add_get("/anthropic/v1/models", no_list)
    async with served(app) as url:
        model = AnthropicModel(
            "kimi-k2", base_url=f"{url}/anthropic", api_key="sk-gateway-1", client=http, backoff_initial=0.01
        )
        for _ in range(2):  # the second call is sent the way that worked
            chunks = [c async for c in model.stream([Message("user", "hi")], [], ModelSettings(stream=False))]
            assert isinstance(chunks[-1], ModelResponse) and chunks[-1].message.content == "Paris", chunks
        assert seen == [("sk-gateway-1", None), (None, "Bearer sk-gateway-1"), (None, "Bearer sk-gateway-1")]
        # doctor said "rejected the API key" for the same gateway: it asks as the runs do
        settings = AgentSettings(  # type: ignore[call-arg]
            ANTHROPIC_BASE_URL=f"{url}/anthropic",
            ANTHROPIC_API_KEY="sk-gateway-1",
            AGENT_MODEL="anthropic:kimi-k2",
        )
        said = await _provider("anthropic", {"anthropic:kimi-k2": ["AGENT_MODEL"]}, settings, http)
    assert said == "serves every model the tiers name: anthropic:kimi-k2"


def test_a_setting_emptied_further_down_env_is_named_with_both_lines(tmp_path: Path) -> None:
    # .env.example pasted below one's own settings: its empty OPENAI_API_KEY= came last, and the last line
    # counts, so ask said "OPENAI_API_KEY is not set: put your key in .env" where the key was.
    env = tmp_path / ".env"
    env.write_text(
        "OPENAI_API_KEY=sk-mine-1234567890\nAGENT_MODEL=gpt-4o-mini\n# --- from .env.example\nOPENAI_API_KEY=\n"
    )
    with pytest.raises(ConfigError) as refused:
        check_env_lines(str(env))
    said = str(refused.value)
    assert "line 4 sets OPENAI_API_KEY empty after line 1 gave it a value" in said, said
    assert "sk-mine" not in said
    env.write_text("OPENAI_API_KEY=\nOPENAI_API_KEY=sk-mine-1234567890\n")  # an example's blank, then a value
    check_env_lines(str(env))
