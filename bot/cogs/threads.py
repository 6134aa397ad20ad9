"""Follow-ups in agent threads, and /stop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.control import roles_of
from bot.discord_sink import NO_MENTIONS
from bot.runner import TurnRequest

if TYPE_CHECKING:
    from bot.app import AgentBot


class ThreadsCog(commands.Cog):
    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        bot = self.bot
        if message.author.bot or not isinstance(message.channel, discord.Thread):
            return
        session = await bot.services.sessions.by_thread(message.channel.id)
        if session is None:
            return
        text = message.content.strip()
        if bot.user is not None:
            text = text.replace(f"<@{bot.user.id}>", "").replace(f"<@!{bot.user.id}>", "").strip()
        if not text and message.attachments:
            text = "(attachments: " + ", ".join(a.filename for a in message.attachments) + ")"
        if not text:
            return
        member = message.author
        roles = roles_of(member, message.guild.id if message.guild else None)
        state = await bot.runner.submit(
            TurnRequest(session, text, member.id, member.display_name, roles, message.channel)
        )
        if state == "queued":
            try:
                await message.add_reaction("⏳")
            except discord.HTTPException:
                await message.reply(
                    "Queued: I'll answer this after the current step finishes.", allowed_mentions=NO_MENTIONS
                )

    @app_commands.command(name="stop", description="Stop the agent running in this thread.")
    @app_commands.guild_only()
    async def stop(self, interaction: discord.Interaction) -> None:
        channel = interaction.channel
        session = (
            await self.bot.services.sessions.by_thread(channel.id)
            if isinstance(channel, discord.Thread)
            else None
        )
        if session is None:
            await interaction.response.send_message("Use /stop inside an agent thread.", ephemeral=True)
            return
        await self.bot.control.stop(interaction, session.id)


async def setup(bot: AgentBot) -> None:
    await bot.add_cog(ThreadsCog(bot))
