"""The agent's settings tree: pydantic-settings models with bounds, parsed once at start-up and passed down.

``AgentSettings`` is one flat model of the environment (and ``.env`` when loaded through
:func:`load_agent_settings`), made of one block per room: the model endpoint and routing, the research
tools (:class:`ToolEnv`) and long-term memory (:class:`MemoryEnv`). Modules never read ``os.environ``
themselves; they take this object (or the part they need) from whoever parsed it. Every value is
documented with its default in ``.env.example`` (``tests/test_settings_documented.py`` checks it).
"""

from __future__ import annotations

import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agent.models.reasoning import Effort
from agent.setting_parsers import ConfigError, parse_rate_limits, parse_research_tiers, parse_step_limits

ENV_FILE: str | None = ".env"
"""The file :func:`load_agent_settings` / ``load_bot_settings`` read besides the environment. The test
suite sets it to None (tests/conftest.py) so an operator's ``.env`` never changes a test."""


class EnvSettings(BaseSettings):
    """Base of every settings model: no ``.env`` unless asked for, and an empty value means the default
    (``KEY=`` in ``.env.example`` reads as "unset"), except for the fields listed in ``EMPTY``."""

    model_config = SettingsConfigDict(env_file=None, env_file_encoding="utf-8", extra="ignore")
    EMPTY: ClassVar[dict[str, object]] = {}
    """field -> the value an empty string stands for, where it is not the default."""

    @field_validator("*", mode="before")
    @classmethod
    def _clean(cls, v: object, info: ValidationInfo) -> object:
        if not isinstance(v, str) or info.field_name is None:
            return v
        name, field = info.field_name, cls.model_fields[info.field_name]
        if v.strip() == "":
            if name in cls.EMPTY:
                return cls.EMPTY[name]
            if field.annotation is not str:
                return field.get_default(call_default_factory=True)
            return v
        if name.endswith("_url") and not v.strip().lower().startswith(URL_SCHEMES):
            raise ValueError(
                "must be a full URL starting with http:// or https://, e.g. http://localhost:11434/v1"
            )
        if SecretStr in typing.get_args(field.annotation) and not v.isascii():
            # An HTTP header carries ASCII only: a pasted key with a typographic quote or a non-breaking
            # space otherwise fails deep inside httpx on the first call.
            raise ValueError("contains a non-ASCII character (a pasted quote or space?); copy it again")
        for choice in _literal_choices(field.annotation):  # case and spaces don't matter in a choice
            if isinstance(choice, str) and choice.lower() == v.strip().lower():
                return choice
        return v.strip() if name.endswith("_url") else v


URL_SCHEMES = ("http://", "https://", "ws://", "wss://")


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return tuple(
        c for a in typing.get_args(annotation) if typing.get_origin(a) is Literal for c in typing.get_args(a)
    )


