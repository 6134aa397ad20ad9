"""Every built-in tool the project has, in one registry, so the terminal and the bot offer the same set."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping

from agent.tools.builtin import builtin_tools
from agent.tools.registry import Tool, ToolGuard, ToolRegistry


def all_tools(env: Mapping[str, str] | None = None, *, memory: bool = False) -> list[Tool]:
    """Built-in and research tools, plus ``recall``/``remember`` when the caller provides a memory service
    (the bot does, per guild; the terminal has no guild, so no memory)."""
    import os

    env = os.environ if env is None else env
    tools = builtin_tools()
    try:
        research = importlib.import_module("agent.tools.research")
    except ModuleNotFoundError as e:
        if e.name != "agent.tools.research":
            raise
    else:
        tools += list(research.research_tools(research.ResearchToolSettings.from_env(env)))
    if memory:
        from agent.tools.memory_tools import recall, remember

        tools += [recall, remember]
    return tools


def build_registry(
    enabled: Iterable[str] | None = None,
    guards: Iterable[ToolGuard] = (),
    env: Mapping[str, str] | None = None,
    memory: bool = False,
) -> ToolRegistry:
    reg = ToolRegistry(all_tools(env, memory=memory), list(guards))
    return reg.subset(enabled) if enabled is not None else reg
