"""agentbot's agent library: a provider-neutral ReAct engine. Never imports bot or discord.

This module is the library's public face: ``from agent import Agent, tool, ToolRegistry, OpenAIChatModel``.
Everything listed in ``__all__`` is kept stable; submodules are implementation. Long-term memory lives in
:mod:`agent.memory` (its Chroma store is imported on first use: chromadb is slow to import).
"""

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
    "Usage", "UsageEvent", "build_model", "build_reader", "build_router", "default_prices",
    "load_agent_settings", "make_client", "tool",
]
# fmt: on
