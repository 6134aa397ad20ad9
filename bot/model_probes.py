"""``agentbot doctor``'s calls to model endpoints: the list of models, the key, and one-token probes.

A list says which names a server serves, not that a run will work there: a key only chat checks, a
server that refuses the tools every run offers (llama.cpp without --jinja), an Ollama model without
tools. Each finding is a :class:`ConfigError` naming the setting to change.
"""

from __future__ import annotations

import httpx

from agent.config import AgentSettings, ConfigError
from agent.models.anthropic import bearer_gateway
from agent.models.error_bodies import error_body
from agent.models.http import endpoint_url
from agent.models.openai import key_headers
from agent.models.server_fixes import refusal_fix

_LISTINGS = {  # provider: the path that lists its models, and how the key is sent
    "openai": ("/models", None),  # the key as the model sends it (key_headers: Azure's api-key)
    "anthropic": (
        "/v1/models?limit=1000",
        lambda key: {"x-api-key": key or "", "anthropic-version": "2023-06-01"},
    ),
    "gemini": ("/models?pageSize=1000", lambda key: {"x-goog-api-key": key or ""}),
}


def listing(provider: str, s: AgentSettings) -> tuple[str | None, str, dict[str, str]]:
    """(key, the URL that lists the endpoint's models, headers); settings are named ``<provider>_api_key``
    and ``<provider>_base_url`` (``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` ...)."""
    secret = getattr(s, f"{provider}_api_key")
    key = secret.get_secret_value() if secret else None
    path, headers = _LISTINGS[provider]
    base = getattr(s, f"{provider}_base_url").rstrip("/")
    if provider == "anthropic":  # as AnthropicModel takes it: the API's paths carry their own /v1
        base = base.removesuffix("/v1")
    return key, endpoint_url(base, path), headers(key) if headers else key_headers(base, key)


