"""/research and mentions: open a thread, post the header, start the session."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_sink import NO_MENTIONS

if TYPE_CHECKING:
    from bot.app import AgentBot

TIERS = [app_commands.Choice(name=t, value=t) for t in ("simple", "medium", "complex")]


def thread_name(task: str) -> str:
    """Discord allows 100 characters; the task's first line, tidied, reads best."""
    first = re.sub(r"\s+", " ", task.strip().splitlines()[0] if task.strip() else "research")
    first = re.sub(r"<@[!&]?\d+>", "", first).strip() or "research"
    return ("🔎 " + first)[:95]


class ResearchCog(commands.Cog):
    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="research", description="Research a question with an AI agent in a new thread."
    )
    @app_commands.describe(
        task="What to research",
        tier="Model tier (default: chosen per task)",
        private="Open a private thread (only you, and those you add)",
    )
    @app_commands.choices(tier=TIERS)
    @app_commands.guild_only()
    async def research(
        self,
        interaction: discord.Interaction,
        task: app_commands.Range[str, 1, 4000],
        tier: app_commands.Choice[str] | None = None,
        private: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        bot = self.bot
        channel = interaction.channel
        member = interaction.user
        guild_id = interaction.guild_id
        gs = await bot.services.guild_settings.get(guild_id) if guild_id else None
        parent_id = getattr(channel, "parent_id", None)
        if gs is not None and channel is not None and not gs.channel_allowed(channel.id, parent_id):
            allowed = ", ".join(f"<#{c}>" for c in gs.channels)
            await interaction.followup.send(
                f"/research is not enabled in this channel. Try: {allowed}", ephemeral=True
            )
            return
        decision = await bot.control.may_start(guild_id, member, task)
        if not decision.allowed:
            await interaction.followup.send(f"⛔ {decision.message}", ephemeral=True)
            return
        if isinstance(channel, discord.Thread):
            await interaction.followup.send(
                "Use /research in a text channel: it opens its own thread.", ephemeral=True
            )
            return
        if not isinstance(channel, discord.TextChannel):
            await interaction.followup.send("/research works in text channels.", ephemeral=True)
            return
        thread = await self._open_thread(channel, task, private)
        if thread is None:
            await interaction.followup.send(
                "I could not create a thread here: I need the Create Threads and "
                "Send Messages in Threads permissions.",
                ephemeral=True,
            )
            return
        is_private = private and thread.type == discord.ChannelType.private_thread
        await bot.control.start_session(
            thread, member, task, tier.value if tier else None, private=is_private
        )
        if private:
            try:
                await thread.add_user(member)
            except discord.HTTPException:
                pass
        await interaction.followup.send(f"Started in {thread.mention}.", ephemeral=True)

    async def _open_thread(
        self, channel: discord.TextChannel, task: str, private: bool
    ) -> discord.Thread | None:
        kind = discord.ChannelType.private_thread if private else discord.ChannelType.public_thread
        try:
            return await channel.create_thread(
                name=thread_name(task),
                type=kind,
                auto_archive_duration=self.bot.bot_settings.thread_archive_minutes,
                reason="agentbot /research",
            )
        except discord.Forbidden:
            if private:  # the server may not allow private threads: fall back to public, and say so
                try:
                    return await channel.create_thread(
                        name=thread_name(task),
                        type=discord.ChannelType.public_thread,
                        auto_archive_duration=self.bot.bot_settings.thread_archive_minutes,
                        reason="agentbot /research (private not allowed)",
                    )
                except discord.HTTPException:
                    return None
            return None
        except discord.HTTPException:
            return None

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A mention of the bot in an ordinary channel starts a session in a thread on that message."""
        bot = self.bot
        if message.author.bot or bot.user is None or message.guild is None:
            return
        if isinstance(message.channel, discord.Thread) or bot.user not in message.mentions:
            return
        if not isinstance(message.channel, discord.TextChannel):
            return
        task = re.sub(rf"<@!?{bot.user.id}>", "", message.content).strip()
        if not task:
            await message.reply(
                "Ask me something after the mention, or use /research.", allowed_mentions=NO_MENTIONS
            )
            return
        gs = await bot.services.guild_settings.get(message.guild.id)
        if not gs.channel_allowed(message.channel.id):
            return
        decision = await bot.control.may_start(message.guild.id, message.author, task)
        if not decision.allowed:
            await message.reply(f"⛔ {decision.message}", allowed_mentions=NO_MENTIONS)
            return
        try:
            thread = await message.create_thread(
                name=thread_name(task), auto_archive_duration=bot.bot_settings.thread_archive_minutes
            )
        except discord.HTTPException:
            await message.reply(
                "I could not open a thread here (missing Create Threads permission?).",
                allowed_mentions=NO_MENTIONS,
            )
            return
        await bot.control.start_session(thread, message.author, task, None)


async def setup(bot: AgentBot) -> None:
    await bot.add_cog(ResearchCog(bot))
