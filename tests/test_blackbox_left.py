"""Small holes other engineers found and left: each test fails without its fix."""

from __future__ import annotations

import dataclasses
import json

from agent.messages import ToolCall
from agent.setting_parsers import Rate
from agent.tools.ratelimit import RateLimitGuard
from agent.tools.registry import ToolContext, ToolRegistry, tool
from agent.toolset import limit_mcp_tools


@tool
def mcp_stand_in(query: str) -> str:
    """A stand-in for a tool an MCP server lists."""
    return query


async def test_mcp_tool_names_do_not_pile_up_in_the_rate_table_and_keep_their_limit() -> None:
    """A hostile MCP server renaming its tools each listing (or servers added and removed) must not grow
    the process-wide rate table; each tool still gets the 30-per-minute default, and TOOL_RATE_LIMITS
    naming one still wins."""
    guard = RateLimitGuard({"srv_pinned": Rate(1, 60.0)}, clock=lambda: 1000.0)
    base = ToolRegistry([], guards=[guard])
    for i in range(2000):
        limit_mcp_tools(base, [dataclasses.replace(mcp_stand_in, name=f"srv_t{i}")])
    assert guard.limits == {"srv_pinned": Rate(1, 60.0)}

    fresh = [dataclasses.replace(mcp_stand_in, name=n) for n in ("srv_renamed", "srv_pinned")]
    limit_mcp_tools(base, fresh)
    registry = ToolRegistry(fresh, base.guards)
    ctx = ToolContext(session_id="s", namespace="g1", user_id="alice")

    async def call(name: str) -> bool:
        return (await registry.execute(ToolCall("c", name, json.dumps({"query": "q"})), ctx)).is_error

    assert [await call("srv_renamed") for _ in range(31)] == [False] * 30 + [True]
    assert [await call("srv_pinned") for _ in range(2)] == [False, True]
