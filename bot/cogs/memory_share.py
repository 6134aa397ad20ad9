"""/memory export, import and publish (memory leaving or joining a server), and what every /memory
command shares: the cog-level check, the store and the ephemeral reply.

A base of :class:`bot.cogs.memory.MemoryCog`, whose docstring holds the decisions: discord.py collects
app commands along the class's MRO, so these join the one ``/memory`` group.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import discord
import structlog
from discord import app_commands

from agent.memory.types import MemoryStoreError
from bot.discord_sink import NO_MENTIONS
from bot.formatting import Refusal, defer_command
from bot.memory_import import import_attachment, publish_note
from bot.memory_text import human_bytes, is_manager, mask_secrets, unavailable_text
from bot.run_policy import is_private

if TYPE_CHECKING:
    from bot.app import AgentBot
    from bot.services import Services

log = structlog.get_logger().bind(logger="bot.cogs.memory")


@contextlib.contextmanager
def failing(interaction: discord.Interaction, what: str) -> Iterator[None]:
    """A store failure ends the command saying what could not be done and why, secrets masked."""
    try:
        yield
    except MemoryStoreError as e:
        log.warning("memory_command_failed", what=what, guild_id=interaction.guild_id, error=str(e))
        raise Refusal(f"⚠️ Could not {what}: {mask_secrets(str(e))}") from e


class MemoryCommands:
    bot: AgentBot

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
        return True

    def _target(self, interaction: discord.Interaction) -> tuple[Any, str]:
        """The memory and this server's namespace (``interaction_check`` made sure both exist)."""
        return self.sv.memory, str(interaction.guild_id)

    async def _say(self, interaction: discord.Interaction, text: str, **kwargs: Any) -> None:
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS, **kwargs)

    @app_commands.command(name="export", description="Download this server's memories as a JSONL file.")
    async def export(self, interaction: discord.Interaction) -> None:
        memory, ns = self._target(interaction)
        buf = io.BytesIO()
        rows = 0
        with failing(interaction, "export memory"):
            async for row in memory.export(ns):
                buf.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
                rows += 1
        if rows == 0:
            raise Refusal("🧠 This server has no memories to export.")
        data = buf.getvalue()
        name = f"memory-{ns}-{dt.datetime.now(tz=dt.UTC):%Y%m%d}.jsonl"
        limit = max(1024, interaction.filesize_limit - 64 * 1024)  # room for the multipart envelope
        note = ""
        if len(data) > limit:  # JSONL of text compresses well; try before giving up
            data = await asyncio.to_thread(gzip.compress, data, 6)
            name += ".gz"
            note = " (gzip-compressed: it was over this server's upload limit)"
        if len(data) > limit:
            raise Refusal(
                f"🧠 The export ({rows} items) is {human_bytes(len(data))} even compressed, over this server's "
                f"upload limit of {human_bytes(interaction.filesize_limit)}. Forget or clear old memories, "
                "or ask an operator to export from the data directory."
            )
        await self._say(
            interaction,
            f"🧠 {rows} item{'s' if rows != 1 else ''} of this server's memory, one JSON object per line{note}.",
            file=discord.File(io.BytesIO(data), filename=name),
        )

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
        await self._say(interaction, text)

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
            if channel is not None and is_private(channel)
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
        await self._say(interaction, text)
