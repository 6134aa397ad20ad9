"""Agent settings from the environment and ``.env`` (documented in ``.env.example``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.models.reasoning import Effort


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the key and what it accepts."""


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    openai_base_url: str = Field("https://api.openai.com/v1", alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    agent_model: str = Field("gpt-4o-mini", alias="AGENT_MODEL")
    agent_max_steps: int = Field(12, alias="AGENT_MAX_STEPS", ge=1, le=100)
    agent_stream: bool = Field(True, alias="AGENT_STREAM")
    agent_temperature: float | None = Field(None, alias="AGENT_TEMPERATURE", ge=0, le=2)
    agent_max_tokens: int | None = Field(None, alias="AGENT_MAX_TOKENS", ge=1)
    reasoning_effort: Effort | None = Field(None, alias="REASONING_EFFORT")
    model_max_attempts: int = Field(5, alias="MODEL_MAX_ATTEMPTS", ge=1, le=20)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")
    log_format: Literal["auto", "json", "console"] = Field("auto", alias="LOG_FORMAT")
    data_dir: str = Field("./data", alias="DATA_DIR")
    anthropic_api_key: SecretStr | None = Field(None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str = Field("https://api.anthropic.com", alias="ANTHROPIC_BASE_URL")
    gemini_api_key: SecretStr | None = Field(None, alias="GEMINI_API_KEY")
    gemini_base_url: str = Field("https://generativelanguage.googleapis.com/v1beta", alias="GEMINI_BASE_URL")
    router_tiers_file: str | None = Field(None, alias="ROUTER_TIERS_FILE")
    router_classifier: Literal["embedding", "heuristic", "judge", "off"] = Field(
        "embedding", alias="ROUTER_CLASSIFIER"
    )
    router_judge_model: str | None = Field(None, alias="ROUTER_JUDGE_MODEL")
    router_default_tier: Literal["simple", "medium", "complex"] = Field("medium", alias="ROUTER_DEFAULT_TIER")
    router_max_tier: Literal["simple", "medium", "complex"] = Field("complex", alias="ROUTER_MAX_TIER")
    router_cooldown: float = Field(60.0, alias="ROUTER_COOLDOWN", gt=0)
    router_max_cooldown: float = Field(900.0, alias="ROUTER_MAX_COOLDOWN", gt=0)
    router_step_limits: str = Field("simple=3,medium=6", alias="ROUTER_STEP_LIMITS")
    router_research_tiers: str = Field("complex=medium", alias="ROUTER_RESEARCH_TIERS")
    reader_model: str = Field("auto", alias="READER_MODEL")
    reader_min_chars: int = Field(4000, alias="READER_MIN_CHARS", ge=500, le=1_000_000)
    reader_max_words: int = Field(350, alias="READER_MAX_WORDS", ge=50, le=4000)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator(
        "router_classifier", "router_default_tier", "router_max_tier", "reasoning_effort", mode="before"
    )
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower().strip() if isinstance(v, str) else v

    @field_validator("reader_model", mode="before")
    @classmethod
    def _reader(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            return v.lower() if v.lower() in ("auto", "off", "") else v
        return v

    @field_validator(
        "agent_temperature",
        "agent_max_tokens",
        "router_tiers_file",
        "router_judge_model",
        "reasoning_effort",
        mode="before",
    )
    @classmethod
    def _empty_none(cls, v: object) -> object:
        return None if v == "" else v


def explain(err: ValidationError) -> str:
    """Turn pydantic's error into lines naming the env key, the bad value and what is allowed."""
    lines = []
    for e in err.errors(include_url=False):
        key = str(e["loc"][0]) if e["loc"] else "?"
        got = e.get("input")
        allowed = ""
        ctx = e.get("ctx") or {}
        if "expected" in ctx and str(ctx["expected"]) not in e["msg"]:
            allowed = f" (allowed: {ctx['expected']})"
        lines.append(f"{key}={got!r}: {e['msg']}{allowed}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_agent_settings(**overrides: object) -> AgentSettings:
    try:
        return AgentSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        raise ConfigError(explain(e)) from e
