"""/usage me and /usage server: what each person has used, what is left, and what the server spends.

Decisions: ``/usage`` is a group (``me``, ``server``) because Discord cannot run a command that has
subcommands on its own; ``server`` is visible to everyone but checks Manage Server in the handler, since
per-user spending is the admins' business. Replies are ephemeral embeds that mention nobody.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.formatting import defer_command, reply, server_usage_embed, usage_embed
from bot.store import MissingManageGuild, require_manage_guild

if TYPE_CHECKING:
    from bot.app import AgentBot

TOP_USERS = 10


def role_ids(interaction: discord.Interaction) -> tuple[int, ...]:
    """The caller's roles except @everyone (whose id is the server's), as the quota check sees them."""
    return tuple(r.id for r in getattr(interaction.user, "roles", ()) if r.id != interaction.guild_id)


class UsageCog(commands.Cog):
    usage = app_commands.Group(
        name="usage", description="agentbot usage and limits (only you see the answer).", guild_only=True
    )

    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        return await defer_command(interaction)

    @usage.command(name="me", description="Your usage, what is left, and when each limit resets.")
    async def me(self, interaction: discord.Interaction) -> None:
        if interaction.guild_id is None:
            await reply(interaction, "/usage works in a server, not in direct messages.")
            return
        report = await self.bot.services.quotas.usage(
            interaction.guild_id, interaction.user.id, role_ids(interaction)
        )
        who = getattr(interaction.user, "display_name", str(interaction.user))
        await reply(interaction, embed=usage_embed(report, who))

    @usage.command(name="server", description="This month's usage on this server (needs Manage Server).")
    async def server(self, interaction: discord.Interaction) -> None:
        if interaction.guild_id is None:
            await reply(interaction, "/usage works in a server, not in direct messages.")
            return
        try:
            require_manage_guild(interaction.permissions.value)
        except MissingManageGuild:
            await reply(
                interaction,
                "⛔ You need the Manage Server permission to see this server's usage. "
                "Use `/usage me` for your own.",
            )
            return
        usage = await self.bot.services.quotas.server_usage(interaction.guild_id, top=TOP_USERS)
        name = interaction.guild.name if interaction.guild else str(interaction.guild_id)
        await reply(interaction, embed=server_usage_embed(usage, name))


async def setup(bot: AgentBot) -> None:
    await bot.add_cog(UsageCog(bot))
