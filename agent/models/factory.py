"""Build a :class:`Model` from a spec string such as ``gpt-4o-mini`` or ``openai:gpt-4o-mini``.

A bare name means the OpenAI-compatible endpoint in ``OPENAI_BASE_URL``. Other wire formats register
a builder in ``BUILDERS`` under their prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from agent.config import AgentSettings, ConfigError
from agent.logs import register_secret
from agent.models.base import Model
from agent.models.openai import OpenAIChatModel

ModelBuilder = Callable[[str, AgentSettings, httpx.AsyncClient], Model]


def _openai(name: str, settings: AgentSettings, client: httpx.AsyncClient) -> Model:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    register_secret(key)
    return OpenAIChatModel(
        name,
        base_url=settings.openai_base_url,
        api_key=key,
        client=client,
        max_attempts=settings.model_max_attempts,
    )


BUILDERS: dict[str, ModelBuilder] = {"openai": _openai}


def split_spec(spec: str) -> tuple[str, str]:
    """``provider:model`` → (provider, model); a bare name is ``openai``. Model names may contain ``/``."""
    spec = spec.strip()
    if ":" in spec:
        prefix, _, name = spec.partition(":")
        if prefix in BUILDERS:
            return prefix, name
    return "openai", spec


def build_model(spec: str, settings: AgentSettings, client: httpx.AsyncClient, **_: Any) -> Model:
    provider, name = split_spec(spec)
    if not name:
        raise ConfigError(
            f"model spec {spec!r} names no model; use e.g. 'gpt-4o-mini' or 'openai:gpt-4o-mini'"
        )
    return BUILDERS[provider](name, settings, client)
