"""What ``agentbot run`` and ``sync`` say when Discord (or the way to it) refuses them: one line naming the
setting to fix, and the exit code, instead of a traceback (issue 16)."""

from __future__ import annotations

import aiohttp
import discord

from agent.config import ConfigError
from bot.gateway import GatewayUnreachable
from bot.store.db import StoreError

GATEWAY_CLOSED = {
    4010: "Discord refused the shard (4010 Invalid shard): check DISCORD_SHARD_COUNT and DISCORD_SHARD_IDS",
    4011: "Discord requires this bot to shard (4011 Sharding required): set DISCORD_SHARD_COUNT, about one "
    "shard per 1,000 servers, in every process (README: Scaling)",
}


def explain(e: BaseException) -> tuple[str, bool] | None:
    """The line for ``e`` and whether it failed at start (else a setting was refused before it: the
    two exit codes of ``bot.cli``); None for an error no setting explains (it stays a traceback)."""
    if isinstance(e, ConfigError):  # found while building services (tiers file, judge or reader model)
        return str(e), False
    if isinstance(e, StoreError | GatewayUnreachable):  # DATABASE_URL unreachable, a store too new...
        return str(e), True
    if isinstance(e, discord.LoginFailure):
        return (
            "Discord rejected DISCORD_TOKEN (401 Unauthorized): reset the bot token in the developer portal "
            "and put the new one in .env",
            True,
        )
    if isinstance(e, discord.PrivilegedIntentsRequired):
        return (
            "Discord refused the Message Content intent: enable it for this bot under Bot > Privileged "
            "Gateway Intents in the developer portal",
            True,
        )
    if isinstance(e, discord.ConnectionClosed):  # the gateway's own close codes discord.py does not retry
        return GATEWAY_CLOSED.get(e.code, f"Discord closed the gateway connection with code {e.code}"), True
    if isinstance(e, discord.HTTPException):  # 5xx after discord.py's retries, or 404 from a wrong base URL
        if e.code in (10004, 50001):  # Unknown Guild / Missing Access: Discord answered; the id is wrong
            return (
                f"Discord answered HTTP {e.status} ({e.text}) for the server to sync commands to: check "
                "DISCORD_SYNC_GUILD_ID (or sync's --guild): the bot must be in that server, invited with "
                "the bot and applications.commands scopes",
                True,
            )
        return (
            f"Discord answered HTTP {e.status} ({e.text or e.response.reason}): check DISCORD_API_BASE_URL "
            "if it is set, else Discord's status page, and try again",
            True,
        )
    if isinstance(e, OSError) and e.filename:  # the disk, not the network (a read-only DATA_DIR)
        return f"cannot write {e.filename} ({e.strerror}): check DATA_DIR", True
    if isinstance(e, TimeoutError | OSError | aiohttp.ClientError):  # DNS, refused, TLS: unreachable
        return (
            f"could not reach Discord ({type(e).__name__}: {e}): check the network, or DISCORD_API_BASE_URL",
            True,
        )
    return None
