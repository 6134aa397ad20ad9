"""agentbot's agent library: a provider-neutral ReAct engine. Never imports bot or discord.

This module is the library's public face: ``from agent import Agent, tool, ToolRegistry, OpenAIChatModel``.
Everything listed in ``__all__`` is kept stable; submodules are implementation. Long-term memory lives in
:mod:`agent.memory` (its Chroma store is imported on first use: chromadb is slow to import).

The names below are imported on first use (PEP 562), so ``import agent.config`` or a child process run
as ``python -m agent.tools.extract`` does not load the whole library: measured here, every ``agentbot``
start paid 0.2 s of CPU for it, and each page-extraction worker 0.2 s of its 0.37 s start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.budget import Budget, BudgetExceeded
    from agent.config import AgentSettings, ConfigError, load_agent_settings
    from agent.events import (
        AgentEvent,
        Cost,
        ErrorEvent,
        Event,
        FinalEvent,
        MemoryEvent,
        ModelSwitched,
        RetryEvent,
        RouteDecided,
        RouteDecision,
        RunResult,
        RunStatus,
        StepStarted,
        TextDelta,
        ToolCallEvent,
        ToolResultEvent,
        Usage,
        UsageEvent,
    )
    from agent.loop import DEFAULT_SYSTEM_PROMPT, Agent
    from agent.messages import Message, ToolCall
    from agent.models.anthropic import AnthropicModel
    from agent.models.base import (
        ContextOverflowError,
        Model,
        ModelAuthError,
        ModelError,
        ModelNotFoundError,
        ModelResponse,
        ModelSettings,
        ModelUnavailableError,
        RetryNotice,
        Routing,
        StepOutcome,
        SwitchNotice,
        TextChunk,
    )
    from agent.models.factory import build_model, build_reader, build_router
    from agent.models.gemini import GeminiModel
    from agent.models.http import make_client
    from agent.models.openai import OpenAIChatModel
    from agent.models.prices import PriceTable, default_prices
    from agent.models.routed import RoutedModel
    from agent.models.router import Breakers, Router
    from agent.reader import Reader
    from agent.run_state import RunState
    from agent.tools.registry import (
        Tool,
        ToolContext,
        ToolGuard,
        ToolOutcome,
        ToolOutput,
        ToolRefused,
        ToolRegistry,
        TransientToolError,
        tool,
    )
    from agent.toolset import build_registry

_EXPORTS: dict[str, str] = {
    "Budget": "agent.budget",
    "BudgetExceeded": "agent.budget",
    "AgentSettings": "agent.config",
    "ConfigError": "agent.config",
    "load_agent_settings": "agent.config",
    "AgentEvent": "agent.events",
    "Cost": "agent.events",
    "ErrorEvent": "agent.events",
    "Event": "agent.events",
    "FinalEvent": "agent.events",
    "MemoryEvent": "agent.events",
    "ModelSwitched": "agent.events",
    "RetryEvent": "agent.events",
    "RouteDecided": "agent.events",
    "RouteDecision": "agent.events",
    "RunResult": "agent.events",
    "RunStatus": "agent.events",
    "StepStarted": "agent.events",
    "TextDelta": "agent.events",
    "ToolCallEvent": "agent.events",
    "ToolResultEvent": "agent.events",
    "Usage": "agent.events",
    "UsageEvent": "agent.events",
    "DEFAULT_SYSTEM_PROMPT": "agent.loop",
    "Agent": "agent.loop",
    "Message": "agent.messages",
    "ToolCall": "agent.messages",
    "AnthropicModel": "agent.models.anthropic",
    "ContextOverflowError": "agent.models.base",
    "Model": "agent.models.base",
    "ModelAuthError": "agent.models.base",
    "ModelError": "agent.models.base",
    "ModelNotFoundError": "agent.models.base",
    "ModelResponse": "agent.models.base",
    "ModelSettings": "agent.models.base",
    "ModelUnavailableError": "agent.models.base",
    "RetryNotice": "agent.models.base",
    "Routing": "agent.models.base",
    "StepOutcome": "agent.models.base",
    "SwitchNotice": "agent.models.base",
    "TextChunk": "agent.models.base",
    "build_model": "agent.models.factory",
    "build_reader": "agent.models.factory",
    "build_router": "agent.models.factory",
    "GeminiModel": "agent.models.gemini",
    "make_client": "agent.models.http",
    "OpenAIChatModel": "agent.models.openai",
    "PriceTable": "agent.models.prices",
    "default_prices": "agent.models.prices",
    "RoutedModel": "agent.models.routed",
    "Breakers": "agent.models.router",
    "Router": "agent.models.router",
    "Reader": "agent.reader",
    "RunState": "agent.run_state",
    "build_registry": "agent.toolset",
    "Tool": "agent.tools.registry",
    "ToolContext": "agent.tools.registry",
    "ToolGuard": "agent.tools.registry",
    "ToolOutcome": "agent.tools.registry",
    "ToolOutput": "agent.tools.registry",
    "ToolRefused": "agent.tools.registry",
    "ToolRegistry": "agent.tools.registry",
    "TransientToolError": "agent.tools.registry",
    "tool": "agent.tools.registry",
}
"""Each public name -> the module that defines it."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found once, then an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# fmt: off
__all__ = [
    "DEFAULT_SYSTEM_PROMPT", "Agent", "AgentEvent", "AgentSettings", "AnthropicModel", "Breakers", "Budget",
    "BudgetExceeded", "ConfigError", "ContextOverflowError", "Cost", "ErrorEvent", "Event", "FinalEvent",
    "GeminiModel", "MemoryEvent", "Message", "Model", "ModelAuthError", "ModelError", "ModelNotFoundError",
    "ModelResponse", "ModelSettings", "ModelSwitched", "ModelUnavailableError", "OpenAIChatModel",
    "PriceTable", "Reader", "RetryEvent", "RetryNotice", "RouteDecided", "RouteDecision", "RoutedModel",
    "Router", "Routing", "RunResult", "RunState", "RunStatus", "StepOutcome", "StepStarted", "SwitchNotice",
    "TextChunk", "TextDelta", "Tool", "ToolCall", "ToolCallEvent", "ToolContext", "ToolGuard",
    "ToolOutcome", "ToolOutput", "ToolRefused", "ToolRegistry", "ToolResultEvent", "TransientToolError",
    "Usage", "UsageEvent", "build_model", "build_reader", "build_registry", "build_router", "default_prices",
    "load_agent_settings", "make_client", "tool",
]
# fmt: on
