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
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agent.env_file import check_env_lines, check_env_names, not_utf8
from agent.models.reasoning import Effort
from agent.setting_parsers import (
    ConfigError,
    parse_dns_servers,
    parse_rate_limits,
    parse_research_tiers,
    parse_step_limits,
)

ENV_FILE: str | None = ".env"
"""The file :func:`load_agent_settings` / ``load_bot_settings`` read besides the environment. The test
suite sets it to None (tests/conftest.py) so an operator's ``.env`` never changes a test."""


class EnvSettings(BaseSettings):
    """Base of every settings model: no ``.env`` unless asked for, and an empty value means the default
    (``KEY=`` in ``.env.example`` reads as "unset"), except for the fields listed in ``EMPTY``."""

    # A field reads the environment variable of its name in capitals (``agent_model`` <- AGENT_MODEL).
    model_config = SettingsConfigDict(
        env_file=None, env_file_encoding="utf-8", extra="ignore", alias_generator=str.upper
    )
    EMPTY: ClassVar[dict[str, object]] = {}
    """field -> the value an empty string stands for, where it is not the default."""

    @field_validator("*", mode="before")
    @classmethod
    def _clean(cls, v: object, info: ValidationInfo) -> object:
        if not isinstance(v, str) or info.field_name is None:
            return v
        # `docker run --env-file .env` keeps the quotes .env (python-dotenv) and compose strip: the
        # model was asked for with them (and the 404 blamed OPENAI_BASE_URL), a URL or number refused.
        v = unquote(v)
        name, field = info.field_name, cls.model_fields[info.field_name]
        if v.strip() == "":
            if name in cls.EMPTY:
                return cls.EMPTY[name]
            # str fields too: DATA_DIR= put the store in the current directory, AGENT_MODEL= named no
            # model, OPENAI_BASE_URL= skipped the missing-key check (compose's ${VAR} of an unset VAR)
            return field.get_default(call_default_factory=True)
        if name.endswith("_url") and not v.strip().lower().startswith(URL_SCHEMES):
            raise ValueError(
                "must be a full URL starting with http:// or https://, e.g. http://localhost:11434/v1"
            )
        if SecretStr in typing.get_args(field.annotation):
            if not v.isascii():
                # An HTTP header carries ASCII only: a pasted key with a typographic quote or a
                # non-breaking space otherwise fails deep inside httpx on the first call.
                raise ValueError("contains a non-ASCII character (a pasted quote or space?); copy it again")
            # A trailing newline or space (env files, YAML blocks, copied lines) made every call fail
            # in httpx as "could not be reached"; a line break inside is a mistake to name.
            v = v.strip()
            if name.endswith("_api_key") and v[:7].lower() == "bearer ":  # pasted as the header shows it
                v = v[7:].strip()
            if not v.isprintable():
                raise ValueError("contains a line break or control character; copy it again as one line")
            from agent.logs import register_secret  # here: every secret setting, as soon as it is read

            # Registered where each is used before, so one a command never uses (DISCORD_TOKEN under
            # `ask`, a search key with search off) reached a tool's printed output unmasked.
            register_secret(v)
            return v
        for choice in _literal_choices(field.annotation):  # case and spaces don't matter in a choice
            if isinstance(choice, str) and choice.lower() == v.strip().lower():
                return choice
        if name.endswith("_url") and len(v.strip().split()) > 1:
            # `docker run --env-file` keeps a comment after the value (`...:11434/v1  # ollama`) as part of
            # it: the calls went to "/v1%20%20" and the 404 blamed the path.
            raise ValueError(
                "has a space inside (a `# comment` after the value is part of it where `docker run "
                "--env-file` reads the file): put the comment on a line of its own"
            )
        return v.strip() if name.endswith("_url") else v


URL_SCHEMES = ("http://", "https://", "ws://", "wss://")


def unquote(v: str) -> str:
    """``v`` without the quotes around it that ``docker run --env-file`` keeps (python-dotenv and compose
    drop them); a setting with a parser of its own calls this first too, as it runs before ``_clean``."""
    if len(stripped := v.strip()) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "\"'":
        return stripped[1:-1]
    return v


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return tuple(
        c for a in typing.get_args(annotation) if typing.get_origin(a) is Literal for c in typing.get_args(a)
    )


