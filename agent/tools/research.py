"""The research tools in one place: settings from the environment and one function that builds them.

    settings = ResearchToolSettings.from_settings(agent_settings)   # parsed once at start-up
    registry = ToolRegistry(research_tools(settings), guards=[research_guard(settings)])
    per_server = registry.subset(enabled_tool_names)   # per-server enable/disable; guards are shared

Every setting, its default and its bounds are fields of :class:`agent.config.ToolEnv`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from agent.config import ConfigError, ToolEnv, parse_settings
from agent.logs import register_secret
from agent.models.http import make_client
from agent.setting_parsers import Rate, parse_rate_limits
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.files import FilesSettings, file_tools
from agent.tools.netguard import LazyClient
from agent.tools.python_exec import PythonSettings, python_tools
from agent.tools.ratelimit import DEFAULT_LIMITS, RateLimitGuard
from agent.tools.registry import Tool
from agent.tools.web_search import SearchSettings, search_tools

T = TypeVar("T")


def _prefixed(env: ToolEnv, prefix: str, cls: type[T], **given: Any) -> T:
    """``cls`` with every field not ``given`` read from the setting ``<prefix><field>``: FetchSettings
    and PythonSettings name their fields after FETCH_* and PYTHON_* settings."""
    return cls(**{f.name: getattr(env, prefix + f.name) for f in fields(cls) if f.name not in given}, **given)


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
        """For tests and library users: parse ``environ`` (the process environment when None) as
        :class:`~agent.config.ToolEnv`. The bot and ``agentbot ask`` use :meth:`from_settings`."""
        return cls.from_settings(parse_settings(ToolEnv, None if environ is None else dict(environ)))

    @classmethod
    def from_settings(cls, env: ToolEnv, data_dir: str = "./data") -> ResearchToolSettings:
        """The tools' settings from the parsed tree; a combination that cannot work raises
        :class:`ConfigError` naming the keys."""
        brave = env.brave_api_key.get_secret_value() if env.brave_api_key else None
        tavily = env.tavily_api_key.get_secret_value() if env.tavily_api_key else None
        searxng = env.searxng_url
        for secret in (brave, tavily):
            register_secret(secret)
        if searxng and urlsplit(searxng).password:
            register_secret(urlsplit(searxng).password)
        default_backend = "searxng" if searxng else "brave" if brave else "tavily" if tavily else "duckduckgo"
        search = SearchSettings(
            backend=env.search_backend or default_backend,
            searxng_url=searxng,
            brave_api_key=brave,
            brave_url=env.brave_search_url,
            tavily_api_key=tavily,
            tavily_url=env.tavily_search_url,
            duckduckgo_url=env.duckduckgo_url,
            max_results=env.search_max_results,
            timeout=env.search_timeout,
        )
        if search.backend == "searxng" and not search.searxng_url:
            raise ConfigError("SEARCH_BACKEND=searxng needs SEARXNG_URL (e.g. http://localhost:8888)")
        if search.backend in ("brave", "tavily") and not (brave if search.backend == "brave" else tavily):
            raise ConfigError(f"SEARCH_BACKEND={search.backend} needs {search.backend.upper()}_API_KEY")
        fetch = _prefixed(env, "fetch_", FetchSettings)
        quota = env.files_quota_bytes
        quota_files = env.files_quota_files  # entries, as well as bytes (issue 14.4)
        files = FilesSettings(
            quota_bytes=quota, quota_files=quota_files, read_max_chars=env.files_read_max_chars
        )
        extra = tuple(p.strip() for p in env.python_hide_paths.split(",") if p.strip())
        # The bot's directory and its files with secrets, wherever they are: under /usr (Docker's /usr/src/app)
        # they were in the sandbox, .env.bak and the MCP servers file (with its servers' keys) readable.
        mcp = (os.path.abspath(os.path.expanduser(env.mcp_servers_file)),) if env.mcp_servers_file else ()
        mine = (os.getcwd(), os.path.abspath(".env"), *mcp)
        hide = ("/root", "/home", *mine, os.path.abspath(data_dir or "./data"), *extra)
        given = {"mode": env.python_sandbox, "python": env.python_path, "hide": hide, "quota_bytes": quota}
        python = _prefixed(env, "python_", PythonSettings, **given, quota_files=quota_files)
        limits = parse_rate_limits(env.tool_rate_limits)
        return cls(search, fetch, files, python, limits, env.tool_rate_server_multiplier)


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
    timeout = httpx.Timeout(settings.search.timeout, connect=5.0)
    # The models' client (decoded bytes capped as they inflate, stacked encodings refused), not a plain
    # one: httpx inflates a chunk whole, and 270 bytes of gzip, gzip, gzip from a search service took
    # `agentbot ask` to 2.1 GB before the answer cap could look.
    search_client = search_client or LazyClient(lambda: make_client(timeout))
    return [
        *search_tools(settings.search, search_client),
        *fetch_tools(fetcher),
        *file_tools(settings.files),
        *python_tools(settings.python),
    ]


def research_guard(settings: ResearchToolSettings) -> RateLimitGuard:
    """The rate-limit guard for a registry holding these tools."""
    return RateLimitGuard(dict(settings.rate_limits), server_multiplier=settings.rate_server_multiplier)
