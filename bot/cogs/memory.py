"""/memory: search, forget, list, stats, clear, export, import and publish a server's long-term memory
(README "Memory commands").

Decisions:

* **Namespace.** Always ``interaction.guild_id``; no option names a server, so nobody reaches another
  server's memory from here.
* **Who may do what.** Reading is everyone's (search already shows every row). Forgetting needs the
  memory's author or Manage Server (memories without an author need Manage Server); clearing and
  importing need Manage Server. Both are checked here and again on the button, not only by Discord's
  command permissions, which a server can override.
* **Stateless confirmations** (:func:`bot.views.confirm_view`): a button's custom id carries the
  action, when it expires (``confirm_ttl``, 10 minutes) and the memory ids; the click re-reads and
  re-checks everything, so it works across a restart.
* **Memory off or broken.** Every command says so, with the start-up reason, secrets masked.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import discord
import structlog
from discord import app_commands
from discord.ext import commands

from agent.memory.types import Kind, MemoryHit, MemoryRecord, MemoryStats, MemoryStoreError
from agent.tools.memory_tools import private_namespace
from bot.discord_sink import NO_MENTIONS
from bot.formatting import Refusal, defer_command, is_manager, reply
from bot.memory_import import export_file, import_attachment, publish_note
from bot.memory_text import (
    ORIGIN_LABELS,
    day,
    describe,
    excerpt,
    failing,
    fit,
    group_parents,
    human_bytes,
    mask_secrets,
    may_forget,
    parse_memory_id,
    unavailable_text,
)
from bot.run_policy import memory_stays_private
from bot.views import confirm_view, confirmation_open

if TYPE_CHECKING:
    from bot.app import AgentBot
    from bot.services import Services

log = structlog.get_logger("bot.cogs.memory")

CONFIRM_TTL = 600.0
"""Seconds a confirmation button stays valid."""
MAX_FORGET = 4
"""Memories one confirmation may forget: four 16-digit ids fit Discord's 100-character custom id."""
FORGET_MIN_RELEVANCE = 0.4
"""Forget by query only offers memories at least this close (cosine), like ``forget_by_query``."""
SEARCH_MIN_RELEVANCE = 0.15
"""Search hides matches below this: with MiniLM they share little more than the language."""
ORIGIN_CHOICES = [app_commands.Choice(name=f"{o}: {label}", value=o) for o, label in ORIGIN_LABELS.items()]
BLANK_QUERY = "Give a `query` with words in it (it held only spaces)."
CLEAR_REFUSED = "🔒 Only members with **Manage Server** can clear this server's memory."
LIST_SCAN = 20_000
"""Rows /memory list reads at most (newest first needs them all; retention keeps servers far below)."""


