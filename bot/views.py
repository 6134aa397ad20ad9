"""The Stop button: a dynamic item whose custom id carries the session id, so it keeps working after
a restart without keeping any view in memory (``bot.add_dynamic_items`` in ``setup_hook``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from bot.app import AgentBot


class StopButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"agentbot:stop:(?P<sid>[0-9a-f]{8,64})"
):
    def __init__(self, session_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Stop",
                style=discord.ButtonStyle.danger,
                emoji="⏹️",
                custom_id=f"agentbot:stop:{session_id}",
            )
        )
        self.session_id = session_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StopButton:
        return cls(match["sid"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: AgentBot = interaction.client  # type: ignore[assignment]
        await bot.stop_session(interaction, self.session_id)


def stop_view(session_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(StopButton(session_id))
    return view


class RetryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"agentbot:retry:(?P<sid>[0-9a-f]{8,64})"
):
    """Offered under a turn that failed (or could not resume): runs the session's last request again."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Retry",
                style=discord.ButtonStyle.primary,
                emoji="🔁",
                custom_id=f"agentbot:retry:{session_id}",
            )
        )
        self.session_id = session_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RetryButton:
        return cls(match["sid"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: AgentBot = interaction.client  # type: ignore[assignment]
        await bot.retry_session(interaction, self.session_id)


def retry_view(session_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RetryButton(session_id))
    return view
