"""Bot settings from the environment and ``.env`` (every one documented in ``.env.example``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.config import ConfigError, explain


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_token: SecretStr | None = Field(None, alias="DISCORD_TOKEN")
    shard_count: int | None = Field(None, alias="DISCORD_SHARD_COUNT", ge=1)
    """Set to run as an AutoShardedBot with this many shards (needed past 2,500 servers)."""
    shard_ids: list[int] | None = Field(None, alias="DISCORD_SHARD_IDS")
    """This process's shards, e.g. ``[0,1]``, when several processes split the shards."""
    sync_guild_id: int | None = Field(None, alias="DISCORD_SYNC_GUILD_ID")
    """Sync slash commands to this server only (instant; for development) instead of globally."""
    turn_timeout: float = Field(900.0, alias="BOT_TURN_TIMEOUT_SECONDS", gt=0)
    writes_per_5s: int = Field(5, alias="BOT_WRITES_PER_5S", ge=1, le=5)
    thread_archive_minutes: Literal[60, 1440, 4320, 10080] = Field(1440, alias="BOT_THREAD_ARCHIVE_MINUTES")
    default_tier: Literal["simple", "medium", "complex"] = Field("medium", alias="DEFAULT_TIER")
    memory_enabled: bool = Field(True, alias="MEMORY_ENABLED")
    shutdown_grace: float = Field(20.0, alias="BOT_SHUTDOWN_GRACE_SECONDS", ge=0)
    """On SIGTERM, how long running turns get to reach a step boundary before they are paused."""
    health_port: int | None = Field(None, alias="HEALTH_PORT", ge=1, le=65535)
    """Serve GET /healthz on this port (off when empty)."""
    health_host: str = Field("127.0.0.1", alias="HEALTH_HOST")
    api_base_url: str | None = Field(None, alias="DISCORD_API_BASE_URL")
    """Another Discord-compatible REST endpoint (a proxy, or the project's fake in tests)."""
    gateway_url: str | None = Field(None, alias="DISCORD_GATEWAY_URL")

    @field_validator(
        "shard_count", "sync_guild_id", "api_base_url", "gateway_url", "health_port", mode="before"
    )
    @classmethod
    def _empty_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _ids(cls, v: object) -> object:
        if v in ("", None):
            return None
        if isinstance(v, str):
            return [int(x) for x in v.replace("[", "").replace("]", "").split(",") if x.strip()]
        return v


def load_bot_settings(**overrides: object) -> BotSettings:
    try:
        return BotSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        raise ConfigError(explain(e)) from e
