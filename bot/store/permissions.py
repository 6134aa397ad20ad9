"""The permission check the /config handlers run themselves.

A command's default permission (Manage Server) is only a default: a server can re-grant the command to
anyone in its integration settings, so every handler that changes settings checks again.
"""

from __future__ import annotations

import discord


class MissingManageGuild(PermissionError):
    """The member may not change this server's settings; the message is shown as is."""


def has_manage_guild(permissions_value: int) -> bool:
    perms = discord.Permissions(int(permissions_value))
    return perms.manage_guild or perms.administrator  # Administrator implies every permission


def require_manage_guild(permissions_value: int | None) -> None:
    """Raise :class:`MissingManageGuild` unless the permission bits include Manage Server (or Administrator).

    Pass ``interaction.permissions.value`` (the member's permissions in that channel).
    """
    if permissions_value is None or not has_manage_guild(permissions_value):
        raise MissingManageGuild(
            "You need the Manage Server permission to change agentbot's settings on this server."
        )
