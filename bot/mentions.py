"""What counts as addressing the bot in a message: a mention of it or of its managed role, or a reply.

Discord's mention picker often inserts the bot's managed role (same name as the bot) instead of the
bot user, so both count; both are removed from the text the agent sees.
"""

from __future__ import annotations

import discord

from agent.tools.safe_names import visible_text


def mentions_bot(bot: discord.Client, message: discord.Message) -> bool:
    """A mention of the bot, or of its managed role (what Discord's mention picker often inserts)."""
    me = bot.user
    if me is None:
        return False
    if any(u.id == me.id for u in message.mentions):
        return True
    guild = message.guild
    role = guild.self_role if guild is not None else None
    return role is not None and any(r.id == role.id for r in message.role_mentions)


def strip_bot_mentions(bot: discord.Client, message: discord.Message) -> str:
    return strip_mentions_of(bot.user.id if bot.user is not None else None, message)


def strip_mentions_of(me_id: int | None, message: discord.Message) -> str:
    """The message's text without mentions of the bot (user ``me_id``) or of its managed role."""
    text = message.content
    if me_id is not None:
        text = text.replace(f"<@{me_id}>", "").replace(f"<@!{me_id}>", "")
    role = message.guild.self_role if message.guild is not None else None
    if role is not None:
        text = text.replace(f"<@&{role.id}>", "")
    # Only invisible characters (U+200B, a direction mark) is no question: it would start a paid run on nothing.
    return text.strip() if visible_text(text).strip() else ""


def replies_to_bot(bot: discord.Client, message: discord.Message) -> bool:
    ref = message.reference
    if ref is None or bot.user is None:
        return False
    resolved = ref.resolved
    return isinstance(resolved, discord.Message) and resolved.author.id == bot.user.id
