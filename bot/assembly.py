"""Building one turn's agent: the routed model, the server's tools, workspace, persona and recalled memory.

The one place a session's ``Agent`` is put together (the runner only runs what this returns), plus the
two questions asked before a run may start: which model will run (:func:`route`) and what one step
needs (:func:`step_need`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.budget import BudgetExceeded
from agent.config import ConfigError
from agent.events import AgentEvent, Cost, RouteDecision, Usage
from agent.loop import Agent
from agent.models.base import ModelSettings
from agent.models.breakers import breaker_keys
from agent.models.classifier import JudgeClassifier
from agent.models.prices import default_prices
from agent.models.router import RoutedModel
from agent.models.tokens import DEFAULT_COMPLETION, completion_cap
from agent.tools.registry import Tool, ToolContext, ToolRegistry
from agent.toolset import limit_mcp_tools
from bot.notes import McpLeftOut, MemoryUnreadable, Note
from bot.store import QuotaBudget, SessionRecord

if TYPE_CHECKING:
    from bot.services import Services

SYSTEM_ALLOWANCE = 2000
"""Characters allowed for the system prompt, persona and recalled memories in :func:`step_need`."""


class WorkspaceUnavailable(ConfigError):
    """DATA_DIR/workspaces cannot be written (a full disk, a read-only or foreign-owned mount): every
    turn fails the same way until an admin fixes the host, so no Retry is offered."""


def classified(r: RouteDecision) -> bool:
    """The classifier picked the tier (the session asked for none)."""
    return r.source not in ("", "requested", "default")


def cooling_for(model: RoutedModel | None) -> float:
    """Seconds until some model of the run's router may be called again (0: one may now). A failed
    turn's Retry before then meets the same open circuit breaker (up to 15 min after a rejected key)."""
    if model is None:
        return 0.0
    r = model.router
    built = [m for specs in r.tiers.values() for s in specs if (m := r.model(s)) is not None]
    return min((max(r.breakers.retry_in(k) for k in breaker_keys(m)) for m in built), default=0.0)


def who_runs(r: RouteDecision) -> str:
    return f"{r.model} researches, {r.writer} writes" if r.writer else r.model


async def route(sv: Services, session: SessionRecord, prompt: str, gs: Any) -> RoutedModel:
    """The model for this turn: the session's tier if chosen, else the classifier; the server's tiers."""
    requested = session.tier if session.tier in ("simple", "medium", "complex") else None
    tiers = dict(gs.tiers) if gs is not None else {}
    router = sv.router.with_tiers(tiers, dict(gs.research) if gs is not None else None)
    return await router.route(prompt, requested=requested)


def _answer_holds(sv: Services) -> list[tuple[str, int]]:
    """(model, output tokens the loop holds for one call of it) for each model of any tier: the answer
    cap it is sent with (Anthropic's 8,192 when none is set) plus thinking room on models that think."""
    cap = sv.agent_settings.agent_max_tokens
    return [
        (m.name, completion_cap(m.name, cap or getattr(m, "default_max_tokens", None)))
        for specs in sv.router.tiers.values()
        for spec in specs
        if (m := sv.router.model(spec)) is not None
    ]


def step_need(sv: Services, prompt: str, history: list[dict[str, Any]]) -> int:
    """Tokens one step of this turn will reserve, erring high: the conversation, the tool schemas and the
    system prompt at ~4 characters a token, plus the least output hold of any tier's model (with only
    the answer cap, a thinking model's 8,192 tokens of thinking room passed this check and then refused
    the run's first step after its request was counted)."""
    chars = len(prompt) + sum(len(json.dumps(m, ensure_ascii=False)) for m in history)
    chars += sum(len(json.dumps(t)) for t in sv.tools.specs()) + SYSTEM_ALLOWANCE
    fallback = sv.agent_settings.agent_max_tokens or DEFAULT_COMPLETION
    return chars // 4 + min((a for _, a in _answer_holds(sv)), default=fallback)


def step_cost(sv: Services, need_tokens: int) -> float:
    """The least one step of ``need_tokens`` (:func:`step_need`) can cost in USD: priced as a reservation
    prices it, on the cheapest priced model of any tier (0 when none has a price), so a run with less
    money left than this is refused before it counts a request, never one that could afford a step."""
    prices, holds = default_prices(), _answer_holds(sv)
    prompt = max(0, need_tokens - min((a for _, a in holds), default=0))
    costs = [c.usd for name, answer in holds if (c := prices.estimate(name, prompt, answer)).known]
    return min(costs, default=0.0)


async def charge_judge(route: RouteDecision, budget: QuotaBudget) -> tuple[str, Cost] | None:
    """A judge classifier's call is real spending: it goes on the requester's quota like any other.
    Returns the name it was charged under and what, which the turn adds to its own usage so the footer
    matches /usage (the same name: a reported one no model has is replaced in both)."""
    if route.judge_model is None or route.judge_usage is None or route.judge_usage.total_tokens == 0:
        return None
    # Priced as a run's calls are: a judge behind vLLM or LiteLLM reports an alias with no price.
    model, cost = default_prices().priced(route.judge_model, route.judge_usage, route.judge_asked)
    try:
        token = await budget.reserve(model, route.judge_usage, cost.usd if cost.known else None)
    except BudgetExceeded:
        # The call was made and paid for: recorded as it was, past the limit if so (dropped, it was in
        # neither /usage nor the footer, and the run went on as if the limit had room); the run's first
        # hold then stops it.
        token = None
    # The name a judge's API reports has no prefix: guessed from it, a Claude judge was listed as openai's.
    provider = route.judge_provider or "openai"
    await budget.settle(token, model, provider, route.judge_usage, cost)
    return model, cost