class ToolEnv(EnvSettings):
    """The research tools' settings (web search, fetch, files, the Python sandbox, tool rate limits)."""

    search_backend: Literal["searxng", "brave", "tavily", "duckduckgo"] | None = Field(
        None, alias="SEARCH_BACKEND"
    )
    searxng_url: str | None = Field(None, alias="SEARXNG_URL")
    brave_api_key: SecretStr | None = Field(None, alias="BRAVE_API_KEY")
    tavily_api_key: SecretStr | None = Field(None, alias="TAVILY_API_KEY")
    brave_search_url: str = Field("https://api.search.brave.com/res/v1/web/search", alias="BRAVE_SEARCH_URL")
    tavily_search_url: str = Field("https://api.tavily.com/search", alias="TAVILY_SEARCH_URL")
    duckduckgo_url: str = Field("https://html.duckduckgo.com/html/", alias="DUCKDUCKGO_URL")
    search_max_results: int = Field(8, alias="SEARCH_MAX_RESULTS", ge=1, le=20)
    search_timeout: float = Field(10.0, alias="SEARCH_TIMEOUT", ge=1, le=120)
    fetch_timeout: float = Field(20.0, alias="FETCH_TIMEOUT", ge=1, le=300)
    fetch_max_bytes: int = Field(2_000_000, alias="FETCH_MAX_BYTES", ge=1_000, le=100_000_000)
    fetch_max_chars: int = Field(12_000, alias="FETCH_MAX_CHARS", ge=500, le=200_000)
    fetch_reader_chars: int = Field(60_000, alias="FETCH_READER_CHARS", ge=1_000, le=500_000)
    fetch_max_redirects: int = Field(5, alias="FETCH_MAX_REDIRECTS", ge=0, le=10)
    fetch_allow_loopback: bool = Field(False, alias="FETCH_ALLOW_LOOPBACK")
    # Extraction runs in killable worker processes (issue 14.6).
    fetch_extract_timeout: float = Field(10.0, alias="FETCH_EXTRACT_TIMEOUT", ge=1, le=120)
    fetch_extract_workers: int = Field(2, alias="FETCH_EXTRACT_WORKERS", ge=1, le=16)
    fetch_user_agent: str = Field(
        "Mozilla/5.0 (compatible; agentbot/0.1; +research assistant)", alias="FETCH_USER_AGENT"
    )
    files_quota_bytes: int = Field(10 * 1024 * 1024, alias="FILES_QUOTA_BYTES", ge=1024, le=10 * 1024**3)
    files_quota_files: int = Field(1000, alias="FILES_QUOTA_FILES", ge=10, le=1_000_000)  # entries (14.4)
    files_read_max_chars: int = Field(20_000, alias="FILES_READ_MAX_CHARS", ge=500, le=500_000)
    python_sandbox: Literal["auto", "namespaces", "rlimits", "off"] = Field("auto", alias="PYTHON_SANDBOX")
    python_timeout: float = Field(30.0, alias="PYTHON_TIMEOUT", ge=1, le=600)
    python_cpu_seconds: int = Field(20, alias="PYTHON_CPU_SECONDS", ge=1, le=600)
    python_memory_mb: int = Field(512, alias="PYTHON_MEMORY_MB", ge=64, le=65_536)
    python_file_size_mb: int = Field(10, alias="PYTHON_FILE_SIZE_MB", ge=1, le=10_000)
    python_max_processes: int = Field(32, alias="PYTHON_MAX_PROCESSES", ge=4, le=4096)
    python_max_output_chars: int = Field(10_000, alias="PYTHON_MAX_OUTPUT_CHARS", ge=500, le=200_000)
    python_tmpfs_mb: int = Field(64, alias="PYTHON_TMPFS_MB", ge=1, le=4096)
    python_network: bool = Field(False, alias="PYTHON_NETWORK")
    """Removed (issue 14.7): sandboxed code never has network; 1 is refused at start-up."""
    python_sandbox_uid: int = Field(65534, alias="PYTHON_SANDBOX_UID", ge=1, le=2**32 - 2)
    python_sandbox_gid: int = Field(65534, alias="PYTHON_SANDBOX_GID", ge=1, le=2**32 - 2)
    python_executable: str = Field("", alias="PYTHON_EXECUTABLE")
    """Empty = the interpreter running agentbot (``sys.executable``)."""
    python_hide_paths: str = Field("", alias="PYTHON_HIDE_PATHS")
    """Comma-separated extra paths the sandbox hides, besides /root, /home, .env and DATA_DIR."""
    tool_rate_limits: str = Field(
        "web_search=10/60,fetch_url=30/60,run_python=10/60", alias="TOOL_RATE_LIMITS"
    )
    tool_rate_server_multiplier: float = Field(5.0, alias="TOOL_RATE_SERVER_MULTIPLIER", ge=1, le=1000)
    # --- MCP servers (issue 17.1): tools from the operator's servers beside the built-in ones ---
    mcp_servers_file: str | None = Field(None, alias="MCP_SERVERS_FILE")
    """A TOML file of ``[servers.<name>]`` tables (stdio ``command`` or streamable-HTTP ``url``)."""

    @field_validator("mcp_servers_file")
    @classmethod
    def _mcp_file(cls, v: str | None) -> str | None:
        if v and not Path(v).expanduser().is_file():
            raise ValueError("no such file (a TOML file of [servers.<name>] tables; README: MCP tools)")
        return v

    @field_validator("tool_rate_limits")
    @classmethod
    def _rates(cls, v: str) -> str:
        parse_rate_limits(v)  # ValueError names the setting and the shape
        return v

    @field_validator("python_network")
    @classmethod
    def _no_network(cls, v: bool) -> bool:
        if v:
            raise ValueError(
                "is no longer supported: sandboxed code never has network access (the agent reads the web "
                "with fetch_url, which refuses private addresses); remove the setting"
            )
        return v

    @field_validator("python_executable")
    @classmethod
    def _python(cls, v: str) -> str:
        if v.strip() and not os.access(v.strip(), os.X_OK):
            raise ValueError("is not an executable file; leave it empty to use the Python running agentbot")
        return v

    @property
    def python_path(self) -> str:
        return self.python_executable.strip() or sys.executable


class MemoryEnv(EnvSettings):
    """Long-term memory: the embedding and, optionally, a Chroma server."""

    memory_embedding: Literal["minilm", "multilingual", "openai"] = Field("minilm", alias="MEMORY_EMBEDDING")
    memory_embedding_url: str | None = Field(None, alias="MEMORY_EMBEDDING_URL")
    memory_embedding_model: str | None = Field(None, alias="MEMORY_EMBEDDING_MODEL")
    memory_embedding_api_key: SecretStr | None = Field(None, alias="MEMORY_EMBEDDING_API_KEY")
    chroma_host: str | None = Field(None, alias="CHROMA_HOST")
    chroma_port: int = Field(8000, alias="CHROMA_PORT", ge=1, le=65535)
    chroma_ssl: bool = Field(False, alias="CHROMA_SSL")
    chroma_token: SecretStr | None = Field(None, alias="CHROMA_TOKEN")

    def memory_where(self) -> str:
        """Where memory lives, naming the settings that put it there (for error messages)."""
        if self.chroma_host:
            scheme = "https" if self.chroma_ssl else "http"
            return f"the Chroma server at {scheme}://{self.chroma_host}:{self.chroma_port} (CHROMA_HOST, CHROMA_PORT)"
        return "the embedded Chroma store under DATA_DIR/memory"


