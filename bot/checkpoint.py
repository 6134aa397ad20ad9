"""A turn's checkpoint: what is stored after each finished step so a turn resumed after a crash goes on
from there, counting its earlier usage, cost and duration (so its footer and ``/usage`` agree)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.events import Cost, RunResult, Usage
from agent.loop import RunState
from agent.messages import Message
from bot.attach import without_images
from bot.store import SessionStore


def convert(msgs: list[Message], seen: list[tuple[Message, dict[str, Any]]]) -> int:
    """Bring ``seen`` (the messages already converted, kept by the caller between checkpoints) up to
    ``msgs``; returns how many of them it already held. Messages are only appended, never changed, and
    converting the whole history again at every step was 60% of a checkpoint's CPU at 200 sessions
    (``dataclasses.asdict``)."""
    n = 0
    while n < min(len(seen), len(msgs)) and seen[n][0] is msgs[n]:
        n += 1
    seen[n:] = [(m, m.to_dict()) for m in msgs[n:]]
    return n


def checkpoint_meta(state: RunState) -> dict[str, Any]:
    """A checkpoint without its messages, which the store keeps one row each (a step saves its own)."""
    u = state.usage
    return {
        "step": state.steps,
        # Usage's fields in order (a checkpoint of five, from before cache writes, still reads): without
        # the last three a turn resumed after a crash showed its estimated counts as exact.
        "usage": [
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.requests,
            u.reasoning_tokens,
            u.cache_write_tokens,
            u.cache_write_1h_tokens,
            u.estimated,
        ],
        "tokens": u.total_tokens,
        "cost_usd": state.cost.usd,
        "unknown_cost_models": list(state.cost.unknown_models),
        "models": list(state.models),
        "sources": list(state.sources),
        "duration": time.monotonic() - state.started,
        "at": time.time(),
    }


def whole_steps(state: RunState, boundary: int) -> int:
    """The steps a checkpoint's messages hold. A step's model call counts it (``state.steps``) before
    its tool calls end, and its messages join the conversation only then: paused by SIGTERM while a
    tool ran, a turn said "pauses after step 1" and "resuming from step 2", and ran step 1 again as
    step 2. ``boundary``: the steps done when the current one started; a final answer is in at once."""
    last = state.messages[-1].role if state.messages else None
    return boundary if state.steps > boundary and last != "assistant" else state.steps


def with_charges(cp: dict[str, Any], calls: list[Any]) -> dict[str, Any]:
    """``cp`` counting ``calls`` too: what the ledger charged after the checkpoint was written
    (:meth:`bot.store.usage_reports.UsageReports.charged_after`), so the resumed turn's footer says what
    ``/usage`` says. The calls are :class:`~bot.store.usage_reports.ChargedCall`."""
    if not calls:
        return cp
    u = list(cp.get("usage", ())) + [0] * (8 - len(cp.get("usage", ())))
    unknown, models = list(cp.get("unknown_cost_models", ())), list(cp.get("models", ()))
    cost = float(cp.get("cost_usd", 0.0))
    for c in calls:
        u[0] += c.prompt_tokens
        u[1] += c.completion_tokens
        u[2] += c.cached_tokens
        u[3] += 1
        u[4] += c.reasoning_tokens
        u[7] = bool(u[7]) or c.estimated
        cost += c.usd
        unknown += [m for m in c.unknown_models if m not in unknown]
        models += [c.model] if c.model not in models else []
    return cp | {
        "usage": u,
        "tokens": u[0] + u[1],
        "cost_usd": cost,
        "unknown_cost_models": unknown,
        "models": models,
    }


def message_dicts(msgs: list[Message], seen: list[tuple[Message, dict[str, Any]]]) -> list[dict[str, Any]]:
    """``msgs`` as stored dicts, reusing the checkpoints' conversions of the same message objects (the
    history a turn saves at its end was converted once more, message by message, otherwise)."""
    done = {id(m): d for m, d in seen}  # ``seen`` holds the messages, so their ids stay theirs
    return [done.get(id(m)) or m.to_dict() for m in msgs]


def state_from(task: str, cp: dict[str, Any] | None) -> RunState:
    """A run state carrying a checkpoint's usage, cost, models, sources and duration (or a fresh one)."""
    st = RunState(task=task)
    if cp:
        st.usage = Usage(*cp.get("usage", ()))
        st.cost = Cost(float(cp.get("cost_usd", 0.0)), tuple(cp.get("unknown_cost_models", ())))
        st.models = list(cp.get("models", ()))
        st.sources = list(cp.get("sources", ()))
        st.started -= float(cp.get("duration", 0.0))
    return st


def closing_writes(
    sessions: SessionStore,
    session_id: str,
    turn_id: int | None,
    result: RunResult | None,
    status: str,
    seen: list[tuple[Message, dict[str, Any]]],
) -> Callable[[], Awaitable[None]]:
    """The writes that close a turn (its whole steps, its summary, the session's status), as one call: one
    transaction (:meth:`SessionStore.close_turn`), so after a database outage it is called again and what
    was written is never written twice."""
    steps: list[Callable[[], Awaitable[Any]]] = []
    dicts: list[dict[str, Any]] = []
    if result is not None and result.messages and status != "failed":
        # A failed turn adds nothing: Retry runs the same request again on a clean history.
        msgs = list(result.messages)
        if status == "stopped":
            msgs.append(Message("assistant", result.text))
        dicts = message_dicts(without_images(msgs), seen)
    turn: tuple[Any, dict[str, Any]] | None = None
    if turn_id is not None:
        summary: dict[str, Any] = {}
        if result is not None:
            summary = {
                "status": result.status,
                "steps": result.steps,
                "tokens": result.usage.total_tokens,
                "cost_usd": result.cost.usd,
                "cost_known": result.cost.known,
                "models": result.models,
                "text": result.text[:4000],
            }
        turn = (result.status if result is not None else "error", summary)
    session_status = "idle" if status in ("done", "stopped") else "failed"
    steps.append(
        lambda: sessions.close_turn(session_id, session_status, messages=dicts, turn_id=turn_id, turn=turn)
    )

    async def go_on() -> None:
        while steps:
            await steps[0]()
            del steps[0]

    return go_on
