"""Every built-in tool the project has, in one registry, so the terminal and the bot offer the same set."""

from __future__ import annotations

from collections.abc import Iterable

from agent.setting_parsers import ConfigError, Rate
from agent.tools.builtin import builtin_tools
from agent.tools.mcp import McpConfigError, McpTools, load_servers
from agent.tools.memory_tools import recall, remember
from agent.tools.ratelimit import RateLimitGuard
from agent.tools.registry import Tool, ToolGuard, ToolRegistry
from agent.tools.research import ResearchToolSettings, research_tools


def build_registry(
    research: ResearchToolSettings | None = None,
    guards: Iterable[ToolGuard] = (),
    memory: bool = False,
    extra: Iterable[Tool] = (),
) -> ToolRegistry:
    """Built-in and research tools, ``recall``/``remember`` when the caller provides a memory service (the
    bot does, per guild; the terminal has no guild), and ``extra`` ones (the operator's MCP servers').
    Library users may leave ``research`` out: the tool settings are then parsed from the environment."""
    research = research or ResearchToolSettings.from_env()
    memory_tools = [recall, remember] if memory else []
    return ToolRegistry([*builtin_tools(), *research_tools(research), *memory_tools, *extra], list(guards))


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
    try:
        await mcp.connect()
    except BaseException:  # cancelled (Ctrl-C, SIGTERM): the servers started so far are stopped
        await mcp.aclose()
        raise
    return mcp


def limit_mcp_tools(registry: ToolRegistry, tools: Iterable[Tool]) -> None:
    """Give MCP tools the default rate limit where the operator set none for them (TOOL_RATE_LIMITS
    still wins by name). The default goes on the tool itself, so the guard's table does not gain an
    entry per server's tool name for the life of the process."""
    if any(isinstance(guard, RateLimitGuard) for guard in registry.guards):
        for t in tools:
            t.default_rate = MCP_DEFAULT_RATE
