"""Where the bot may start work (``/config channels``), said in a way a member can act on.

Kept apart from :mod:`bot.formatting` because it reads the guild: a channel on the list can be deleted
after it was added, and the refusal named it ("Try: #deleted-channel"); with every listed channel
deleted the bot answered nowhere and the member was pointed at channels that do not exist.
"""

from __future__ import annotations

from typing import Any

from bot.store.guild_settings import GuildSettings

__all__ = ["channel_refusal"]


def channel_refusal(
    gs: GuildSettings, channel_id: int, parent_id: int | None = None, guild: Any = None
) -> str | None:
    """Why the bot may not start work here, or None: /research says it, and so do Retry and Re-run
    pressed in a thread under a channel taken off the list. ``guild`` (a ``discord.Guild``, when there is
    one) leaves out listed channels that no longer exist."""
    if gs.channel_allowed(channel_id, parent_id):
        return None
    listed = [c for c in gs.channels if guild is None or guild.get_channel(c) is not None]
    if not listed:
        return (
            "/research is not enabled in this channel, and the channels it is enabled in no longer exist: "
            "ask an admin to add one with `/config channels`."
        )
    return f"/research is not enabled in this channel. Try: {', '.join(f'<#{c}>' for c in listed)}"