class ToolEnv(EnvSettings):
    """The research tools' settings (web search, fetch, files, the Python sandbox, tool rate limits)."""

    EMPTY: ClassVar[dict[str, object]] = {"tool_rate_limits": ""}  # no limits

    search_backend: Literal["searxng", "brave", "tavily", "duckduckgo"] | None = None
    searxng_url: str | None = None
    brave_api_key: SecretStr | None = None
    tavily_api_key: SecretStr | None = None
    brave_search_url: str = "https://api.search.brave.com/res/v1/web/search"
    tavily_search_url: str = "https://api.tavily.com/search"
    duckduckgo_url: str = "https://html.duckduckgo.com/html/"
    search_max_results: int = Field(8, ge=1, le=20)
    search_timeout: float = Field(10.0, ge=1, le=120)
    fetch_timeout: float = Field(20.0, ge=1, le=300)
    fetch_max_bytes: int = Field(2_000_000, ge=1_000, le=100_000_000)
    fetch_max_chars: int = Field(12_000, ge=500, le=200_000)
    fetch_reader_chars: int = Field(60_000, ge=1_000, le=500_000)
    fetch_max_redirects: int = Field(5, ge=0, le=10)
    fetch_allow_loopback: bool = False
    # Extraction runs in killable worker processes (issue 14.6).
    fetch_extract_timeout: float = Field(10.0, ge=1, le=120)
    fetch_extract_workers: int = Field(2, ge=1, le=16)
    # Fair extraction: seconds a page may wait for a free worker (the deadline counts from its start).
    fetch_extract_wait: float = Field(30.0, ge=1, le=600)
    fetch_user_agent: str = "Mozilla/5.0 (compatible; agentbot/0.1; +research assistant)"
    # --- DNS without threads (agent/tools/netguard.py DnsResolver): the name servers fetch_url asks ---
    fetch_dns_servers: str = ""

    @field_validator("fetch_dns_servers")
    @classmethod
    def _dns_servers(cls, v: str) -> str:
        parse_dns_servers(v)  # ValueError names the entry
        return v

    files_quota_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=10 * 1024**3)
    files_quota_files: int = Field(1000, ge=10, le=1_000_000)  # entries (14.4)
    files_read_max_chars: int = Field(20_000, ge=500, le=500_000)
    python_sandbox: Literal["auto", "namespaces", "rlimits", "off"] = "auto"
    python_timeout: float = Field(30.0, ge=1, le=600)
    python_cpu_seconds: int = Field(20, ge=1, le=600)
    python_memory_mb: int = Field(512, ge=64, le=65_536)
    python_file_size_mb: int = Field(10, ge=1, le=10_000)
    python_max_processes: int = Field(32, ge=4, le=4096)
    python_max_output_chars: int = Field(10_000, ge=500, le=200_000)
    python_tmpfs_mb: int = Field(64, ge=1, le=4096)
    python_network: bool = False
    python_sandbox_uid: int = Field(65534, ge=1, le=2**32 - 2)
    python_sandbox_gid: int = Field(65534, ge=1, le=2**32 - 2)
    python_executable: str = ""
    python_hide_paths: str = ""
    tool_rate_limits: str = "web_search=10/60,fetch_url=30/60,run_python=10/60"
    tool_rate_server_multiplier: float = Field(5.0, ge=1, le=1000)
    # --- MCP servers (issue 17.1): tools from the operator's servers beside the built-in ones ---
    mcp_servers_file: str | None = None

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

    memory_embedding: Literal["minilm", "multilingual", "openai"] = "minilm"
    memory_embedding_url: str | None = None
    memory_embedding_model: str | None = None
    memory_embedding_api_key: SecretStr | None = None
    chroma_host: str | None = None
    chroma_port: int = Field(8000, ge=1, le=65535)
    chroma_ssl: bool = False
    chroma_token: SecretStr | None = None
    # --- a Chroma server that stops answering (qaops) ---
    # chromadb's HTTP client waits forever: a server that took the connection and said nothing hung
    # start-up, doctor, backups and SIGTERM for good. Seconds per request to the Chroma server.
    chroma_timeout: int = Field(30, ge=1, le=600)

    @field_validator("chroma_host")
    @classmethod
    def _host_only(cls, v: str | None) -> str | None:
        # chromadb reads "http://chroma" as a URL on port 80 and "chroma:8000" as port "8000:8000":
        # both failed at start-up as if the server were down
        if v and ("/" in v or (":" in v and v.count(":") == 1)):
            raise ValueError(
                "must be a host name or IP address only (e.g. chroma or 10.0.0.5): put the port in "
                "CHROMA_PORT and use CHROMA_SSL=1 for https"
            )
        return v

    def memory_where(self) -> str:
        """Where memory lives, naming the settings that put it there (for error messages)."""
        if self.chroma_host:
            scheme = "https" if self.chroma_ssl else "http"
            return f"the Chroma server at {scheme}://{self.chroma_host}:{self.chroma_port} (CHROMA_HOST, CHROMA_PORT)"
        return "the embedded Chroma store under DATA_DIR/memory"


