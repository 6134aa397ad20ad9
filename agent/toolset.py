"""Every built-in tool the project has, in one registry, so the terminal and the bot offer the same set."""

from __future__ import annotations

import os
from collections.abc import Iterable

from agent.setting_parsers import ConfigError, Rate
from agent.tools.builtin import builtin_tools
from agent.tools.mcp import McpConfigError, McpTools, load_servers
from agent.tools.memory_tools import recall, remember
from agent.tools.ratelimit import RateLimitGuard
from agent.tools.registry import Tool, ToolGuard, ToolRegistry
from agent.tools.research import ResearchToolSettings, research_tools


def all_tools(research: ResearchToolSettings, *, memory: bool = False) -> list[Tool]:
    """Built-in and research tools, plus ``recall``/``remember`` when the caller provides a memory service
    (the bot does, per guild; the terminal has no guild, so no memory)."""
    tools = [*builtin_tools(), *research_tools(research)]
    if memory:
        tools += [recall, remember]
    return tools


def build_registry(
    enabled: Iterable[str] | None = None,
    guards: Iterable[ToolGuard] = (),
    research: ResearchToolSettings | None = None,
    memory: bool = False,
    extra: Iterable[Tool] = (),
) -> ToolRegistry:
    """``research`` defaults to the settings in the environment; pass them when you already parsed them.
    ``extra``: more tools beside the built-in ones (the operator's MCP servers' tools)."""
    settings = research or ResearchToolSettings.from_env(os.environ)
    reg = ToolRegistry([*all_tools(settings, memory=memory), *extra], list(guards))
    return reg.subset(enabled) if enabled is not None else reg


MCP_DEFAULT_RATE = Rate(30, 60.0)
"""Per user per tool, like fetch_url, unless TOOL_RATE_LIMITS names the MCP tool."""


async def operator_mcp(path: str | None) -> McpTools | None:
    """The operator's MCP servers (``MCP_SERVERS_FILE``), connected at once; a server that is down or
    slow is left out and named in ``problems`` (logged once). None when no file is set."""
    if not path:
        return None
    try:
        servers = load_servers(path)
    except McpConfigError as e:
        raise ConfigError(str(e)) from None
    mcp = McpTools(servers)
    await mcp.connect()
    return mcp


def limit_mcp_tools(registry: ToolRegistry, tools: Iterable[Tool]) -> None:
    """Give MCP tools the default rate limit where the operator set none for them."""
    for guard in registry.guards:
        if isinstance(guard, RateLimitGuard):
            for t in tools:
                guard.limits.setdefault(t.name, MCP_DEFAULT_RATE)
