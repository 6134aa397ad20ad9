"""Model tiers: simple < medium < complex, each an ordered list of model specs (primary, fallbacks).

With nothing configured every tier is ``AGENT_MODEL``: an operator who points ``OPENAI_BASE_URL`` at
Ollama and sets ``AGENT_MODEL=llama3.1`` gets exactly that model, never a name the endpoint does not
serve. Tiers apply once someone configures them: ``ROUTER_TIERS_FILE`` (a TOML file, or ``hosted`` for
the shipped multi-provider table in ``tiers.toml`` next to this module) and a server's overrides (a
plain ``dict[str, list[str]]`` from the bot's settings store, through :func:`merge_tiers`). Partial
tables are fine: tiers not named keep ``AGENT_MODEL``, so an admin can change just ``complex``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from agent.setting_parsers import (  # noqa: F401 - re-exported: the tier names live with the setting parsers
    TIERS,
    ConfigError,
    Tier,
    TierTable,
    parse_research_tiers,
    parse_step_limits,
    parse_tier,
    read_setting_file,
    tier_index,
)


def validate_tiers(raw: Mapping[str, Any], origin: str = "tiers") -> TierTable:
    """Check a (possibly partial) tier mapping; every problem is named with where it came from."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{origin}: expected a mapping of tier → list of model specs")
    out: TierTable = {}
    for key, specs in raw.items():
        tier = parse_tier(key, f"{origin}: key")
        if isinstance(specs, str) or not isinstance(specs, list | tuple):
            raise ConfigError(f"{origin}: tier '{tier}' must be a list of model specs, e.g. [\"gpt-5-mini\"]")
        clean: list[str] = []
        for s in specs:
            if not isinstance(s, str) or not s.strip():
                raise ConfigError(
                    f"{origin}: tier '{tier}' has {s!r}; each model spec must be a non-empty string"
                )
            if s.strip() not in clean:
                clean.append(s.strip())
        if not clean:
            raise ConfigError(f"{origin}: tier '{tier}' lists no model; give at least one")
        out[tier] = clean
    return out


def _parse_toml(text: str, origin: str) -> TierTable:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{origin}: not valid TOML ({e})") from e
    table = data.get("tiers")
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: expected a [tiers] table with simple/medium/complex lists")
    return validate_tiers(table, origin)


HOSTED = "hosted"
"""``ROUTER_TIERS_FILE=hosted``: the shipped table of hosted OpenAI / Gemini / Anthropic models."""


def default_tiers() -> TierTable:
    """The shipped hosted table (``tiers.toml``), used when ``ROUTER_TIERS_FILE=hosted``."""
    return {t: list(specs) for t, specs in _shipped().items()}  # callers own their copy


@lru_cache(maxsize=1)
def _shipped() -> TierTable:
    text = resources.files("agent.models").joinpath("tiers.toml").read_text()
    table = _parse_toml(text, "tiers.toml")
    missing = [t for t in TIERS if t not in table]
    if missing:  # a packaging mistake, not a user error
        raise ConfigError(f"tiers.toml: missing tiers {missing}")
    return table


def merge_tiers(
    base: Mapping[Tier, list[str]], overrides: Mapping[str, Any] | None, origin: str = "overrides"
) -> TierTable:
    """``base`` with the tiers ``overrides`` names replaced (validated)."""
    merged: TierTable = {t: list(base[t]) for t in TIERS if t in base}
    if overrides:
        merged.update(validate_tiers(overrides, origin))
    return merged


def load_tiers(path: str | Path | None = None, model: str | None = None) -> TierTable:
    """The process's tiers: ``model`` (``AGENT_MODEL``) on every tier, with those in ``path``
    (``ROUTER_TIERS_FILE``) replacing them. Without ``model`` the base is the hosted table.

    Start-up asks three times (the settings check, the router, the bot's tier defaults): the file is
    parsed once and parsed again only if it changed on disk."""
    if path and str(path).strip().lower() == HOSTED:
        return default_tiers()
    table = {t: [model.strip()] for t in TIERS} if model else default_tiers()
    if path:
        try:
            st = os.stat(os.path.expanduser(path))
        except OSError as e:
            raise ConfigError(f"ROUTER_TIERS_FILE={path}: cannot read it ({e.strerror})") from e
        table = merge_tiers(table, _parse_file(str(path), st.st_mtime_ns, st.st_size))
    return table


@lru_cache(maxsize=8)
def _parse_file(path: str, mtime_ns: int, size: int) -> TierTable:
    """``ROUTER_TIERS_FILE`` parsed, by path and the version on disk (``mtime_ns``, ``size``)."""
    text = read_setting_file(path, "ROUTER_TIERS_FILE")
    return _parse_toml(text, f"ROUTER_TIERS_FILE={path}")
