"""``agentbot doctor``: check every dependency the bot needs and say what to fix.

Each check is independent and never raises: a broken database must not hide a bad key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from agent.config import AgentSettings, ConfigError, load_agent_settings
from agent.logs import redact, register_secret
from agent.models.adapter import error_body
from agent.models.factory import missing_key, split_spec
from agent.models.http import tls_problem
from agent.models.openai import refusal_fix
from agent.models.tiers import load_tiers
from agent.tools.research import ResearchToolSettings
from bot.config import BotSettings, check_shard_memory, load_bot_settings


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


async def _check(name: str, fn: Callable[[], Awaitable[str]]) -> Check:
    try:
        return Check(name, True, redact(await fn()))  # a base URL's userinfo is a secret too
    except Exception as e:
        return Check(name, False, redact(str(e) or type(e).__name__))


async def _discord(bs: BotSettings, client: httpx.AsyncClient) -> str:
    if bs.discord_token is None or not bs.discord_token.get_secret_value().strip():
        raise ConfigError("DISCORD_TOKEN is not set (developer portal > your app > Bot > Reset Token)")
    token = bs.discord_token.get_secret_value().strip()
    register_secret(token)
    base = (bs.api_base_url or "https://discord.com/api/v10").rstrip("/")
    try:
        r = await client.get(f"{base}/users/@me", headers={"Authorization": f"Bot {token}"})
    except httpx.HTTPError as e:
        raise ConfigError(
            f"Discord ({base}) could not be reached ({type(e).__name__}): check the network "
            "or DISCORD_API_BASE_URL"
        ) from e
    if r.status_code == 401:
        raise ConfigError("Discord rejected DISCORD_TOKEN (401): reset the token and update .env")
    if r.status_code >= 400:
        raise ConfigError(
            f"Discord ({base}) answered HTTP {r.status_code}: check DISCORD_API_BASE_URL, or Discord's status"
        )
    return f"token accepted for {r.json().get('username', '?')}"


async def _database(s: AgentSettings, bs: BotSettings) -> str:
    """The store the bot would open: PostgreSQL with ``DATABASE_URL`` (it checked DATA_DIR's SQLite file
    whatever DATABASE_URL said, so an unreachable PostgreSQL passed), else DATA_DIR's SQLite file."""
    from bot.store import open_database

    url = bs.database_url.get_secret_value() if bs.database_url else None
    db = await open_database(url or Path(s.data_dir) / "agentbot.sqlite3")
    await db.close()
    return f"{db.path} opened and migrated (schema version {db.schema_version})"  # CHANGELOG points here


async def _memory(s: AgentSettings, bs: BotSettings) -> str:
    if not bs.memory_enabled:
        return "disabled (MEMORY_ENABLED=false)"
    from agent.memory.chroma_store import ChromaMemory

    mem = ChromaMemory.from_settings(Path(s.data_dir) / "memory", s)
    try:
        await mem.open()
    except Exception as e:
        raise ConfigError(f"{s.memory_where()} could not be opened ({type(e).__name__}: {e})") from e
    try:
        return f"Chroma ready, embedding {mem.embedding_id}"
    finally:
        await mem.close()


_DATED = re.compile(r"-\d{8}$")

_LISTINGS = {  # provider: the path that lists its models, and how the key is sent
    "openai": ("/models", lambda key: {"Authorization": f"Bearer {key}"} if key else {}),
    "anthropic": (
        "/v1/models?limit=1000",
        lambda key: {"x-api-key": key or "", "anthropic-version": "2023-06-01"},
    ),
    "gemini": ("/models?pageSize=1000", lambda key: {"x-goog-api-key": key or ""}),
}


def _listing(provider: str, s: AgentSettings) -> tuple[str | None, str, dict[str, str]]:
    """(key, the URL that lists the endpoint's models, headers); settings are named ``<provider>_api_key``
    and ``<provider>_base_url`` (``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` ...)."""
    secret = getattr(s, f"{provider}_api_key")
    key = secret.get_secret_value() if secret else None
    path, headers = _LISTINGS[provider]
    base = getattr(s, f"{provider}_base_url").rstrip("/")
    if provider == "anthropic":  # as AnthropicModel takes it: the API's paths carry their own /v1
        base = base.removesuffix("/v1")
    return key, base + path, headers(key)


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


def _key_refused(r: httpx.Response) -> bool:
    """The endpoint refused the key: 401/403, or Gemini's 400 API_KEY_INVALID (read as a wrong base URL)."""
    return r.status_code in (401, 403) or (r.status_code == 400 and error_body(r.text).bad_key)


