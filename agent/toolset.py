"""Every built-in tool the project has, in one registry, so the terminal and the bot offer the same set."""

from __future__ import annotations

import os
from collections.abc import Iterable

from agent.tools.builtin import builtin_tools
from agent.tools.memory_tools import recall, remember
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
) -> ToolRegistry:
    """``research`` defaults to the settings in the environment; pass them when you already parsed them."""
    settings = research or ResearchToolSettings.from_env(os.environ)
    reg = ToolRegistry(all_tools(settings, memory=memory), list(guards))
    return reg.subset(enabled) if enabled is not None else reg