async def charge_cut_judge(
    sv: Services, session: SessionRecord, prompt: str, budget: QuotaBudget
) -> tuple[str, Usage, Cost] | None:
    """A judge call cut under way (a Stop while a follow-up's turn routes) was sent and its prompt billed:
    charged by estimate like any call cut under way (it was charged nothing, so Stop after Stop spent judge
    calls outside every limit). Returns (name, usage, cost) for the turn's footer; None when no judge was
    asked (a tier the session chose, another classifier)."""
    judge = sv.router.classifier
    if session.tier in ("simple", "medium", "complex") or not isinstance(judge, JudgeClassifier):
        return None
    usage = judge.cut_usage(prompt)
    name, cost = default_prices().priced(judge.model.name, usage, judge.model.name)
    with contextlib.suppress(Exception):  # as a release: never hides the Stop it follows
        await budget.settle(None, name, judge.model.provider, usage, cost)
    return name, usage, cost


async def guild_tools(
    sv: Services, guild_id: int, gs: Any, base: ToolRegistry
) -> tuple[ToolRegistry, dict[str, str]]:
    """The turn's tools plus the MCP servers this server added, less those its admins switched off;
    a name already taken keeps its tool."""
    added, left_out = await sv.guild_mcp.tools_for(guild_id, gs.mcp)
    fresh = [t for t in added if t.name not in base and gs.tool_enabled(t.name)]  # /config tools
    limit_mcp_tools(base, fresh)
    tools = [t for n in base.names() if (t := base.get(n)) is not None]
    return ToolRegistry([*tools, *fresh], base.guards), left_out


def with_late_tools(base: ToolRegistry, late: list[Tool], gs: Any) -> ToolRegistry:
    """The turn's tools plus those of the operator's MCP servers that came up after start-up, less those
    switched off here (``/config tools``); a name already taken keeps its tool."""
    fresh = [t for t in late if t.name not in base and (gs is None or gs.tool_enabled(t.name))]
    limit_mcp_tools(base, fresh)
    return ToolRegistry([*(t for n in base.names() if (t := base.get(n)) is not None), *fresh], base.guards)


@dataclass
class Assembly:
    agent: Agent
    context: ToolContext
    extra_system: str | None
    events: list[AgentEvent | Note] = field(default_factory=list)
    """What assembling found worth showing (recalled memories), rendered before the first step."""


def workspace_of(sv: Services, session_id: str) -> Path:
    """A session's workspace: its turns' files, kept between them."""
    return Path(sv.data_dir) / "workspaces" / session_id


async def assemble(
    sv: Services,
    session: SessionRecord,
    prompt: str,
    requester_id: int,
    channel: Any,
    gs: Any,
    model: RoutedModel,
) -> Assembly:
    enabled = [n for n in sv.tools.names() if gs is None or gs.tool_enabled(n)]
    if sv.memory is None or session.guild_id is None:
        enabled = [n for n in enabled if n not in ("recall", "remember")]
    if sv.bot_settings.memory_remember_per_run == 0:  # it could only refuse, at the cost of a step
        enabled = [n for n in enabled if n != "remember"]
    workspace = workspace_of(sv, session.id)
    try:
        await asyncio.to_thread(workspace.mkdir, parents=True, exist_ok=True)
    except OSError as e:  # a full disk, a read-only or foreign-owned DATA_DIR: "something went wrong"
        raise WorkspaceUnavailable(
            f"the bot cannot create this session's workspace ({e.strerror or e}): an admin can check "
            "DATA_DIR/workspaces on the bot's host (space, owner, read-only mount)"
        ) from None
    ctx = ToolContext(
        session_id=session.id,
        namespace=str(session.guild_id) if session.guild_id else None,
        user_id=str(requester_id),
        workspace=workspace,
        services={"http": sv.http, "memory": sv.memory},
    )
    extra: list[str] = []
    events: list[AgentEvent | Note] = []
    persona = (
        gs.persona_for(getattr(channel, "id", None), getattr(channel, "parent_id", None))
        if gs is not None
        else None
    )
    if persona:
        extra.append(f"Server instructions: {persona}")
    if sv.memory is not None and session.guild_id is not None:
        from agent.memory.integration import format_recalled, recall_for_task, recalled_event

        retention = sv.retention_for(gs) if gs is not None else None
        failed: list[str] = []
        hits = await recall_for_task(
            sv.memory, str(session.guild_id), prompt, retention=retention, errors=failed
        )
        events += [MemoryUnreadable(why) for why in failed[:1]]
        ctx.services["memory_recalled"] = hits  # remember marks notes made after a planted one
        if hits:
            extra.append(format_recalled(hits))
            events.append(recalled_event(hits))
    tools = sv.tools.subset(enabled)
    if sv.mcp is not None and (late := sv.mcp.late_tools()):  # MCP_SERVERS_FILE's, down at start-up
        tools = with_late_tools(tools, late, gs)
    if gs is not None and gs.mcp and session.guild_id is not None:
        tools, left_out = await guild_tools(sv, session.guild_id, gs, tools)
        events += [McpLeftOut(name, why) for name, why in left_out.items()]
    a = sv.agent_settings
    agent = Agent(
        model,
        tools,
        reader=sv.reader_for(model, gs.reader if gs is not None else True),
        max_iterations=gs.max_steps if gs is not None else a.agent_max_steps,
        settings=ModelSettings(
            temperature=a.agent_temperature,
            max_tokens=a.agent_max_tokens,
            stream=a.agent_stream,
            reasoning_effort=a.reasoning_effort,
        ),
    )
    return Assembly(agent, ctx, "\n\n".join(extra) or None, events)