async def _served_by_probe(
    s: AgentSettings, client: httpx.AsyncClient, names: list[str], provider: str = "openai"
) -> set[str]:
    """For servers without a model list (Anthropic- and Gemini-compatible gateways have none either): a
    one-token call per model; only a 404 means "not served", and a refused key, an account without credit
    or a failing server are named (each was counted as served, so doctor said ok and every run failed)."""
    _, _, headers = _listing(provider, s)
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
                base + path.format(name=name.removeprefix("models/")),
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
        if _key_refused(r):
            raise ConfigError(
                f"{base} rejected the API key on a one-token call to {name} (HTTP {r.status_code}): "
                f"check {key_env}"
            )
        if r.status_code == 402:  # counted as served, an account out of credit passed and every run failed
            raise ConfigError(
                f"{base} refused a one-token call to {name} with HTTP 402 (payment required): add credit to "
                f"the account of {key_env}"
            )
        if r.status_code >= 500 and provider == "openai" and (fix := refusal_fix(r.text)) is not None:
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


async def _key_accepted(
    s: AgentSettings, client: httpx.AsyncClient, models: str, headers: dict[str, str], name: str
) -> None:
    """Where GET /models is public (OpenRouter), the list passed a wrong or missing key. A chat call
    without messages costs nothing (refused before any model runs) and servers check the key first."""
    try:
        r = await client.post(
            models.removesuffix("/models") + "/chat/completions", headers=headers, json={"model": name}
        )
    except httpx.HTTPError:
        return  # the list answered; a flaky second request proves nothing about the key
    if r.status_code in (401, 403):
        said = "is not set" if "Authorization" not in headers else f"was rejected (HTTP {r.status_code})"
        raise ConfigError(
            f"{s.openai_base_url} lists its models to anyone, but OPENAI_API_KEY {said} for chat: "
            "check OPENAI_API_KEY"
        )


async def _provider(
    provider: str, specs: dict[str, list[str]], s: AgentSettings, client: httpx.AsyncClient
) -> str:
    """The endpoint answers with this key and serves every model the tiers name (``specs``: model spec
    -> the tiers naming it). A model it does not serve is named with its tiers and what to change."""
    key, url, headers = _listing(provider, s)
    name = provider.upper()
    if provider != "openai" and not key:
        if any("AGENT_MODEL" in tiers for tiers in specs.values()):  # nothing else would run
            raise ConfigError(
                f"{name}_API_KEY is not set, and AGENT_MODEL is one of its models: set it in .env"
            )
        return f"skipped: {name}_API_KEY not set (its models are left out of the tiers)"
    if provider == "openai" and not key and (why := missing_key(s, next(iter(specs)))) is not None:
        raise ConfigError(why)  # as run and ask say it: OpenAI's 401 read "rejected the API key"
    register_secret(key)
    try:
        r = await client.get(url, headers=headers)
    except httpx.HTTPError as e:
        if (tls := tls_problem(e, f"{name}_BASE_URL")) is not None:
            raise ConfigError(f"{getattr(s, f'{provider}_base_url')} {tls}") from e
        raise ConfigError(
            f"{url} could not be reached ({type(e).__name__}): check {name}_BASE_URL and that the server runs"
        ) from e
    if _key_refused(r):
        raise ConfigError(f"{url} rejected the API key (HTTP {r.status_code}): check {name}_API_KEY")
    names = {split_spec(spec)[1]: spec for spec in specs}
    if provider == "openai" and r.status_code < 400:
        await _key_accepted(s, client, url, headers, next(iter(names)))
    if r.status_code in (404, 405):
        served = await _served_by_probe(s, client, list(names), provider)
    elif r.status_code >= 400:
        raise ConfigError(f"{url} answered HTTP {r.status_code}: check {name}_BASE_URL")
    else:
        try:
            body = r.json()
            rows = body.get("data") or body.get("models") or []
            served = {str(m.get("id") or m.get("name") or "").removeprefix("models/") for m in rows}
        except (ValueError, AttributeError) as e:
            raise ConfigError(f"{url} did not answer with a model list: check {name}_BASE_URL") from e
    # Ollama lists every model with its tag (llama3.1:latest) and serves the bare name as that tag;
    # Anthropic lists dated ids only (claude-sonnet-4-5-20250929) and serves the alias without the date.
    known = served | {m.removesuffix(":latest") for m in served} | {_DATED.sub("", m) for m in served}
    if provider == "gemini":  # Google's docs write models/gemini-2.5-flash, which GeminiModel accepts
        known |= {f"models/{m}" for m in known}
    if provider == "openai" and r.status_code < 400 and (unlisted := [n for n in names if n not in known]):
        # llama.cpp's server lists its GGUF path and answers any name: a one-token call decides (only a
        # 404 means "not served"), as for servers without a list.
        known |= await _served_by_probe(s, client, unlisted)
    missing = [f"{names[n]} ({', '.join(specs[names[n]])})" for n in names if n not in known]
    if missing:
        raise ConfigError(
            f"{getattr(s, f'{provider}_base_url')} does not serve "
            f"{'; '.join(missing)}: set AGENT_MODEL, ROUTER_TIERS_FILE or the server's tiers (/config) to "
            f"models it serves ({', '.join(sorted(served)[:8]) or 'none listed'}"
            f"{', ...' if len(served) > 8 else ''})"
        )
    if provider == "openai" and (toolless := await _ollama_without_tools(s, client, list(names))):
        raise ConfigError(
            f"{s.openai_base_url} is Ollama, and {', '.join(toolless)} cannot call tools (every run "
            "gives the model its tools, and Ollama refuses them with HTTP 400): use a model whose "
            "`ollama show` lists tools, e.g. llama3.1 or qwen2.5"
        )
    return f"serves every model the tiers name: {', '.join(specs)}"


