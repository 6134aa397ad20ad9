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
from agent.models.error_bodies import error_body
from agent.models.factory import missing_key, split_spec
from agent.models.http import LOOPBACK
from agent.models.openai import NO_PATH
from agent.models.tiers import load_tiers
from agent.models.transport_errors import redirect_error, tls_problem
from agent.tools.research import ResearchToolSettings
from bot.config import BotSettings, check_shard_memory, load_bot_settings
from bot.model_probes import (
    bearer_headers,
    key_accepted,
    key_refused,
    listing,
    llama_cpp_context,
    ollama_root,
    ollama_small_context,
    ollama_without_tools,
    served_by_probe,
    tools_accepted,
    vllm_small_context,
)


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
    try:
        if url is not None:  # `run` refuses it: DATABASE_URL set before migrate-store moved the store
            from bot.store.copy import unmoved_store

            if (unmoved := await unmoved_store(Path(s.data_dir) / "agentbot.sqlite3", db)) is not None:
                raise ConfigError(unmoved)
    finally:
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


async def _provider(
    provider: str, specs: dict[str, list[str]], s: AgentSettings, client: httpx.AsyncClient
) -> str:
    """The endpoint answers with this key and serves every model the tiers name (``specs``: model spec
    -> the tiers naming it). A model it does not serve is named with its tiers and what to change."""
    key, url, headers = listing(provider, s)
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
        if (bearer := bearer_headers(provider, s, r, headers)) is not None:
            headers = bearer
            r = await client.get(url, headers=headers)
    except httpx.HTTPError as e:
        if (tls := tls_problem(e, f"{name}_BASE_URL")) is not None:
            raise ConfigError(f"{getattr(s, f'{provider}_base_url')} {tls}") from e
        raise ConfigError(
            f"{url} could not be reached ({type(e).__name__}): check {name}_BASE_URL and that the server runs"
        ) from e
    if key_refused(r):
        raise ConfigError(f"{url} rejected the API key (HTTP {r.status_code}): check {name}_API_KEY")
    if 300 <= r.status_code < 400:  # read as "did not answer with a model list", where it pointed unsaid
        base = getattr(s, f"{provider}_base_url")
        where = {"name": provider, "base_url": base, "setting": f"{name}_BASE_URL", "provider": provider}
        raise ConfigError(redirect_error(r.status_code, r.headers, **where).message.partition(": ")[2])
    names = {split_spec(spec)[1]: spec for spec in specs}
    if provider == "openai" and r.status_code < 400:
        await key_accepted(s, client, url, headers, next(iter(names)))
    if r.status_code in (404, 405):
        served = await served_by_probe(s, client, list(names), provider, headers)
    elif r.status_code >= 400:
        raise ConfigError(f"{url} answered HTTP {r.status_code}: check {name}_BASE_URL")
    else:
        try:
            body = r.json()
            rows = body.get("data") or body.get("models") or []
            served = {str(m.get("id") or m.get("name") or "").removeprefix("models/") for m in rows}
        except (ValueError, AttributeError) as e:
            raise ConfigError(f"{url} did not answer with a model list: check {name}_BASE_URL") from e
        if provider == "openai" and (small := vllm_small_context(rows, list(names))):
            runs = ", ".join(f"{n} with --max-model-len {size:,}" for n, size in small.items())
            raise ConfigError(
                f"{s.openai_base_url} serves {runs}: a run passes that once it has read a page or two (up "
                "to ~3,000 tokens each), and every call after fails: start vLLM with --max-model-len 32768 "
                "or more (up to the model's own)"
            )
        if not served and body.get("error"):
            # LM Studio answers a path it lacks with HTTP 200 and an error: read as an empty list, every
            # model was then "served" by the one-token calls' 200s, and doctor said ok.
            said = error_body(r.text).message
            hint = " (its path usually ends in /v1)" if NO_PATH in said.lower() else ""
            raise ConfigError(
                f"{url} answered HTTP 200 with an error, not a model list ({said!r}): check {name}_BASE_URL{hint}"
            )
    # Ollama lists every model with its tag (llama3.1:latest) and serves the bare name as that tag;
    # Anthropic lists dated ids only (claude-sonnet-4-5-20250929) and serves the alias without the date.
    known = served | {m.removesuffix(":latest") for m in served} | {_DATED.sub("", m) for m in served}
    if provider == "gemini":  # Google's docs write models/gemini-2.5-flash, which GeminiModel accepts
        known |= {f"models/{m}" for m in known}
    unlisted = [n for n in names if n not in known]
    if provider == "openai" and r.status_code < 400 and unlisted:
        # llama.cpp's server lists its GGUF path and answers any name: a one-token call decides (only a
        # 404 means "not served"), as for servers without a list.
        known |= await served_by_probe(s, client, unlisted)
    missing = [f"{names[n]} ({', '.join(specs[names[n]])})" for n in names if n not in known]
    if missing:
        raise ConfigError(
            f"{getattr(s, f'{provider}_base_url')} does not serve "
            f"{'; '.join(missing)}: set AGENT_MODEL, ROUTER_TIERS_FILE or the server's tiers (/config) to "
            f"models it serves ({', '.join(sorted(served)[:8]) or 'none listed'}"
            f"{', ...' if len(served) > 8 else ''})"
        )
    if provider == "openai" and r.status_code < 400 and not unlisted:
        await tools_accepted(s, client, headers, next(iter(names)))  # every name was listed: none was called
    if provider == "openai" and (toolless := await ollama_without_tools(s, client, list(names))):
        raise ConfigError(
            f"{s.openai_base_url} is Ollama, and {', '.join(toolless)} cannot call tools (every run "
            "gives the model its tools, and Ollama refuses them with HTTP 400): use a model whose "
            "`ollama show` lists tools, e.g. llama3.1 or qwen2.5"
        )
    if provider == "openai" and (n_ctx := await llama_cpp_context(s, client, headers)) is not None:
        raise ConfigError(
            f"{s.openai_base_url} is llama.cpp's server, and each of its slots holds {n_ctx:,} tokens of context: "
            "a run passes that once it has read a page or two (up to ~3,000 tokens each), and every call after "
            "fails: start llama-server with -c 32768 or more (--ctx-size; --parallel N gives each slot 1/N)"
        )
    root = await ollama_root(s, client) if provider == "openai" else None
    if root is not None and (small := await ollama_small_context(root, client, list(names))):
        runs = ", ".join(f"{n} with a {size:,}-token context" for n, size in small.items())
        raise ConfigError(
            f"{s.openai_base_url} is Ollama, and it runs {runs}: a run passes that once it has read a "
            "page or two (up to ~3,000 tokens each), and Ollama then drops the oldest messages, the task "
            "first, without a word: start ollama serve with OLLAMA_CONTEXT_LENGTH=32768 (or set num_ctx "
            "in the model's Modelfile)"
        )
    return f"serves every model the tiers name: {', '.join(specs)}"


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


async def fetch_guard(s: AgentSettings) -> str:
    """The SSRF guard as it will run: ``FETCH_ALLOW_LOOPBACK=1`` (for tests) opened this host's own
    services to every member's fetch_url and /config mcp server, and nothing said so."""
    from agent.tools.fetch import LOOPBACK_OPEN

    if s.fetch_allow_loopback:
        raise RuntimeError(LOOPBACK_OPEN)
    return "loopback, private, link-local and metadata addresses refused"


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
    # The environment's proxies, as runs use them (loopback direct: a local Ollama failed here only).
    async with httpx.AsyncClient(timeout=10, mounts=dict.fromkeys(LOOPBACK)) as client:
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
        checks.append(await _check("fetch guard", lambda: fetch_guard(s)))
    return checks


def render(checks: list[Check]) -> str:
    return "\n".join(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in checks)