@app_commands.guild_only()
class MemoryCog(commands.GroupCog, group_name="memory", group_description="This server's long-term memory"):
    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot
        self.confirm_ttl = CONFIRM_TTL
        """Seconds a confirmation button stays valid (a setting for tests and operators)."""
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.buttons["mem"] = self.on_button

    @property
    def sv(self) -> Services:
        return self.bot.services

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Every /memory command: deferred (ephemeral) before any store work, refused with the reason
        (shown by ``on_app_command_error``) while memory is off or failed to start."""
        await defer_command(interaction)
        if interaction.guild_id is None:  # guild_only makes this unreachable; never fall back to anything
            raise app_commands.CheckFailure("Memory belongs to a server: use this command in one.")
        if self.sv.memory is None:
            raise app_commands.CheckFailure(unavailable_text(self.sv))
        # Retention holds whenever memory is shown, not only after the next write: a new max_age_days
        # or max_items, or days passing on a quiet server, left expired memories listed and counted.
        # A store failing here is left to the command's own step, which names what it could not do.
        gs = await self.sv.guild_settings.get(interaction.guild_id)
        with contextlib.suppress(MemoryStoreError):
            await self.sv.memory.apply_retention(str(interaction.guild_id), self.sv.retention_for(gs))
        return True

    def _target(self, interaction: discord.Interaction) -> tuple[Any, str]:
        """The memory and this server's namespace (``interaction_check`` made sure both exist)."""
        return self.sv.memory, str(interaction.guild_id)

    async def _private_scope(self, interaction: discord.Interaction) -> str | None:
        """Inside a private research thread, the scope of its notes; None anywhere else. Always derived
        from the channel the command or button is used in, never from an option or a custom id."""
        channel = interaction.channel
        if channel is None or not memory_stays_private(channel):
            return None
        session = await self.sv.sessions.by_thread(channel.id)
        return private_namespace(str(interaction.guild_id), session.id) if session is not None else None

    @app_commands.command(name="export", description="Download this server's memories as a JSONL file.")
    async def export(self, interaction: discord.Interaction) -> None:
        memory, ns = self._target(interaction)
        with failing(interaction, "export memory"):
            text, file = await export_file(memory, ns, interaction.filesize_limit)
        if file is None:
            raise Refusal(text)
        await reply(interaction, text, file=file)

    @app_commands.command(
        name="import", description="Bring in memories from a /memory export file (Manage Server)."
    )
    @app_commands.describe(file="A .jsonl or .jsonl.gz file made by /memory export, from any server")
    async def import_(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        memory, ns = self._target(interaction)
        if not is_manager(interaction):
            raise Refusal("🔒 Only members with **Manage Server** can import memories.")
        gs = await self.sv.guild_settings.get(interaction.guild_id)
        with failing(interaction, "import memories (nothing was kept)"):  # the store removed what it added
            text = await import_attachment(memory, ns, file, self.sv.bot_settings, self.sv.retention_for(gs))
        await reply(interaction, text)

    @app_commands.command(
        name="publish", description="Share a note the agent kept in this private thread with the server."
    )
    @app_commands.describe(id="The private note's id (leave empty to list this thread's private notes)")
    async def publish(
        self, interaction: discord.Interaction, id: app_commands.Range[str, 1, 100] | None = None
    ) -> None:
        memory, ns = self._target(interaction)
        channel = interaction.channel
        session = (
            await self.sv.sessions.by_thread(channel.id)
            if channel is not None and memory_stays_private(channel)
            else None
        )
        if session is None:
            raise Refusal(
                "🔒 Run `/memory publish` inside the private research thread whose note you want to share."
            )
        gs = await self.sv.guild_settings.get(interaction.guild_id)
        with failing(interaction, "publish the note"):
            text = await publish_note(
                memory, ns, session.id, id, interaction.user.id, self.sv.retention_for(gs)
            )
        await reply(interaction, text)

    @app_commands.command(name="search", description="Search this server's memory by meaning.")
    @app_commands.describe(query="What to look for", kind="Only this kind of memory", count="How many (1-10)")
    async def search(
        self,
        interaction: discord.Interaction,
        query: app_commands.Range[str, 1, 300],
        kind: Kind | None = None,
        count: app_commands.Range[int, 1, 10] = 5,
    ) -> None:
        memory, ns = self._target(interaction)
        if not query.strip():  # Discord trims ASCII spaces, not U+3000; the store refuses a blank query
            raise Refusal(BLANK_QUERY)
        with failing(interaction, "search memory"):
            hits: list[MemoryHit] = await memory.search(
                ns,
                query,
                min(100, count * 3),  # chunks of one memory collapse into one line
                min_relevance=SEARCH_MIN_RELEVANCE,
                kinds=[kind] if kind else None,
            )
        best: dict[str, MemoryHit] = {}
        for h in hits:
            best.setdefault(h.parent or h.id, h)
        shown = list(best.values())[:count]
        q = excerpt(query, 100)
        if not shown:
            raise Refusal(f"🧠 Nothing in this server's memory matches “{q}”.")
        lines = [f"🧠 Best matches in this server's memory for “{q}”:"]
        for h in shown:
            lines += describe(h, relevance=h.relevance)
        tail = "\n-# Forget one with `/memory forget id:<id>`."
        await reply(interaction, fit(lines, tail=tail))

    @app_commands.command(name="forget", description="Forget memories, by id or by what they say.")
    @app_commands.describe(
        id="A memory id, as /memory search shows it",
        query="Forget the memories that best match this (up to 4; you confirm first)",
    )
    async def forget(
        self,
        interaction: discord.Interaction,
        id: app_commands.Range[str, 1, 100] | None = None,  # the option's name in Discord
        query: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        memory, ns = self._target(interaction)
        if (id is None) == (query is None):
            raise Refusal("Give either `id` (from /memory search) or `query`, not both or neither.")
        if query is not None and not query.strip():
            raise Refusal(BLANK_QUERY)
        manager = is_manager(interaction)
        user_id = interaction.user.id
        if id is not None:
            parent = parse_memory_id(id)
            if parent is None:
                raise Refusal(
                    f"“{excerpt(id, 40)}” is not a memory id: ids are 16 hex digits, as /memory search shows them."
                )
            scope = "f"
            with failing(interaction, "read memory"):
                groups = group_parents(await memory.get(ns, [parent]))  # a chunk id counts as its memory
                if not groups and (private := await self._private_scope(interaction)):
                    groups, scope = group_parents(await memory.get(private, [parent])), "p"  # its own note
            if not groups:
                raise Refusal(f"🧠 This server has no memory `{parent}`.")
        else:
            assert query is not None
            scope = "f"
            with failing(interaction, "read memory"):
                hits = await memory.search(ns, query, 20, min_relevance=FORGET_MIN_RELEVANCE)
                parents = list(dict.fromkeys(h.parent or h.id for h in hits))[:MAX_FORGET]
                found = group_parents(await memory.get(ns, parents)) if parents else {}
            groups = {p: found[p] for p in parents if p in found}  # best match first
            if not groups:
                raise Refusal(
                    f"🧠 Nothing in this server's memory matches “{excerpt(query, 100)}” closely enough. "
                    "Find it with /memory search, then forget it by id."
                )
        allowed = [p for p, rows in groups.items() if may_forget(rows[0].author, user_id, manager)]
        refused = [p for p in groups if p not in allowed]
        lines: list[str] = []
        if allowed:
            lines.append(
                f"🧠 Forget {'this memory' if len(allowed) == 1 else f'these {len(allowed)} memories'}? "
                "This cannot be undone."
            )
            for p in allowed:
                lines += describe(groups[p][0])
        if refused:
            lines.append(
                f"🔒 Not yours to forget ({len(refused)}): only its author or someone with Manage Server can "
                "forget " + ", ".join(f"`{p}`" for p in refused) + "."
            )
        if not allowed:
            raise Refusal(fit(lines))
        label = f"Forget {len(allowed)} memor{'y' if len(allowed) == 1 else 'ies'}"
        await reply(
            interaction,
            fit(lines),
            view=confirm_view("mem", label, self.confirm_ttl, scope, "".join(allowed)),
        )

    @app_commands.command(name="list", description="The newest memories, with who stored them and how.")
    @app_commands.describe(origin="Only memories that came this way", count="How many (1-10)")
    @app_commands.choices(origin=ORIGIN_CHOICES)
    async def list_(
        self,
        interaction: discord.Interaction,
        origin: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, 10] = 5,
    ) -> None:
        memory, ns = self._target(interaction)
        rows: list[MemoryRecord] = []
        with failing(interaction, "read memory"):
            async for rec in memory.records(ns):
                if len(rows) >= LIST_SCAN:
                    break
                if rec.chunk == 0 and (origin is None or rec.origin == origin.value):
                    rows.append(rec)
        rows.sort(key=lambda r: -r.created)
        what = f" stored as {origin.value}" if origin else ""
        if not rows:
            raise Refusal(f"🧠 This server has no memories{what}.")
        lines = [f"🧠 Newest memories{what} ({len(rows)} in all):"]
        for rec in rows[:count]:
            lines += describe(rec)
        await reply(interaction, fit(lines, tail="\n-# Forget one with `/memory forget id:<id>`."))

    @app_commands.command(name="stats", description="How much this server remembers, and how it is kept.")
    async def stats(self, interaction: discord.Interaction) -> None:
        memory, ns = self._target(interaction)
        with failing(interaction, "read memory stats"):
            st: MemoryStats = await memory.stats(ns)
        gs = await self.sv.guild_settings.get(interaction.guild_id)
        kinds = " · ".join(f"{k} {n}" for k, n in sorted(st.by_kind.items())) or "—"
        limit = f"at most {gs.memory_max_items} items" if gs.memory_max_items else "no item limit"
        age = f"at most {gs.memory_max_age_days} days old" if gs.memory_max_age_days else "no age limit"
        where = "its own collection" if st.layout == "dedicated" else "a shared collection"
        lines = [
            "🧠 **This server's memory**",
            f"Memories: **{st.memories}**"
            + (f" ({st.items} items: long memories are kept in chunks)" if st.items != st.memories else "")
            + f" · about {human_bytes(st.bytes_estimate)}",
            f"Oldest: {day(st.oldest)} · newest: {day(st.newest)}",
            f"By kind (items): {kinds}",
            f"Layout: {where} (`{st.collection}`) · embedding `{memory.embedding_id}`",
            f"Retention: {limit}, {age}, oldest first · finished research is "
            f"{'stored' if gs.memory_auto_store else 'not stored'} automatically",
        ]
        await reply(interaction, fit(lines))

    @app_commands.command(name="clear", description="Delete every memory of this server (Manage Server).")
    async def clear(self, interaction: discord.Interaction) -> None:
        memory, ns = self._target(interaction)
        if not is_manager(interaction):
            raise Refusal(CLEAR_REFUSED)
        with failing(interaction, "read memory stats"):
            st = await memory.stats(ns)
        if st.items == 0:
            raise Refusal("🧠 This server's memory is already empty.")
        await reply(
            interaction,
            f"🧠 Delete **all {st.memories} memories** of this server ({st.items} items, oldest from "
            f"{day(st.oldest)})? This cannot be undone; `/memory export` first keeps a copy.",
            view=confirm_view("mem", "Delete every memory of this server", self.confirm_ttl, "c"),
        )

    async def on_button(
        self, interaction: discord.Interaction, expires: str, action: str = "", ids: str = ""
    ) -> None:
        """A confirmation: forget (``f``, with up to four ids; ``p`` for the notes of the private thread it
        is clicked in) or clear (``c``)."""

        async def done(text: str) -> None:
            await interaction.edit_original_response(content=text, view=None, allowed_mentions=NO_MENTIONS)

        command = "/memory clear" if action == "c" else "/memory forget"
        if not await confirmation_open(interaction, expires, command):
            return
        await interaction.response.defer()  # an update of the prompt message itself
        memory = self.sv.memory
        if memory is None:
            await done(unavailable_text(self.sv))
            return
        if interaction.guild_id is None:
            await done("Memory belongs to a server.")
            return
        ns = str(interaction.guild_id)
        manager = is_manager(interaction)
        try:
            if action == "c":
                if not manager:
                    await done(CLEAR_REFUSED)
                    return
                removed = await memory.clear(ns)
                log.info("memory_cleared", guild_id=ns, user_id=interaction.user.id, rows=removed)
                await done(
                    f"🧠 Cleared this server's memory: {removed} item{'s' if removed != 1 else ''} deleted."
                )
                return
            if action == "p":
                private = await self._private_scope(interaction)
                if private is None:
                    await done("🔒 Forget a private note inside its private thread.")
                    return
                ns = private
            wanted = [ids[i : i + 16] for i in range(0, len(ids), 16)]
            groups = group_parents(await memory.get(ns, wanted))
            mine = [
                p for p, rows in groups.items() if may_forget(rows[0].author, interaction.user.id, manager)
            ]
            removed_rows = await memory.forget(ns, mine) if mine else []
        except MemoryStoreError as e:
            log.warning("memory_button_failed", guild_id=ns, error=str(e))
            await done(f"⚠️ Could not change memory: {mask_secrets(str(e))}")
            return
        log.info(
            "memory_forgotten", guild_id=ns, user_id=interaction.user.id, ids=mine, rows=len(removed_rows)
        )
        gone = len(wanted) - len(groups)
        parts = [
            f"🧠 Forgot {len(mine)} memor{'y' if len(mine) == 1 else 'ies'}"
            + (": " + ", ".join(f"`{p}`" for p in mine) if mine else "")
            + "."
        ]
        if gone:
            parts.append(f"{gone} had already been forgotten.")
        if len(mine) < len(groups):
            parts.append(f"{len(groups) - len(mine)} are not yours to forget (author or Manage Server only).")
        await done(" ".join(parts))


async def setup(bot: AgentBot) -> None:
    await bot.add_cog(MemoryCog(bot))