class AgentSettings(ToolEnv, MemoryEnv):
    EMPTY: ClassVar[dict[str, object]] = {"router_step_limits": {}, "router_research_tiers": {}}

    openai_base_url: str = Field("https://api.openai.com/v1", alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    agent_model: str = Field("gpt-4o-mini", alias="AGENT_MODEL")
    agent_max_steps: int = Field(12, alias="AGENT_MAX_STEPS", ge=1, le=100)
    agent_stream: bool = Field(True, alias="AGENT_STREAM")
    agent_temperature: float | None = Field(None, alias="AGENT_TEMPERATURE", ge=0, le=2)
    agent_max_tokens: int | None = Field(None, alias="AGENT_MAX_TOKENS", ge=1)
    reasoning_effort: Effort | None = Field(None, alias="REASONING_EFFORT")
    model_max_attempts: int = Field(5, alias="MODEL_MAX_ATTEMPTS", ge=1, le=20)
    prices_file: str | None = Field(None, alias="PRICES_FILE")
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
    router_step_limits: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: {"simple": 3, "medium": 6}, alias="ROUTER_STEP_LIMITS"
    )
    """Parsed from ``simple=3,medium=6`` once, here."""
    router_research_tiers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"complex": "medium"}, alias="ROUTER_RESEARCH_TIERS"
    )
    """Parsed from ``complex=medium`` (``off`` = none) once, here."""
    # --- routing hand-down (issue 19.5): 0 = off ---
    router_hand_down_calls: int = Field(0, alias="ROUTER_HAND_DOWN_CALLS", ge=0, le=50)
    """A run the embedding classifier sent up to the complex tier without being sure, whose researcher
    is done within this many model calls, is answered by the researcher (README, routing)."""
    reader_model: str = Field("auto", alias="READER_MODEL")
    reader_min_chars: int = Field(4000, alias="READER_MIN_CHARS", ge=500, le=1_000_000)
    reader_max_words: int = Field(350, alias="READER_MAX_WORDS", ge=50, le=4000)

    @field_validator("reader_model", mode="before")
    @classmethod
    def _reader(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            return v.lower() if v.lower() in ("auto", "off", "") else v
        return v

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: str) -> str:
        path = Path(v or "./data").expanduser().absolute()
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{existing or path} is not a directory agentbot can write in")
        return v

    @field_validator("router_step_limits", "router_research_tiers", mode="before")
    @classmethod
    def _tier_pairs(cls, v: object, info: ValidationInfo) -> object:
        parse = parse_step_limits if info.field_name == "router_step_limits" else parse_research_tiers
        return parse(v) if isinstance(v, str) else v


def explain(err: ValidationError) -> str:
    """The one place a bad setting becomes a message: one line naming each env key, its value and what
    is allowed. Secrets' values are never echoed."""
    parts = []
    for e in err.errors(include_url=False):
        key = str(e["loc"][0]) if e["loc"] else "?"
        got = e.get("input")
        # Keys, tokens and URLs that may carry a password (DATABASE_URL) are never echoed.
        shown = "(hidden)" if key.endswith(("_KEY", "_TOKEN")) or key == "DATABASE_URL" else repr(got)
        msg = str(e["msg"]).removeprefix("Value error, ")
        ctx = e.get("ctx") or {}
        allowed = ""
        if "expected" in ctx and str(ctx["expected"]) not in msg:
            allowed = f" (allowed: {ctx['expected']})"
        parts.append(msg if msg.startswith(key) else f"{key}={shown}: {msg}{allowed}")
    return "; ".join(parts) + " (fix it in .env or the environment; see .env.example)"


SettingsT = typing.TypeVar("SettingsT", bound=BaseSettings)


def parse_settings(cls: type[SettingsT], overrides: dict[str, Any] | None = None, **init: Any) -> SettingsT:
    """``cls`` from the environment and :data:`ENV_FILE` (``init`` over them), or, given ``overrides``,
    from them alone (a mapping of env names, as tests and library users pass). A bad value is a
    :class:`ConfigError`."""
    try:
        if overrides is not None:
            return cls.model_validate(overrides)
        return cls(**{"_env_file": ENV_FILE, **init})
    except ValidationError as e:
        raise ConfigError(explain(e)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(not_utf8(e)) from None


def not_utf8(e: UnicodeDecodeError) -> str:
    """A ``.env`` saved as UTF-16 (Notepad's "Unicode") or Latin-1 fails inside python-dotenv's read."""
    return (
        f"{ENV_FILE} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): "
        "save it as UTF-8 (see .env.example)"
    )


def load_agent_settings(**overrides: Any) -> AgentSettings:
    """Parse the agent's settings once (environment, then ``.env``) and check the files they name."""
    settings = parse_settings(AgentSettings, **overrides)
    from agent.models.prices import use_prices_file
    from agent.models.tiers import load_tiers

    use_prices_file(settings.prices_file, settings.openai_base_url)
    load_tiers(settings.router_tiers_file, settings.agent_model)
    return settings
