"""Every built-in tool the project has, in one registry, so the terminal and the bot offer the same set."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from agent.tools.builtin import builtin_tools
from agent.tools.registry import Tool, ToolGuard, ToolRegistry


def _optional(module: str, factory: str, *args: Any) -> list[Tool]:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return []
        raise
    return list(getattr(mod, factory)(*args))


def all_tools(env: Mapping[str, str] | None = None) -> list[Tool]:
    """Built-in, research and memory tools (each module builds its own from settings)."""
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
    tools += _optional("agent.tools.memory_tools", "memory_tools")
    return tools


def build_registry(
    enabled: Iterable[str] | None = None,
    guards: Iterable[ToolGuard] = (),
    env: Mapping[str, str] | None = None,
) -> ToolRegistry:
    reg = ToolRegistry(all_tools(env), list(guards))
    return reg.subset(enabled) if enabled is not None else reg
