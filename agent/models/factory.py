"""Build a :class:`Model` from a spec string such as ``gpt-4o-mini`` or ``openai:gpt-4o-mini``.

A bare name means the OpenAI-compatible endpoint in ``OPENAI_BASE_URL``; the other wire formats are
named by their prefix in ``WIRES``.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from typing import Any

import httpx

import agent.config
from agent.config import AgentSettings, ConfigError
from agent.env_file import hidden_by_environment
from agent.logs import register_secret
from agent.models.adapter import HTTPModel
from agent.models.anthropic import AnthropicModel
from agent.models.base import Model
from agent.models.classifier import HeuristicClassifier, JudgeClassifier
from agent.models.gemini import GeminiModel
from agent.models.openai import OpenAIChatModel
from agent.models.prices import default_prices
from agent.models.router import Breakers, Router
from agent.models.tiers import Tier, load_tiers, merge_tiers, tier_index
from agent.models.tokens import DEFAULT_MAX_TOKENS
from agent.reader import Reader, ReaderSettings

WIRES: dict[str, tuple[type[HTTPModel], str]] = {
    "openai": (OpenAIChatModel, "openai"),
    "anthropic": (AnthropicModel, "anthropic"),
    "gemini": (GeminiModel, "gemini"),
    "google": (GeminiModel, "gemini"),
}
"""Spec prefix → (adapter, the provider whose ``<provider>_api_key`` / ``_base_url`` settings it uses)."""


def split_spec(spec: str) -> tuple[str, str]:
    """``provider:model`` → (provider, model); a bare name is ``openai``. Model names may contain ``/``."""
    spec = spec.strip()
    if ":" in spec:
        prefix, _, name = spec.partition(":")
        if prefix.lower() in WIRES:  # "Gemini:gemini-2.5-flash" went to OPENAI_BASE_URL
            return prefix.lower(), name
    return "openai", spec


_COMPATIBLE = "it is an OpenAI-compatible server: set OPENAI_BASE_URL to its address and name the model alone"
_SERVERS = {
    **dict.fromkeys(
        ("ollama", "lmstudio", "lm-studio", "vllm", "llamacpp", "llama-cpp", "litellm"),
        _COMPATIBLE.replace("its address", "its address (Ollama: http://localhost:11434/v1)"),
    ),
    **dict.fromkeys(("openrouter", "groq", "together", "deepseek", "azure"), _COMPATIBLE),
    **dict.fromkeys(("google-gla", "google-vertex", "vertex_ai"), "Gemini's prefix is gemini"),
}
"""Prefixes other libraries give servers (pydantic-ai's ``ollama:llama3.1``, ``google-gla:``): taken for a
bare name, ``ollama:llama3.1`` went to OPENAI_BASE_URL as a model no server has. No model a server lists
starts with one of these followed by a colon (``mistral:7b`` is Ollama's, and is not here)."""


def set_to(setting: str, value: str) -> str:
    """How the user gives ``setting`` the value ``value``: ``AGENT_MODEL=x`` for a setting, ``--model x``
    for an option. A spec passed with ``agentbot ask --model`` was refused with "set AGENT_MODEL=...",
    which the option would have overridden again."""
    return f"{setting} {value}" if setting.startswith("-") else f"{setting}={value}"


def misspelt_prefix(spec: str, setting: str = "AGENT_MODEL") -> str | None:
    """Why ``spec``'s prefix looks like a provider's misspelt (``antrhopic:claude-sonnet-4``), else None:
    taken for a bare name, it went to OPENAI_BASE_URL, whose 404 blamed the base URL. Model names with a
    tag (``llama3.1:8b``, ``qwen2.5:7b``) are like no provider and pass. ``setting`` is where the spec
    was given (a setting, or ``--model``), named in the advice."""
    prefix, sep, name = spec.strip().partition(":")
    if not sep or prefix.lower() in WIRES:
        return None
    if (server := _SERVERS.get(prefix.lower())) is not None:
        right = f"gemini:{name}" if server.startswith("Gemini") else name
        return f"model spec {spec!r}: {prefix} is no provider prefix here; {server}: {set_to(setting, right)}"
    near = difflib.get_close_matches(prefix.lower(), WIRES, n=1, cutoff=0.8)
    if not near:
        return None
    return (
        f"model spec {spec!r}: {prefix!r} is no provider; did you mean {near[0]}:? "
        f"(providers: {', '.join(WIRES)}; a name without one goes to OPENAI_BASE_URL)"
    )


_SLASHED = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "google": "gemini",
    "ollama": "ollama",
}
"""LiteLLM's (and aider's) provider prefixes, written with a slash: ``anthropic/claude-sonnet-4-5``."""


def slashed_provider(settings: AgentSettings, spec: str, setting: str = "AGENT_MODEL") -> str | None:
    """Why ``spec``, a provider written as LiteLLM writes it (``anthropic/claude-sonnet-4-5``,
    ``gemini/gemini-2.5-flash``, ``openai/gpt-4o``, ``ollama/llama3.1``), cannot be called at OpenAI's own
    endpoint, which serves no name with a slash, else None. It went there as a bare name: with
    ANTHROPIC_API_KEY set it said "OPENAI_API_KEY is not set", with a Gemini key it advised
    ``gemini:gemini/gemini-2.5-flash``, and with an OpenAI key every run ended in a 404. Elsewhere (an
    OpenRouter or LiteLLM proxy base URL) such a name is the server's own and passes."""
    prefix, name = split_spec(spec)
    head, _, rest = name.partition("/")
    provider = _SLASHED.get(head.lower())
    if prefix != "openai" or not rest or provider is None or "api.openai.com" not in settings.openai_base_url:
        return None
    use = "use " if setting.startswith("-") else ""  # "set --model x" reads as no command
    if provider == "ollama":
        right = f"set OPENAI_BASE_URL=http://localhost:11434/v1 (Ollama's address) and {use}{set_to(setting, rest)}"
    else:
        right = (use or "set ") + set_to(setting, rest if provider == "openai" else f"{provider}:{rest}")
    return (
        f"model '{spec}' names its provider as LiteLLM does; agentbot writes a provider with a colon, and sends a "
        f"name with a slash to OPENAI_BASE_URL ({settings.openai_base_url}), which has no such model: "
        f"{right}"
    )


def missing_key(settings: AgentSettings, spec: str, setting: str = "AGENT_MODEL") -> str | None:
    """Why ``spec`` cannot be called for want of a key, said before any call, else None: its provider's
    key is unset, or a bare name would go to OpenAI's own endpoint without ``OPENAI_API_KEY`` (a Claude
    or Gemini name written without its prefix is pointed out when that provider's key is set), or its
    provider prefix is misspelt. ``setting``: where ``spec`` was given (``READER_MODEL``, ``--model``)."""
    if (why := misspelt_prefix(spec, setting) or slashed_provider(settings, spec, setting)) is not None:
        return why
    prefix, name = split_spec(spec)
    provider = WIRES[prefix][1]
    secret = getattr(settings, f"{provider}_api_key")
    if secret is not None and secret.get_secret_value().strip():
        return None
    env = f"{provider.upper()}_API_KEY"
    if (why := hidden_by_environment(env, agent.config.ENV_FILE)) is not None and (
        provider != "openai" or "api.openai.com" in settings.openai_base_url
    ):
        return f"model '{spec}' cannot be used: {why}"
    if provider != "openai":
        return f"{env} is not set, so model '{spec}' cannot be used: set {env} in .env"
    if "api.openai.com" not in settings.openai_base_url:
        return None  # a local server may take no key
    for start, other in (("claude", "anthropic"), ("gemini", "gemini")):
        if name.lower().startswith(start) and getattr(settings, f"{other}_api_key") is not None:
            return (
                f"model '{name}' has no provider prefix, so it would be called at OPENAI_BASE_URL "
                f"({settings.openai_base_url}), where OPENAI_API_KEY is not set: write {other}:{name} "
                f"(e.g. {set_to(setting, f'{other}:{name}')}) to use {other.upper()}_API_KEY"
            )
    return (
        "OPENAI_API_KEY is not set: put your key in .env, or point OPENAI_BASE_URL at an "
        "OpenAI-compatible server such as Ollama (http://localhost:11434/v1) and "
        + (f"name its model with {setting}" if setting.startswith("-") else f"set {setting}")
    )


def build_model(spec: str, settings: AgentSettings, client: httpx.AsyncClient) -> Model:
    if (why := misspelt_prefix(spec)) is not None:
        raise ConfigError(why)
    prefix, name = split_spec(spec)
    if not name:
        raise ConfigError(
            f"model spec {spec!r} names no model; use e.g. 'gpt-4o-mini' or 'openai:gpt-4o-mini'"
        )
    cls, provider = WIRES[prefix]
    secret = getattr(settings, f"{provider}_api_key")
    key = secret.get_secret_value() if secret else None
    if provider != "openai" and not key:  # a local OpenAI-compatible server may take none; hosted APIs not
        env = f"{provider.upper()}_API_KEY"
        raise ConfigError(
            f"{env} is not set, so model '{provider}:{name}' cannot be used: set {env} in .env, or remove "
            "the model from the tiers (ROUTER_TIERS_FILE / the server's tier settings)"
        )
    register_secret(key)
    base_url = getattr(settings, f"{provider}_base_url")
    more: dict[str, Any] = {}
    if cls is OpenAIChatModel and default_prices().lookup(name) is not None:
        # A priced model is a hosted one, whose output limit is past the cap: sent, the budget's hold of
        # it bounds the call. An unpriced one (self-hosted) is sent none: its server's context may be shorter.
        more["default_max_tokens"] = DEFAULT_MAX_TOKENS
    return cls(
        name, api_key=key, base_url=base_url, client=client, max_attempts=settings.model_max_attempts, **more
    )


def build_router(
    settings: AgentSettings,
    client: httpx.AsyncClient,
    *,
    tiers: dict[str, list[str]] | None = None,
    clock: Callable[[], float] | None = None,
) -> Router:
    """The process's router from settings: shipped tiers (or ``ROUTER_TIERS_FILE``) with ``tiers`` over them.

    Per-server tables are then ``router.with_tiers(server_overrides)``, sharing breakers and models.
    """
    table = merge_tiers(load_tiers(settings.router_tiers_file, settings.agent_model), tiers, "tiers")
    # One model on every tier (only AGENT_MODEL set): moving up a tier or researching on a lower one
    # would call the same model again under another name, so both are off.
    single = len({tuple(v) for v in table.values()}) == 1
    router = Router(
        table,
        lambda spec: build_model(spec, settings, client),
        breakers=Breakers(
            cooldown=settings.router_cooldown,
            max_cooldown=max(settings.router_max_cooldown, settings.router_cooldown),
            clock=clock or time.monotonic,
        ),
        default_tier=settings.router_default_tier,
        max_tier=settings.router_max_tier,
        step_limits={} if single else dict(settings.router_step_limits),
        research={} if single else dict(settings.router_research_tiers),
        hand_down=settings.router_hand_down_calls,
    )
    if settings.router_classifier == "embedding":
        from agent.embeddings.minilm import MiniLMEmbedding
        from agent.models.embedding_classifier import EmbeddingClassifier

        router.classifier = EmbeddingClassifier(MiniLMEmbedding())
    elif settings.router_classifier == "heuristic":
        router.classifier = HeuristicClassifier()
    elif settings.router_classifier == "judge":
        spec = settings.router_judge_model or router.cheapest(default_prices())
        judge = router.model(spec) if spec else None
        if judge is None:
            raise ConfigError(
                f"ROUTER_CLASSIFIER=judge: the judge model {spec!r} cannot be used "
                f"({router.unconfigured.get(spec or '', 'no priced model in the simple tier')}); "
                "set ROUTER_JUDGE_MODEL or use ROUTER_CLASSIFIER=heuristic"
            )
        router.classifier = JudgeClassifier(judge)
    return router


def reader_enabled(settings: AgentSettings) -> bool:
    """``READER_MODEL`` is not ``off``: the owner allows page reading at all."""
    return settings.reader_model not in ("off", "")


def reader_settings(settings: AgentSettings) -> ReaderSettings:
    return ReaderSettings(min_chars=settings.reader_min_chars, max_words=settings.reader_max_words)


def build_reader(
    settings: AgentSettings, router: Router, run_tier: Tier | Callable[[], Tier]
) -> Reader | None:
    """The reader for a run on ``run_tier`` (see :mod:`agent.reader`), or None.

    ``READER_MODEL=auto`` reads with the simple tier's models (falling back among them) and only while
    the run is above the simple tier: a run on the cheapest models gains nothing from a second one.
    ``run_tier`` may be a function giving the run's tier now, since a run that starts simple can move up
    (escalation) and one that starts higher can hand down. ``off`` never reads; a model spec always reads
    with that model.
    """
    spec = settings.reader_model
    if not reader_enabled(settings):
        return None
    if spec == "auto":
        active: Callable[[], bool] | None = None
        if not callable(run_tier):
            if tier_index(run_tier) <= tier_index("simple"):
                return None
        else:
            tier_now = run_tier
            active = lambda: tier_index(tier_now()) > tier_index("simple")  # noqa: E731
        return Reader(router.at_tier("simple", max_tier="simple"), reader_settings(settings), active=active)
    model = router.model(spec)
    if model is None:
        raise ConfigError(
            f"READER_MODEL={spec!r} cannot be used ({router.unconfigured.get(spec, 'unknown model')}); "
            "set READER_MODEL to auto, off or a model whose provider key is set"
        )
    return Reader(model, reader_settings(settings))
