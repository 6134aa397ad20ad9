"""Per-turn rules the runner hands to tools: memory writes (privacy, provenance, a cap) and the
server's fetch_url domain lists; and whether a finished run's answer goes into the server's memory.

Kept out of :mod:`bot.runner` so the runner only calls :func:`turn_services` once per turn. Both
rules are made fresh for every turn from the server's settings at that moment, so a ``/config``
change applies to the next turn without a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
import structlog

from agent.logs import redact
from agent.memory.types import MemoryStoreError, unverified
from agent.messages import Message
from agent.tools import domains
from agent.tools.memory_tools import RUN_SERVICE, MemoryRunPolicy, private_namespace

if TYPE_CHECKING:
    from agent.events import RunResult
    from agent.loop import RunState
    from bot.services import Services
    from bot.turn_request import TurnRequest

log = structlog.get_logger("bot.run_policy")

_OWN_WRITES = frozenset({"remember"})
"""Tool results that carry nothing from outside. recall is not one: it may return a note a page planted."""


def is_private(channel: Any) -> bool:
    """A private thread: what is said there stays there (auto-store and remember both)."""
    return getattr(channel, "type", None) == discord.ChannelType.private_thread


def memory_stays_private(channel: Any) -> bool:
    """Whether what is said here stays in the session's own memory scope: a private thread, or a
    thread (or channel) the server's @everyone cannot view. A public thread in a hidden #staff channel
    was stored server-wide, where every member's /memory search, export and recall read it."""
    if is_private(channel):
        return True
    guild = getattr(channel, "guild", None)
    if guild is None:
        return False
    try:
        return not channel.permissions_for(guild.default_role).view_channel
    except (discord.ClientException, AttributeError):  # the parent channel is not cached: stay private
        return True


def can_attach(channel: Any) -> bool:
    """Whether the bot may attach files where the turn writes (a refused upload loses its message)."""
    guild = getattr(channel, "guild", None)
    if guild is None:
        return True  # a DM
    try:
        return channel.permissions_for(guild.me).attach_files
    except (discord.ClientException, AttributeError):  # the parent channel is not cached: try it
        return True


POST_REFUSED = "a missing permission (Send Messages in Threads)"


def can_post(channel: Any) -> bool:
    """Whether the bot may still post where the turn writes, as the gateway last told it (an admin
    may take it away mid-run: the run then stops at its next step, bot.turn)."""
    if not isinstance(channel, discord.Thread):
        return True  # a DM, or a channel the turn was started in: a refused send says so (bot.streamer)
    try:
        return channel.permissions_for(channel.guild.me).send_messages_in_threads
    except (discord.ClientException, AttributeError):  # the parent channel is not cached: try it
        return True


def tool_output_seen(messages: Sequence[Message]) -> bool:
    return any(m.role == "tool" and m.name not in _OWN_WRITES for m in messages)


def turn_services(
    sv: Services,
    gs: Any,
    req: TurnRequest,
    state: RunState,
    history: Sequence[Message],
    recalled: Sequence[Any] = (),
) -> dict[str, Any]:
    """What to add to the turn's ``ToolContext.services``. ``recalled``: the memories the automatic
    recall put in the prompt (a note a page planted must not come back out as a plain ``agent`` one)."""
    s = req.session
    out: dict[str, Any] = {}
    if gs is not None and (gs.fetch_allow or gs.fetch_block):
        out[domains.SERVICE] = domains.DomainPolicy(tuple(gs.fetch_allow), tuple(gs.fetch_block))
    if sv.memory is not None and s.guild_id is not None:
        out[RUN_SERVICE] = MemoryRunPolicy(
            private_namespace=private_namespace(str(s.guild_id), s.id)
            if memory_stays_private(req.channel)
            else None,
            max_writes=sv.bot_settings.memory_remember_per_run,
            read_sources=lambda: state.sources,
            read_untrusted=lambda: (
                tool_output_seen(history)
                or tool_output_seen(state.messages)
                or any(unverified(getattr(h, "origin", ""), getattr(h, "sources", ())) for h in recalled)
            ),
            thread=str(s.thread_id or ""),
        )
        if gs is not None:
            out["memory_retention"] = sv.retention_for(gs)
    return out


def read_outside(result: RunResult, services: dict[str, Any] | None) -> bool:
    """Whether the run read anything from outside (pages, tool output, an unverified memory), as the
    turn's tool services' memory policy saw it: its answer is then stored as unverified."""
    policy = (services or {}).get(RUN_SERVICE)
    return tool_output_seen(result.messages) or (
        isinstance(policy, MemoryRunPolicy) and policy.read_untrusted()
    )


async def remember_answer(
    sv: Services,
    req: TurnRequest,
    result: RunResult,
    services: dict[str, Any] | None = None,
    from_web: bool | None = None,
) -> None:
    """A completed run's answer into the server's memory, when the server stores answers and the
    channel's research may be seen by the whole server. A failure is logged: the answer is already shown.
    ``services``: the turn's tool services, for :func:`read_outside`; ``from_web``: what it said when
    the answer was saved (a restart that delivers the saved answer has no services)."""
    s = req.session
    if sv.memory is None or s.guild_id is None or memory_stays_private(req.channel):
        return  # a private (or hidden) thread's research must not become searchable by the whole server
    if req.supersedes is not None:
        await _forget_superseded(sv, req)
    gs = await sv.guild_settings.get(s.guild_id)
    if not gs.memory_auto_store:
        return
    from agent.memory.integration import store_research

    if from_web is None:
        from_web = read_outside(result, services)
    try:
        await store_research(
            sv.memory,
            str(s.guild_id),
            req.prompt,
            result.text,
            result.sources,
            author=str(req.requester_id),
            thread=str(s.thread_id or ""),
            session=s.id,
            retention=sv.retention_for(gs),
            from_web=from_web,
        )
    except MemoryStoreError as e:  # an outage (the Chroma server went away), not a bug: one line, as recall's
        log.warning("memory_store_failed", session_id=s.id, error=redact(str(e)))
    except Exception:
        log.warning("memory_store_failed", session_id=s.id, exc_info=True)


async def _forget_superseded(sv: Services, req: TurnRequest) -> None:
    """A re-run with an edit replaces its turn in the server's memory too: the replaced answer, stored
    when it finished, answered the text with the typo and was recalled by later runs as if current.
    Only that session's memory of that turn's task and answer goes (found by its content id; an answer
    past the 4,000 characters a turn's summary keeps is not found and stays)."""
    from agent.memory.records import record_id

    s, ns, memory = req.session, str(req.session.guild_id), sv.memory
    if memory is None:
        return
    old = next((t for t in await sv.sessions.turns(s.id) if t.id == req.supersedes), None)
    text = str((old.result or {}).get("text") or "") if old is not None else ""
    if old is None or not text.strip():
        return
    try:
        found = await memory.get(ns, [record_id(ns, text)])
        mine = {r.parent or r.id for r in found if r.session == s.id and r.task == old.prompt}
        if mine:
            await memory.forget(ns, list(mine))
    except Exception:
        log.warning("memory_forget_superseded_failed", session_id=s.id, exc_info=True)
