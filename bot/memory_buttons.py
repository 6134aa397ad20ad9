"""The /memory confirmation buttons (forget, clear, cancel): stateless, so they survive a restart.

Their custom id carries the action, the time it was offered and (for forget) up to four memory ids;
the click goes to the loaded ``MemoryCog.on_button``, which re-reads and re-checks everything.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import discord


def _ts36(ts: float) -> str:
    n, digits = int(ts), ""
    while True:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if n == 0:
            return digits


class MemoryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"agentbot:mem:(?P<action>[fcx])(?::(?P<ts>[0-9a-z]{1,8}))?(?::(?P<ids>(?:[0-9a-f]{16}){1,4}))?",
):
    """Forget (``f``), clear (``c``) or cancel (``x``). Registered with ``add_dynamic_items`` in
    ``cog_load``, so clicks after a restart still reach it."""

    def __init__(self, action: str, issued: int = 0, ids: Sequence[str] = ()) -> None:
        parts = ["agentbot:mem:" + action]
        if action != "x":
            parts.append(_ts36(issued))
        if ids:
            parts.append("".join(ids))
        label, style = {
            "f": (f"Forget {len(ids)} memor{'y' if len(ids) == 1 else 'ies'}", discord.ButtonStyle.danger),
            "c": ("Delete every memory of this server", discord.ButtonStyle.danger),
            "x": ("Cancel", discord.ButtonStyle.secondary),
        }[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=":".join(parts)))
        self.action = action
        self.issued = issued
        self.ids = list(ids)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> MemoryButton:
        ids = match["ids"] or ""
        return cls(
            match["action"], int(match["ts"] or "0", 36), [ids[i : i + 16] for i in range(0, len(ids), 16)]
        )

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("MemoryCog")  # type: ignore[attr-defined]
        handler = getattr(cog, "on_button", None)
        if handler is None:
            await interaction.response.edit_message(content="Memory commands are not loaded.", view=None)
            return
        await handler(interaction, self)


def confirm_view(action: str, ids: Sequence[str] = (), *, now: float | None = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(MemoryButton(action, int(time.time() if now is None else now), ids))
    view.add_item(MemoryButton("x"))
    return view
