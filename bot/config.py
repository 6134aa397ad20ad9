"""The bot's settings: Discord, operations and quota defaults (every one documented, with its default, in
``.env.example``: the fields here say only what that does not).

Parsed once at start-up next to :class:`agent.config.AgentSettings` and passed down; see there."""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from pydantic import Field, SecretStr, field_validator

from agent import config as agent_config
from agent.config import ConfigError, unquote
from agent.env_file import check_env_names
from bot.limits import QuotaEnv

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def postgres_url_problem(url: str) -> str | None:
    """What is wrong with a ``postgresql://`` URL before any connection is tried (``DATABASE_URL``,
    ``migrate-store --to``), or None. asyncpg's own parse errors came out as a traceback box from
    migrate-store and as "FAIL database: connect(): port must be 0-65535." from doctor, naming no setting."""
    if not url.startswith(("postgresql://", "postgres://")):
        return "must be a postgresql:// URL (leave empty for the SQLite file in DATA_DIR)"
    rest = url.split("://", 1)[1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority.count("@") > 1:
        # Parsed as a host, the password's tail was printed as part of "cannot connect to ..."
        return "its user or password holds an @ that is not percent-encoded: write @ as %40"
    if "@" not in authority and "@" in rest.split("?")[0]:  # a generated password's / ends the host
        return "its user or password holds a / ? or # that is not percent-encoded: write / as %2F"
    for host in authority.rpartition("@")[2].split(","):  # asyncpg takes host1:5432,host2:5433
        if host.startswith("["):
            address, bracket, port = host[1:].partition("]")
            port = port.removeprefix(":")
            if not bracket or not address:
                return f"its host {host!r} is not an IPv6 address in brackets, e.g. [::1]:5432"
        else:
            port = host.partition(":")[2]
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            return f"its port {port!r} is not a number from 1 to 65535 (PostgreSQL's is 5432)"
    query = parse_qs(rest.partition("?")[2].partition("#")[0])
    modes = query.get("sslmode", [])
    if any(m not in _SSLMODES for m in modes):
        return f"sslmode={modes[0]} is not one of {', '.join(_SSLMODES)}"
    for seconds in query.get("connect_timeout", []):
        try:
            if not 0 <= float(seconds) < 86_400:
                raise ValueError
        except ValueError:
            return f"connect_timeout={seconds} is not a number of seconds"
    if libpq := sorted(_LIBPQ_ONLY.intersection(query)):
        # asyncpg sends a parameter it does not know to the server as a setting, which refuses it:
        # 'cannot connect ...: unrecognized configuration parameter "keepalives"'
        return f"{libpq[0]}= is a libpq option the bot's driver (asyncpg) does not take: remove it"
    return None


_LIBPQ_ONLY = frozenset(
    {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"}
    | {"fallback_application_name", "gssencmode", "channel_binding", "requiressl", "sslcompression"}
    | {"sslsni", "requirepeer", "hostaddr", "load_balance_hosts"}
)
"""Query parameters libpq (psql, psycopg) takes and asyncpg does not know (``connect_timeout`` it does not
know either; the store honours that one itself, :func:`bot.store.pg.connect_target`)."""


class BotSettings(QuotaEnv):
    discord_token: SecretStr | None = Field(None, alias="DISCORD_TOKEN")
    shard_count: int | None = Field(None, alias="DISCORD_SHARD_COUNT", ge=1)
    shard_ids: list[int] | None = Field(None, alias="DISCORD_SHARD_IDS")
    sync_guild_id: int | None = Field(None, alias="DISCORD_SYNC_GUILD_ID")
    turn_timeout: float = Field(900.0, alias="BOT_TURN_TIMEOUT_SECONDS", gt=0)
    writes_per_5s: int = Field(5, alias="BOT_WRITES_PER_5S", ge=1, le=5)
    thread_archive_minutes: int = Field(1440, alias="BOT_THREAD_ARCHIVE_MINUTES")
    memory_enabled: bool = Field(True, alias="MEMORY_ENABLED")
    shutdown_grace: float = Field(20.0, alias="BOT_SHUTDOWN_GRACE_SECONDS", ge=0)
    health_port: int | None = Field(None, alias="HEALTH_PORT", ge=1, le=65535)
    health_host: str = Field("127.0.0.1", alias="HEALTH_HOST")
    api_base_url: str | None = Field(None, alias="DISCORD_API_BASE_URL")
    """Another Discord-compatible REST endpoint (a proxy, or the project's fake in tests)."""
    gateway_url: str | None = Field(None, alias="DISCORD_GATEWAY_URL")

    # -- Memory provenance and import (issues 14.9, 17.4) --
    memory_remember_per_run: int = Field(3, alias="MEMORY_REMEMBER_PER_RUN", ge=0, le=50)
    memory_import_max_mb: float = Field(20.0, alias="MEMORY_IMPORT_MAX_MB", gt=0, le=500)
    memory_import_max_items: int = Field(5000, alias="MEMORY_IMPORT_MAX_ITEMS", ge=1, le=100_000)
    # --- Store: PostgreSQL shared by several bot processes (bot/store/pg.py); empty = SQLite in DATA_DIR
    database_url: SecretStr | None = Field(None, alias="DATABASE_URL")
    """``postgresql://user:password@host:5432/db``: sessions, quotas, settings and audit live there."""

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, v: object) -> object:
        if isinstance(v, str):  # as every setting is read (agent.config): it is checked before that
            v = unquote(v).strip()  # `docker run --env-file` keeps quotes
            if re.search(r"\s#", v):  # and a comment after the value: it became the database's name
                raise ValueError(
                    "has a `# comment` after the value (part of it where `docker run --env-file` reads the "
                    "file): put the comment on a line of its own"
                )
        if v in ("", None):
            return None
        if isinstance(v, str) and (problem := postgres_url_problem(v)) is not None:
            raise ValueError(problem)
        # Wrapped here, so the shared ``*_url`` check (http:// or https:// only) does not refuse it.
        return SecretStr(v) if isinstance(v, str) else v

    # --- bot-wide manners (issue 20.6): one process's share of Discord and of the model budget ---
    max_concurrent_runs: int = Field(8, alias="BOT_MAX_CONCURRENT_RUNS", ge=1, le=1000)
    rest_writes_per_second: float = Field(40.0, alias="BOT_REST_WRITES_PER_SECOND", gt=0, le=50)

    # --- shard processes (issue 18.3): a limit that spans servers, so spans shard processes ---
    requests_per_day_all_servers: int = Field(
        0, alias="QUOTA_REQUESTS_PER_DAY_ALL_SERVERS", ge=0, le=1_000_000
    )

    # --- Attachments (issue 17.2): files attached to /research or a follow-up, per message ---
    attachment_max_files: int = Field(5, alias="ATTACHMENT_MAX_FILES", ge=0, le=10)
    attachment_max_mb: float = Field(8.0, alias="ATTACHMENT_MAX_MB", gt=0, le=100)
    vision_models: str = Field("", alias="VISION_MODELS")
    """Extra models that take images, as names or ``*`` patterns (``llava*,qwen2.5vl*``): local models
    are taken to be text-only otherwise (agent.models.vision)."""

    # --- op-cli: start-up and stopping (issue 16.3)
    connect_attempts: int = Field(10, alias="DISCORD_CONNECT_ATTEMPTS", ge=0, le=10_000)

    @field_validator("discord_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        # Pasted as the header shows it ("Bot MTE..."): Discord then saw "Bot Bot MTE..." and refused it.
        if v is not None and v.get_secret_value()[:4].lower() == "bot ":
            return SecretStr(v.get_secret_value()[4:].strip())
        return v

    @field_validator("thread_archive_minutes")
    @classmethod
    def _archive(cls, v: int) -> int:
        if v not in (60, 1440, 4320, 10080):
            raise ValueError("must be 60, 1440, 4320 or 10080 (minutes)")
        return v

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _ids(cls, v: object) -> object:
        if v in ("", None):
            return None
        if isinstance(v, str):
            v = unquote(v)  # `docker run --env-file` keeps quotes
            parts = [x.strip() for x in v.replace("[", "").replace("]", "").split(",") if x.strip()]
            if not all(x.isascii() and x.isdigit() for x in parts):  # said "invalid literal for int()"
                raise ValueError("shard ids are whole numbers separated by commas, e.g. 0,1")
            return [int(x) for x in parts]
        if isinstance(v, int) and not isinstance(v, bool):
            return [v]  # one id: the environment's "1" arrives JSON-decoded, as 1
        return v


# --- shard processes (issue 18.3): several `agentbot run` processes form one bot ---
def check_shards(settings: BotSettings) -> None:
    """A process serving only some shards shares its state with the others: without PostgreSQL each
    would keep its own quotas and settings (and resume nothing of the others' servers). Checked after
    parsing, since a pydantic model validator's error names no key (and would echo every value)."""
    ids, count = settings.shard_ids, settings.shard_count
    if not ids:
        return
    if count is None:
        raise ConfigError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the shard total over every process)")
    if bad := [i for i in ids if not 0 <= i < count]:
        raise ConfigError(f"DISCORD_SHARD_IDS: {bad} not in 0..{count - 1} (DISCORD_SHARD_COUNT={count})")
    if twice := sorted({i for i in ids if ids.count(i) > 1}):  # discord.py then never became ready
        raise ConfigError(f"DISCORD_SHARD_IDS: {twice} listed more than once; give each shard id once")
    if set(ids) != set(range(count)) and settings.database_url is None:
        raise ConfigError(
            "DISCORD_SHARD_IDS names only some shards, so other processes serve the rest and all must "
            "share one store: set DATABASE_URL=postgresql://... (README: Scaling)"
        )


def check_shard_memory(settings: BotSettings, chroma_host: str | None) -> None:
    """Memory is kept per server, and a server's process changes with the shard count (or when
    processes are merged): memory under one process's own DATA_DIR is lost to the next owner, silently.
    So a process with only some shards keeps memory in the Chroma server they all share, or none."""
    ids, count = settings.shard_ids, settings.shard_count
    partial = bool(ids) and count is not None and set(ids) != set(range(count))
    if partial and settings.memory_enabled and not (chroma_host or "").strip():
        raise ConfigError(
            "DISCORD_SHARD_IDS names only some shards, so memory must live where every process reads it: "
            "set CHROMA_HOST to the Chroma server they share, or MEMORY_ENABLED=false (README: Scaling)"
        )


def load_bot_settings(**overrides: object) -> BotSettings:
    """The bot's settings from the environment and ``.env`` (parsed once, at start-up)."""
    settings = agent_config.parse_settings(BotSettings, **overrides)
    check_env_names(agent_config.ENV_FILE, agent_config.AgentSettings, BotSettings)
    check_shards(settings)
    return settings
