"""The research tools in one place: settings from the environment and one function that builds them.

    settings = ResearchToolSettings.from_env(os.environ)
    registry = ToolRegistry(research_tools(settings), guards=[research_guard(settings)])
    per_server = registry.subset(enabled_tool_names)   # per-server enable/disable; guards are shared

Every setting, its default and its limit are listed in :meth:`ResearchToolSettings.from_env`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, get_args
from urllib.parse import urlsplit

import httpx

from agent.config import ConfigError
from agent.logs import register_secret
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.files import FilesSettings, file_tools
from agent.tools.netguard import LazyClient
from agent.tools.python_exec import PythonSettings, SandboxMode, python_tools
from agent.tools.ratelimit import DEFAULT_LIMITS, Rate, RateLimitGuard, parse_rate_limits
from agent.tools.registry import Tool
from agent.tools.web_search import BackendName, SearchSettings, search_tools

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def default_of(cls: type, name: str) -> Any:
    """A dataclass field's default. ``cls.name`` is not it for slotted dataclasses (a member descriptor)."""
    return next(f.default for f in fields(cls) if f.name == name)


@dataclass(frozen=True, slots=True)
class ResearchToolSettings:
    search: SearchSettings = field(default_factory=SearchSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    files: FilesSettings = field(default_factory=FilesSettings)
    python: PythonSettings = field(default_factory=PythonSettings)
    rate_limits: Mapping[str, Rate] = field(default_factory=lambda: parse_rate_limits(DEFAULT_LIMITS))
    rate_server_multiplier: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ResearchToolSettings:
        """Read every research-tool setting; a bad value raises :class:`ConfigError` naming the key."""
        env = _Env(os.environ if environ is None else environ)
        keys = {k: env.text(k) for k in ("BRAVE_API_KEY", "TAVILY_API_KEY")}
        searxng = env.text("SEARXNG_URL")
        for secret in keys.values():
            register_secret(secret)
        if searxng and urlsplit(searxng).password:
            register_secret(urlsplit(searxng).password)
        default_backend = (
            "searxng"
            if searxng
            else "brave"
            if keys["BRAVE_API_KEY"]
            else "tavily"
            if keys["TAVILY_API_KEY"]
            else "duckduckgo"
        )
        search = SearchSettings(
            backend=env.choice("SEARCH_BACKEND", get_args(BackendName), default_backend),
            searxng_url=searxng,
            brave_api_key=keys["BRAVE_API_KEY"],
            brave_url=env.text("BRAVE_SEARCH_URL") or default_of(SearchSettings, "brave_url"),
            tavily_api_key=keys["TAVILY_API_KEY"],
            tavily_url=env.text("TAVILY_SEARCH_URL") or default_of(SearchSettings, "tavily_url"),
            duckduckgo_url=env.text("DUCKDUCKGO_URL") or default_of(SearchSettings, "duckduckgo_url"),
            max_results=env.num("SEARCH_MAX_RESULTS", int, 8, 1, 20),
            timeout=env.num("SEARCH_TIMEOUT", float, 10.0, 1, 120),
        )
        if search.backend == "searxng" and not search.searxng_url:
            raise ConfigError("SEARCH_BACKEND=searxng needs SEARXNG_URL (e.g. http://localhost:8888)")
        if search.backend in ("brave", "tavily") and not (
            search.brave_api_key if search.backend == "brave" else search.tavily_api_key
        ):
            raise ConfigError(f"SEARCH_BACKEND={search.backend} needs {search.backend.upper()}_API_KEY")
        fetch = FetchSettings(
            timeout=env.num("FETCH_TIMEOUT", float, 20.0, 1, 300),
            max_bytes=env.num("FETCH_MAX_BYTES", int, 2_000_000, 1_000, 100_000_000),
            max_chars=env.num("FETCH_MAX_CHARS", int, 12_000, 500, 200_000),
            reader_chars=env.num("FETCH_READER_CHARS", int, 60_000, 1_000, 500_000),
            max_redirects=env.num("FETCH_MAX_REDIRECTS", int, 5, 0, 10),
            allow_loopback=env.flag("FETCH_ALLOW_LOOPBACK", False),
            user_agent=env.text("FETCH_USER_AGENT") or default_of(FetchSettings, "user_agent"),
            # --- extraction in killable worker processes (issue 14.6) ---
            extract_timeout=env.num("FETCH_EXTRACT_TIMEOUT", float, 10.0, 1, 120),
            extract_workers=env.num("FETCH_EXTRACT_WORKERS", int, 2, 1, 16),
        )
        quota = env.num("FILES_QUOTA_BYTES", int, 10 * 1024 * 1024, 1024, 10 * 1024**3)
        # --- workspace entry quota and sandbox network (issue 14.4, 14.7) ---
        quota_files = env.num("FILES_QUOTA_FILES", int, 1000, 10, 1_000_000)
        if env.flag("PYTHON_NETWORK", False):
            raise ConfigError(
                "PYTHON_NETWORK=1 is no longer supported: sandboxed code never has network access (the agent "
                "reads the web with fetch_url, which refuses private addresses); remove the setting"
            )
        files = FilesSettings(
            quota_bytes=quota,
            quota_files=quota_files,
            read_max_chars=env.num("FILES_READ_MAX_CHARS", int, 20_000, 500, 500_000),
        )
        data_dir = os.path.abspath(env.text("DATA_DIR") or "./data")
        hide = ("/root", "/home", os.path.abspath(".env"), data_dir, *env.items("PYTHON_HIDE_PATHS"))
        python = PythonSettings(
            mode=env.choice("PYTHON_SANDBOX", get_args(SandboxMode), "auto"),
            timeout=env.num("PYTHON_TIMEOUT", float, 30.0, 1, 600),
            cpu_seconds=env.num("PYTHON_CPU_SECONDS", int, 20, 1, 600),
            memory_mb=env.num("PYTHON_MEMORY_MB", int, 512, 64, 65_536),
            file_size_mb=env.num("PYTHON_FILE_SIZE_MB", int, 10, 1, 10_000),
            max_processes=env.num("PYTHON_MAX_PROCESSES", int, 32, 4, 4096),
            max_output_chars=env.num("PYTHON_MAX_OUTPUT_CHARS", int, 10_000, 500, 200_000),
            tmpfs_mb=env.num("PYTHON_TMPFS_MB", int, 64, 1, 4096),
            sandbox_uid=env.num("PYTHON_SANDBOX_UID", int, 65534, 1, 2**32 - 2),
            sandbox_gid=env.num("PYTHON_SANDBOX_GID", int, 65534, 1, 2**32 - 2),
            python=env.text("PYTHON_EXECUTABLE") or sys.executable,
            hide=hide,
            quota_bytes=quota,
            quota_files=quota_files,
        )
        try:
            limits = parse_rate_limits(
                env.text("TOOL_RATE_LIMITS") if "TOOL_RATE_LIMITS" in env.raw else DEFAULT_LIMITS
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return cls(
            search, fetch, files, python, limits, env.num("TOOL_RATE_SERVER_MULTIPLIER", float, 5.0, 1, 1000)
        )


class _Env:
    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw

    def text(self, key: str) -> Any:
        value = self.raw.get(key, "").strip()
        return value or None

    def items(self, key: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in (self.raw.get(key) or "").split(",") if p.strip())

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
        raise ConfigError(f"{key}={value!r}: use 1 or 0")

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> Any:
        value = (self.raw.get(key) or "").strip().lower() or default
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: allowed values are {', '.join(allowed)}")
        return value

    def num(self, key: str, kind: Callable[[str], T], default: T, low: float, high: float) -> T:
        raw = (self.raw.get(key) or "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw!r}: expected a number between {low:g} and {high:g}") from None
        if not low <= value <= high:  # type: ignore[operator]
            raise ConfigError(f"{key}={raw!r}: must be between {low:g} and {high:g}")
        return value


def _search_client(settings: SearchSettings) -> LazyClient:
    return LazyClient(lambda: httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout, connect=5.0)))


def research_tools(
    settings: ResearchToolSettings,
    *,
    fetcher: PageFetcher | None = None,
    search_client: LazyClient | None = None,
) -> list[Tool]:
    """web_search, fetch_url, read_file, write_file, list_files, delete_file and run_python.

    web_search uses ``ctx.services["http"]`` when the caller shares a client, else its own lazily made
    one; fetch_url always uses its own guarded client (the SSRF guard lives in its transport). Pass
    ``fetcher``/``search_client`` to own and close those clients yourself (tests do). run_python is
    absent with ``PYTHON_SANDBOX=off``; building it probes the sandbox once (about 0.1 s).
    """
    fetcher = fetcher or PageFetcher(settings.fetch)
    return [
        *search_tools(settings.search, search_client or _search_client(settings.search)),
        *fetch_tools(fetcher),
        *file_tools(settings.files),
        *python_tools(settings.python),
    ]


def research_guard(settings: ResearchToolSettings) -> RateLimitGuard:
    """The rate-limit guard for a registry holding these tools."""
    return RateLimitGuard(dict(settings.rate_limits), server_multiplier=settings.rate_server_multiplier)
