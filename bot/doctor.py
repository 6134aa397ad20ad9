"""``agentbot doctor``: check every dependency the bot needs and say what to fix.

Each check is independent and never raises: a broken database must not hide a bad key.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from agent.config import AgentSettings, ConfigError, load_agent_settings
from agent.logs import redact, register_secret
from agent.models.factory import split_spec
from agent.models.tiers import load_tiers
from bot.config import BotSettings, load_bot_settings


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
            f"Discord ({base}) could not be reached ({type(e).__name__}): check the network"
        ) from e
    if r.status_code == 401:
        raise ConfigError("Discord rejected DISCORD_TOKEN (401): reset the token and update .env")
    r.raise_for_status()
    return f"token accepted for {r.json().get('username', '?')}"


async def _database(s: AgentSettings) -> str:
    from bot.store import Database

    path = Path(s.data_dir) / "agentbot.sqlite3"
    db = await Database.open(path)
    await db.close()
    return f"{path} opened and migrated"


async def _memory(s: AgentSettings, bs: BotSettings) -> str:
    if not bs.memory_enabled:
        return "disabled (MEMORY_ENABLED=false)"
    from agent.memory.chroma_store import ChromaMemory

    mem = ChromaMemory.from_env(Path(s.data_dir) / "memory")
    await mem.open()
    try:
        return f"Chroma ready, embedding {mem.embedding_id}"
    finally:
        await mem.close()


async def _provider(provider: str, s: AgentSettings, client: httpx.AsyncClient) -> str:
    if provider == "openai":
        key = s.openai_api_key.get_secret_value() if s.openai_api_key else None
        url, headers = (
            f"{s.openai_base_url.rstrip('/')}/models",
            ({"Authorization": f"Bearer {key}"} if key else {}),
        )
    elif provider == "anthropic":
        key = s.anthropic_api_key.get_secret_value() if s.anthropic_api_key else None
        if not key:
            return "skipped: ANTHROPIC_API_KEY not set (its models are left out of the tiers)"
        url = f"{s.anthropic_base_url.rstrip('/')}/v1/models"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        key = s.gemini_api_key.get_secret_value() if s.gemini_api_key else None
        if not key:
            return "skipped: GEMINI_API_KEY not set (its models are left out of the tiers)"
        url, headers = f"{s.gemini_base_url.rstrip('/')}/models", {"x-goog-api-key": key}
    register_secret(key)
    try:
        r = await client.get(url, headers=headers)
    except httpx.HTTPError as e:
        raise ConfigError(f"{url} could not be reached ({type(e).__name__}): check the base URL") from e
    if r.status_code in (401, 403):
        raise ConfigError(f"{url} rejected the API key (HTTP {r.status_code})")
    if r.status_code >= 400:
        raise ConfigError(f"{url} answered HTTP {r.status_code}")
    return f"{url} answered"


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


async def _sandbox() -> str:
    from agent.tools.python_exec import sandbox_report
    from agent.tools.research import ResearchToolSettings

    settings = ResearchToolSettings.from_env(os.environ)
    ok, detail = await asyncio.to_thread(sandbox_report, settings.python)
    if not ok:
        raise RuntimeError(detail)
    return detail


async def run_doctor() -> list[Check]:
    try:
        s = load_agent_settings()
        bs = load_bot_settings()
    except ConfigError as e:
        return [Check("settings", False, str(e))]
    checks = [Check("settings", True, "valid")]
    async with httpx.AsyncClient(timeout=10) as client:
        checks.append(await _check("discord", lambda: _discord(bs, client)))
        checks.append(await _check("database", lambda: _database(s)))
        checks.append(await _check("memory", lambda: _memory(s, bs)))
        providers = sorted(
            {split_spec(m)[0] for ms in load_tiers(s.router_tiers_file).values() for m in ms}
            | {split_spec(s.agent_model)[0]}
        )
        for p in providers:
            checks.append(await _check(f"provider {p}", lambda p=p: _provider(p, s, client)))  # type: ignore[misc]
        checks.append(await _check("router", lambda: _router(s, client)))
        checks.append(await _check("python sandbox", _sandbox))
    return checks


def render(checks: list[Check]) -> str:
    return "\n".join(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in checks)
