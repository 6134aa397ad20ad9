"""The model's tools over long-term memory: ``recall(query)`` and ``remember(note)``.

The namespace comes only from the :class:`ToolContext` the runner fills (the guild the session runs
in), never from the model's arguments: there is no argument a model could set to read or write
another server's memory. The memory store itself is ``ctx.services["memory"]``; when the runner also
puts the server's :class:`~agent.memory.RetentionPolicy` in ``ctx.services["memory_retention"]``,
``remember`` applies it after saving.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agent.memory.integration import format_hit
from agent.memory.types import RetentionPolicy
from agent.tools.registry import Tool, ToolContext, ToolOutput, ToolRefused, tool

SERVICE = "memory"
RETENTION_SERVICE = "memory_retention"
RECALL_MIN_RELEVANCE = 0.20
"""Lower than the automatic recall's threshold: the model asked, so it sees weaker matches too."""


def _memory_and_namespace(ctx: ToolContext) -> tuple[Any, str]:
    memory = ctx.services.get(SERVICE)
    if memory is None:
        raise ToolRefused("long-term memory is not enabled for this bot; continue without it")
    if ctx.namespace is None or not str(ctx.namespace).strip():
        raise ToolRefused(
            "long-term memory belongs to a server, and this session has none (terminal mode or DM)"
        )
    return memory, str(ctx.namespace)


@tool(name="recall", timeout=30.0, max_attempts=1)
async def recall(
    ctx: ToolContext,
    query: Annotated[str, Field(min_length=1, max_length=1000)],
    k: Annotated[int, Field(ge=1, le=10)] = 5,
) -> ToolOutput:
    """Search this server's long-term memory (earlier research, facts and notes) by meaning.

    Args:
        query: What you want to remember, in plain words (a question or topic).
        k: How many memories to return, 1 to 10.
    """
    memory, namespace = _memory_and_namespace(ctx)
    hits = await memory.search(namespace, query, k, min_relevance=RECALL_MIN_RELEVANCE)
    if not hits:
        return ToolOutput("No memory on this server matches that query.")
    body = "\n\n".join(format_hit(h) for h in hits)
    sources = list(dict.fromkeys(s for h in hits for s in h.sources))
    return ToolOutput(f"{len(hits)} memories (cite as [memory <id>, <date>]):\n\n{body}", sources)


@tool(name="remember", timeout=30.0, max_attempts=1)
async def remember(ctx: ToolContext, note: Annotated[str, Field(min_length=1, max_length=4000)]) -> str:
    """Save a short note to this server's long-term memory, for future sessions.

    Use it for durable facts the server will want again (decisions, preferences, verified findings),
    not for chatter. Saving the same note twice keeps one copy.

    Args:
        note: The note, self-contained (it will be read later without this conversation).
    """
    memory, namespace = _memory_and_namespace(ctx)
    if not note.strip():
        raise ToolRefused("the note is empty")
    result = await memory.store(namespace, note, kind="note", author=ctx.user_id or "", thread=ctx.session_id)
    retention = ctx.services.get(RETENTION_SERVICE)
    if isinstance(retention, RetentionPolicy):
        await memory.apply_retention(namespace, retention)
    memory_id = result.ids[0] if result.ids else "?"
    if result.added == 0:
        return f"Already remembered as memory {memory_id}."
    return f"Remembered as memory {memory_id}."


MEMORY_TOOLS: list[Tool] = [recall, remember]