class AgentSettings(ToolEnv, MemoryEnv):
    EMPTY: ClassVar[dict[str, object]] = {
        **ToolEnv.EMPTY,
        "router_step_limits": {},
        "router_research_tiers": {},
        "reader_model": "",  # off
    }

    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    agent_model: str = "gpt-4o-mini"
    agent_max_steps: int = Field(12, ge=1, le=100)
    agent_stream: bool = True
    agent_temperature: float | None = Field(None, ge=0, le=2)
    agent_max_tokens: int | None = Field(None, ge=1)
    reasoning_effort: Effort | None = None
    model_max_attempts: int = Field(5, ge=1, le=20)
    prices_file: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    data_dir: str = "./data"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    router_tiers_file: str | None = None
    router_classifier: Literal["embedding", "heuristic", "judge", "off"] = "embedding"
    router_judge_model: str | None = None
    router_default_tier: Literal["simple", "medium", "complex"] = "medium"
    router_max_tier: Literal["simple", "medium", "complex"] = "complex"
    router_cooldown: float = Field(60.0, gt=0)
    router_max_cooldown: float = Field(900.0, gt=0)
    router_step_limits: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: {"simple": 3, "medium": 6}
    )
    router_research_tiers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"complex": "medium"}
    )
    # --- routing hand-down (issue 19.5): 0 = off ---
    router_hand_down_calls: int = Field(0, ge=0, le=50)
    # --- qacli: how long a model may send nothing (a CPU-only server reading a long prompt) ---
    model_timeout: float = Field(120.0, ge=1, le=3600)
    reader_model: str = "auto"
    reader_min_chars: int = Field(4000, ge=500, le=1_000_000)
    reader_max_words: int = Field(350, ge=50, le=4000)

    @field_validator("reader_model", mode="before")
    @classmethod
    def _reader(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            return v.lower() if v.lower() in ("auto", "off", "") else v
        return v

    @field_validator("openai_base_url")
    @classmethod
    def _openai_base(cls, v: str) -> str:
        # The endpoint's full address is what provider pages show and what people paste: every call then
        # went to .../chat/completions/chat/completions, and its 404 only said to check this setting.
        parts = urlsplit(v)
        path = parts.path.rstrip("/")
        if path.lower().endswith("/chat/completions"):
            base = parts._replace(path=path[: -len("/chat/completions")]).geturl()
            raise ValueError(f"ends in /chat/completions, which agentbot adds itself: drop it and set {base}")
        return v

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: str) -> str:
        try:
            path = Path(v or "./data").expanduser().absolute()
        except FileNotFoundError:  # a typer box of traceback, from a shell left in a deleted directory
            raise ValueError(
                "is relative, and the current directory no longer exists (deleted or replaced): cd into "
                "it again, or give an absolute path"
            ) from None
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{existing or path} is not a directory agentbot can write in")
        return v

    @field_validator("router_step_limits", "router_research_tiers", mode="before")
    @classmethod
    def _tier_pairs(cls, v: object, info: ValidationInfo) -> object:
        parse = parse_step_limits if info.field_name == "router_step_limits" else parse_research_tiers
        return parse(unquote(v)) if isinstance(v, str) else v  # quoted, it was refused (docker's env-file)


def explain(err: ValidationError) -> str:
    """The one place a bad setting becomes a message: one line naming each env key, its value and what
    is allowed. Secrets' values are never echoed."""
    parts = []
    for e in err.errors(include_url=False):
        key = str(e["loc"][0]).upper() if e["loc"] else "?"  # a default's error says the field's name
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
        check_env_lines(ENV_FILE)
        return cls(**{"_env_file": ENV_FILE, **init})
    except ValidationError as e:
        raise ConfigError(explain(e)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(not_utf8(e, ENV_FILE)) from None


def load_agent_settings(**overrides: Any) -> AgentSettings:
    """Parse the agent's settings once (environment, then ``.env``) and check the files they name."""
    settings = parse_settings(AgentSettings, **overrides)
    check_env_names(ENV_FILE, AgentSettings)  # no name of the bot's is near one of these (tests check it)
    from agent.models.prices import use_prices_file
    from agent.models.tiers import load_tiers

    use_prices_file(settings.prices_file, settings.openai_base_url)
    load_tiers(settings.router_tiers_file, settings.agent_model)
    return settings