_PROBES = {  # provider: the path of a one-token call after the base URL, and its body
    "openai": (  # with a tool, as every run has: llama.cpp without --jinja refuses only those
        "/chat/completions",
        lambda name: {
            "model": name,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
            "tools": [{"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}],
        },
    ),
    "anthropic": (
        "/v1/messages",
        lambda name: {"model": name, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1},
    ),
    "gemini": (
        "/models/{name}:generateContent",
        lambda name: {
            "contents": [{"parts": [{"text": "ping"}]}],
            "generationConfig": {"maxOutputTokens": 1},
        },
    ),
}


def key_refused(r: httpx.Response) -> bool:
    """The endpoint refused the key: 401/403, or Gemini's 400 API_KEY_INVALID (read as a wrong base URL)."""
    return r.status_code in (401, 403) or (r.status_code == 400 and error_body(r.text).bad_key)


def bearer_headers(
    provider: str, s: AgentSettings, r: httpx.Response, headers: dict[str, str]
) -> dict[str, str] | None:
    """The headers to ask an Anthropic gateway again with, the key as a bearer token, where it refused
    x-api-key as :class:`~agent.models.anthropic.AnthropicModel` finds (runs worked, doctor said the key
    was rejected); else None."""
    key = headers.get("x-api-key")
    if provider != "anthropic" or not key or not bearer_gateway(s.anthropic_base_url, r.status_code, r.text):
        return None
    return {k: v for k, v in headers.items() if k != "x-api-key"} | {"Authorization": f"Bearer {key}"}


async def served_by_probe(
    s: AgentSettings,
    client: httpx.AsyncClient,
    names: list[str],
    provider: str = "openai",
    headers: dict[str, str] | None = None,
) -> set[str]:
    """For servers without a model list (Anthropic- and Gemini-compatible gateways have none either): a
    one-token call per model; only a 404 means "not served", and a refused key, an account without credit
    or a failing server are named (each was counted as served, so doctor said ok and every run failed).
    ``headers``: as the list was asked (a gateway's bearer token), else as :func:`listing` sends them."""
    headers = headers or listing(provider, s)[2]
    base = getattr(s, f"{provider}_base_url").rstrip("/")
    if provider == "anthropic":  # as AnthropicModel takes it: the API's paths carry their own /v1
        base = base.removesuffix("/v1")
    path, body = _PROBES[provider]
    setting = f"{provider.upper()}_BASE_URL"
    served = set()
    for name in names:
        try:
            # As long as a run waits (MODEL_TIMEOUT): a CPU-only server loads the model on this first call.
            r = await client.post(
                endpoint_url(base, path.format(name=name.removeprefix("models/"))),
                headers=headers,
                json=body(name),
                timeout=s.model_timeout,
            )
        except httpx.TimeoutException as e:
            raise ConfigError(
                f"{base} sent nothing for {s.model_timeout:g} s to a one-token call to {name}: "
                "check that the server runs, or raise MODEL_TIMEOUT if it loads the model for longer"
            ) from e
        except httpx.HTTPError as e:
            raise ConfigError(
                f"{base} could not be reached for a one-token call to {name} "
                f"({type(e).__name__}): check {setting} and that the server runs"
            ) from e
        key_env = f"{provider.upper()}_API_KEY"
        if key_refused(r):
            raise ConfigError(
                f"{base} rejected the API key on a one-token call to {name} (HTTP {r.status_code}): "
                f"check {key_env}"
            )
        if r.status_code == 402:  # counted as served, an account out of credit passed and every run failed
            raise ConfigError(
                f"{base} refused a one-token call to {name} with HTTP 402 (payment required): add credit to "
                f"the account of {key_env}"
            )
        if r.status_code >= 400 and provider == "openai" and (fix := refusal_fix(r.text)) is not None:
            raise ConfigError(f"{base} refused a one-token call to {name} (HTTP {r.status_code}): {fix}")
        if r.status_code >= 500:
            raise ConfigError(
                f"{base} failed a one-token call to {name} (HTTP {r.status_code}): the server has a "
                "problem; check its logs, then run doctor again"
            )
        if r.status_code != 404:
            served.add(name)
        elif name.lower() not in r.text.lower():  # servers name a model they lack; this is no API
            hint = (
                " (its path usually ends in /v1, as in http://localhost:11434/v1)"
                if provider == "openai"
                else ""
            )
            wire = "Chat Completions" if provider == "openai" else provider.capitalize()
            raise ConfigError(
                f"no {wire} API at {getattr(s, f'{provider}_base_url')} (HTTP 404: its path was not found): "
                f"check {setting}{hint}"
            )
    return served


async def key_accepted(
    s: AgentSettings, client: httpx.AsyncClient, models: str, headers: dict[str, str], name: str
) -> None:
    """Where GET /models is public (OpenRouter), the list passed a wrong or missing key. A chat call
    without messages costs nothing (refused before any model runs) and servers check the key first."""
    try:
        r = await client.post(
            endpoint_url(s.openai_base_url, "/chat/completions"), headers=headers, json={"model": name}
        )
    except httpx.HTTPError:
        return  # the list answered; a flaky second request proves nothing about the key
    if r.status_code in (401, 403):
        said = "is not set" if not headers else f"was rejected (HTTP {r.status_code})"
        raise ConfigError(
            f"{s.openai_base_url} lists its models to anyone, but OPENAI_API_KEY {said} for chat: "
            "check OPENAI_API_KEY"
        )


async def tools_accepted(
    s: AgentSettings, client: httpx.AsyncClient, headers: dict[str, str], name: str
) -> None:
    """Every model was listed, so none was called: llama.cpp's server without --jinja (which lists its GGUF
    path, the name an operator copies into AGENT_MODEL) and vLLM without --enable-auto-tool-choice passed,
    and every run failed (HTTP 500, 400) on the tools it offers. One tool-offering one-token call to a model the bot will call names a refusal whose
    fix is known; anything else it answers is left to the list, which already said the model is served."""
    path, body = _PROBES["openai"]
    base = s.openai_base_url.rstrip("/")
    try:
        r = await client.post(
            endpoint_url(base, path), headers=headers, json=body(name), timeout=s.model_timeout
        )
    except httpx.HTTPError:
        return  # the list answered; a call that fails here proves nothing the run would not say
    # vLLM without --enable-auto-tool-choice refuses with HTTP 400, llama.cpp without --jinja with 500
    if r.status_code >= 400 and (fix := refusal_fix(r.text)) is not None:
        raise ConfigError(f"{base} refused a one-token call to {name} (HTTP {r.status_code}): {fix}")


async def ollama_root(s: AgentSettings, client: httpx.AsyncClient) -> str | None:
    """The root of the Ollama server at ``OPENAI_BASE_URL`` (it answers ``/api/version``), else None."""
    root = s.openai_base_url.rstrip("/").removesuffix("/v1")
    try:
        version = await client.get(endpoint_url(root, "/api/version"))
        return root if version.status_code == 200 and "version" in version.json() else None
    except (httpx.HTTPError, ValueError, AttributeError, TypeError):
        return None


RUN_CONTEXT_MIN = 16_384
"""Fewest tokens of context a run needs: its first call is ~900 tokens (instructions and tools), and
each page it reads up to ``FETCH_MAX_CHARS`` (12,000 characters, ~3,000 tokens). Past its context Ollama
drops the oldest messages without a word, the task first; vLLM refuses the call."""


def vllm_small_context(rows: list[object], names: list[str]) -> dict[str, int]:
    """The models a vLLM server lists with a ``max_model_len`` (its ``--max-model-len``) below
    :data:`RUN_CONTEXT_MIN`: doctor said ok, and runs failed once they had read a page or two."""
    sizes = (
        {str(m.get("id")): m.get("max_model_len") for m in rows if isinstance(m, dict)}
        if isinstance(rows, list)
        else {}
    )
    return {n: size for n in names if type(size := sizes.get(n)) is int and 0 < size < RUN_CONTEXT_MIN}


async def llama_cpp_context(
    s: AgentSettings, client: httpx.AsyncClient, headers: dict[str, str]
) -> int | None:
    """The context of each of a llama.cpp server's slots (``/props``), where it is below
    :data:`RUN_CONTEXT_MIN`: ``llama-server`` starts with 4,096 (``-c``), split among ``--parallel`` slots
    in older builds, and refuses a longer prompt; doctor said ok, and runs failed after a page or two."""
    root = s.openai_base_url.rstrip("/").removesuffix("/v1")
    try:
        r = await client.get(endpoint_url(root, "/props"), headers=headers)
        n_ctx = r.json().get("default_generation_settings", {}).get("n_ctx") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError, TypeError):
        return None  # not llama.cpp
    return n_ctx if type(n_ctx) is int and 0 < n_ctx < RUN_CONTEXT_MIN else None


async def ollama_small_context(root: str, client: httpx.AsyncClient, names: list[str]) -> dict[str, int]:
    """The models Ollama has loaded with a context below :data:`RUN_CONTEXT_MIN` (``/api/ps``'s
    ``context_length``, since Ollama 0.10; doctor's one-token call loaded them): the default is 2,048 or
    4,096, and doctor said ok while every run that read two pages went on without its task."""
    try:
        loaded = (await client.get(endpoint_url(root, "/api/ps"))).json().get("models") or []
        sizes = {str(m.get("name")).removesuffix(":latest"): m.get("context_length") for m in loaded}
    except (httpx.HTTPError, ValueError, AttributeError, TypeError):
        return {}
    bare = {n: n.removesuffix(":latest") for n in names}
    return {
        n: size for n, b in bare.items() if type(size := sizes.get(b)) is int and 0 < size < RUN_CONTEXT_MIN
    }


async def ollama_without_tools(s: AgentSettings, client: httpx.AsyncClient, names: list[str]) -> list[str]:
    """The models an Ollama server says cannot call tools (gemma2, phi3, the first deepseek-r1 tags): it
    lists them, so they passed here, and every run then failed at its first step. Only a server that
    answers Ollama's ``/api/version`` is asked, and only its own capability list counts."""
    root = await ollama_root(s, client)
    if root is None:
        return []
    try:
        toolless = []
        for name in names:
            shown = await client.post(endpoint_url(root, "/api/show"), json={"model": name})
            caps = shown.json().get("capabilities") if shown.status_code == 200 else None
            if isinstance(caps, list) and "completion" in caps and "tools" not in caps:
                toolless.append(name)
    except (httpx.HTTPError, ValueError, AttributeError):
        return []  # not Ollama, or one too old to say
    return toolless