async def _ollama_without_tools(s: AgentSettings, client: httpx.AsyncClient, names: list[str]) -> list[str]:
    """The models an Ollama server says cannot call tools (gemma2, phi3, the first deepseek-r1 tags): it
    lists them, so they passed here, and every run then failed at its first step. Only a server that
    answers Ollama's ``/api/version`` is asked, and only its own capability list counts."""
    root = s.openai_base_url.rstrip("/").removesuffix("/v1")
    try:
        version = await client.get(f"{root}/api/version")
        if version.status_code != 200 or "version" not in version.json():
            return []
        toolless = []
        for name in names:
            shown = await client.post(f"{root}/api/show", json={"model": name})
            caps = shown.json().get("capabilities") if shown.status_code == 200 else None
            if isinstance(caps, list) and "completion" in caps and "tools" not in caps:
                toolless.append(name)
    except (httpx.HTTPError, ValueError, AttributeError):
        return []  # not Ollama, or one too old to say
    return toolless


async def _mcp(s: AgentSettings) -> str:
    """Connect to the operator's MCP servers as ``run`` and ``ask`` do: a file they refuse (bad TOML, a
    server with both url and command) passed doctor, and so did a server that is down or never answers."""
    from agent.toolset import operator_mcp

    mcp = await operator_mcp(s.mcp_servers_file)
    if mcp is None:
        return "none (MCP_SERVERS_FILE not set)"
    try:
        if mcp.problems:
            raise RuntimeError(
                "; ".join(f"{name} is left out: {why}" for name, why in mcp.problems.items())
                + f": check its entry in {s.mcp_servers_file} and that the server runs"
            )
        return f"{len(mcp.tools())} tools from {', '.join(mcp.names) or 'no servers'}"
    finally:
        await mcp.aclose()


async def _router(s: AgentSettings, client: httpx.AsyncClient) -> str:
    """Build the router as the bot does and route one ask: broken weights or embedding show here."""
    from agent.models.factory import build_router

    router = build_router(s, client)
    ask = "compare three note-taking apps on price, sync and privacy"
    decision = await router.classify(ask)
    if s.router_classifier == "embedding" and decision.source != "embedding":
        why = getattr(router.classifier, "unavailable", None) or "; ".join(decision.reasons)
        raise RuntimeError(f"the embedding classifier fell back to keywords ({why})")
    research = ", ".join(f"{k}={v}" for k, v in router.research.items())
    return (
        f"ROUTER_CLASSIFIER={s.router_classifier}: a test ask routed {decision.tier} "
        f"({decision.source}); research tiers: {research or 'off'}"
    )


async def _sandbox(s: AgentSettings) -> str:
    from agent.tools.python_exec import sandbox_report

    settings = ResearchToolSettings.from_settings(s, s.data_dir)
    ok, detail = await asyncio.to_thread(sandbox_report, settings.python)
    if not ok:
        raise RuntimeError(detail)
    return detail


def tier_specs(s: AgentSettings) -> dict[str, dict[str, list[str]]]:
    """provider -> model spec -> the tiers naming it (``AGENT_MODEL`` counts as ``default``)."""
    out: dict[str, dict[str, list[str]]] = {}
    for tier, specs in load_tiers(s.router_tiers_file, s.agent_model).items():
        for spec in specs:
            out.setdefault(split_spec(spec)[0], {}).setdefault(spec, []).append(tier)
    out.setdefault(split_spec(s.agent_model)[0], {}).setdefault(s.agent_model, []).append("AGENT_MODEL")
    return out


async def run_doctor() -> list[Check]:
    try:
        s = load_agent_settings()
        bs = load_bot_settings()
        check_shard_memory(bs, s.chroma_host)
        providers = tier_specs(s)
        ResearchToolSettings.from_settings(s, s.data_dir)  # combinations, e.g. searxng without a URL
    except ConfigError as e:
        return [Check("settings", False, str(e))]
    checks = [Check("settings", True, "valid")]
    async with httpx.AsyncClient(timeout=10) as client:
        checks.append(await _check("discord", lambda: _discord(bs, client)))
        checks.append(await _check("database", lambda: _database(s, bs)))
        checks.append(await _check("memory", lambda: _memory(s, bs)))
        for p, specs in sorted(providers.items()):
            checks.append(
                await _check(f"provider {p}", lambda p=p, specs=specs: _provider(p, specs, s, client))
            )  # type: ignore[misc]
        checks.append(await _check("mcp", lambda: _mcp(s)))
        checks.append(await _check("router", lambda: _router(s, client)))
        checks.append(await _check("python sandbox", lambda: _sandbox(s)))
    return checks


def render(checks: list[Check]) -> str:
    return "\n".join(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in checks)
