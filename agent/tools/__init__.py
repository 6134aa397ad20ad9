"""Tools the agent can call: the decorator and registry, and the built-in tools."""

from agent.tools.registry import (
    Tool,
    ToolContext,
    ToolGuard,
    ToolOutcome,
    ToolOutput,
    ToolRefused,
    ToolRegistry,
    TransientToolError,
    cap_output,
    tool,
)

# fmt: off
__all__ = [
    "Tool", "ToolContext", "ToolGuard", "ToolOutcome", "ToolOutput", "ToolRefused", "ToolRegistry",
    "TransientToolError", "cap_output", "tool",
]
# fmt: on
