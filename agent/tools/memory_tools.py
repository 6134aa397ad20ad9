"""The model's tools over long-term memory: ``recall(query)`` and ``remember(note)``.

The namespace comes only from the :class:`ToolContext` the runner fills (the guild the session runs
in), never from the model's arguments: there is no argument a model could set to read or write
another server's memory. What the model writes is bounded by a :class:`MemoryRunPolicy`:

* **Private sessions** (``private_namespace`` set): ``remember`` writes only there, a scope of the
  session's own that server-wide search, export and recall never read. The requester shares a note
  with the server explicitly (``/memory publish`` in the bot). ``recall`` reads both.
* **Provenance**: every note records who asked (the turn's requester), which session, and its origin:
  ``agent-web`` with the URLs when the run had read web or tool content before (a prompt-injected
  page is the way a stranger reaches ``remember``), else ``agent``. The tool's answer, shown in the
  thread as the step's result, says so.
* **At most ``max_writes`` notes a run**: a page that talks the model into saving cannot flood memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from agent.memory.integration import format_hit
from agent.memory.records import blank
from agent.memory.types import RetentionPolicy
from agent.tools.registry import Tool, ToolContext, ToolOutput, ToolRefused, tool

SERVICE = "memory"
RETENTION_SERVICE = "memory_retention"
RUN_SERVICE = "memory_run"
RECALL_MIN_RELEVANCE = 0.20
"""Lower than the automatic recall's threshold: the model asked, so it sees weaker matches too."""
DEFAULT_MAX_WRITES = 3


@dataclass(slots=True)
class MemoryRunPolicy:
    """One run's rules for ``remember`` (see the module docstring). Made by the runner per turn."""

    private_namespace: str | None = None
    """Set in private sessions: notes go here, never to the server's memory."""
    max_writes: int = DEFAULT_MAX_WRITES
    read_sources: Callable[[], Sequence[str]] = lambda: ()
    """URLs the run has read so far (the loop's sources)."""
    read_untrusted: Callable[[], bool] = lambda: False
    """Whether the conversation (history included) holds any tool result besides remember's own."""
    thread: str = ""
    """The Discord thread the run writes in (provenance)."""
    writes: int = 0
    stored: list[str] = field(default_factory=list)


def private_namespace(guild: str, session_id: str) -> str:
    """The scope of one private session's notes (never a guild id, so never a server's memory)."""
    return f"{guild}.private.{session_id}"


def _memory_and_namespace(ctx: ToolContext) -> tuple[Any, str]:
    memory = ctx.services.get(SERVICE)
    if memory is None:
        raise ToolRefused("long-term memory is not enabled for this bot; continue without it")
    if ctx.namespace is None or not str(ctx.namespace).strip():
        raise ToolRefused(
            "long-term memory belongs to a server, and this session has none (terminal mode or DM)"
        )
    return memory, str(ctx.namespace)


def _policy(ctx: ToolContext) -> MemoryRunPolicy:
    policy = ctx.services.get(RUN_SERVICE)
    if not isinstance(policy, MemoryRunPolicy):
        policy = MemoryRunPolicy()
        ctx.services[RUN_SERVICE] = policy  # one per context, so the per-run cap still holds
    return policy


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
    # What retention no longer keeps is never recalled, even where nothing was written since it expired
    # (a private thread's notes are evicted only when that thread saves one).
    retention = ctx.services.get(RETENTION_SERVICE)
    kept = retention if isinstance(retention, RetentionPolicy) else None
    hits = await memory.search(namespace, query, k, min_relevance=RECALL_MIN_RELEVANCE, retention=kept)
    private = _policy(ctx).private_namespace
    if private:
        hits += await memory.search(private, query, k, min_relevance=RECALL_MIN_RELEVANCE, retention=kept)
        hits = sorted(hits, key=lambda h: -h.relevance)[:k]
    if not hits:
        return ToolOutput("No memory on this server matches that query.")
    body = "\n\n".join(format_hit(h) for h in hits)
    sources = list(dict.fromkeys(s for h in hits for s in h.sources))
    return ToolOutput(f"{len(hits)} memories (cite as [memory <id>, <date>]):\n\n{body}", sources)


@tool(name="remember", timeout=30.0, max_attempts=1)
async def remember(ctx: ToolContext, note: Annotated[str, Field(min_length=1, max_length=4000)]) -> str:
    """Save a short note to this server's long-term memory, for future sessions.

    Use it for durable facts the server will want again (decisions, preferences, verified findings),
    not for chatter. Saving the same note twice keeps one copy. A run may save only a few notes.

    Args:
        note: The note, self-contained (it will be read later without this conversation).
    """
    memory, namespace = _memory_and_namespace(ctx)
    if blank(note):  # spaces, NUL or zero-width characters only
        raise ToolRefused("the note is empty")
    policy = _policy(ctx)
    if policy.max_writes <= 0:
        raise ToolRefused("saving notes is turned off on this bot; continue without it")
    if policy.writes >= policy.max_writes:
        raise ToolRefused(
            f"this run already saved {policy.writes} notes, the most one run may save; "
            "do not try again, finish the task"
        )
    urls = list(dict.fromkeys(policy.read_sources()))
    origin = "agent-web" if urls or policy.read_untrusted() else "agent"
    target = policy.private_namespace or namespace
    policy.writes += 1  # taken before the await: one step's concurrent calls cannot pass the cap together
    try:
        result = await memory.store(
            target,
            note,
            kind="note",
            author=ctx.user_id or "",
            thread=policy.thread,
            session=ctx.session_id,
            # a private note after outside content is agent-web too: publishing must not launder it
            origin="private" if policy.private_namespace and origin == "agent" else origin,
            sources=urls[:20] if origin == "agent-web" else (),
        )
    except BaseException:
        policy.writes -= 1
        raise
    memory_id = result.ids[0] if result.ids else "?"
    if result.added == 0:
        policy.writes -= 1
        return f"Already remembered as memory {memory_id}."
    policy.stored.append(memory_id)
    retention = ctx.services.get(RETENTION_SERVICE)
    if isinstance(retention, RetentionPolicy):
        await memory.apply_retention(target, retention)
    marked = ""
    if origin == "agent-web":
        marked = (
            f", marked as written after reading {len(urls)} web source(s)"
            if urls
            else ", marked as written after tool output"
        )
    if policy.private_namespace:
        return (
            f"🧠 Remembered privately as memory {memory_id}{marked}: only this private thread can recall it. "
            f"Its requester can share it with the server with /memory publish id:{memory_id}."
        )
    return f"🧠 Remembered as memory {memory_id} for this server (by the agent{marked})."


MEMORY_TOOLS: list[Tool] = [recall, remember]
