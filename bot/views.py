"""Session buttons (Stop, Retry, Re-run with the edit): one dynamic item whose custom id carries the
action and the session id (and, for a re-run, the turn), so buttons keep working after a restart without keeping any view in memory
(``bot.add_dynamic_items`` in ``setup_hook``).

A click goes to the client's ``control`` (:class:`SessionActions`, in the app a
:class:`bot.control.SessionControl`): this module imports nothing of the bot's, so nothing cycles back.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Protocol

import discord

Action = Literal["stop", "retry", "rerun"]
_LOOK: dict[str, tuple[str, discord.ButtonStyle, str]] = {
    "stop": ("Stop", discord.ButtonStyle.danger, "⏹️"),
    "retry": ("Retry", discord.ButtonStyle.primary, "🔁"),
    "rerun": ("Re-run with the edit", discord.ButtonStyle.primary, "✏️"),
}


class SessionActions(Protocol):
    async def stop(self, interaction: discord.Interaction, session_id: str) -> None: ...

    async def retry(self, interaction: discord.Interaction, session_id: str) -> None: ...

    async def rerun(self, interaction: discord.Interaction, session_id: str, turn_id: int) -> None: ...


class SessionButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"agentbot:(?P<action>stop|retry|rerun):(?P<sid>[0-9a-f]{8,64})(?::(?P<turn>[0-9]{1,19}))?",
):
    def __init__(self, action: Action, session_id: str, turn_id: int | None = None) -> None:
        label, style, emoji = _LOOK[action]
        tail = f":{turn_id}" if turn_id is not None else ""
        super().__init__(
            discord.ui.Button(
                label=label, style=style, emoji=emoji, custom_id=f"agentbot:{action}:{session_id}{tail}"
            )
        )
        self.action: Action = action
        self.session_id = session_id
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> SessionButton:
        turn = int(match["turn"]) if match["turn"] else None
        return cls(match["action"], match["sid"], turn)  # type: ignore[arg-type]

    async def callback(self, interaction: discord.Interaction) -> None:
        control: SessionActions = interaction.client.control  # type: ignore[attr-defined]
        try:
            if self.action == "stop":
                await control.stop(interaction, self.session_id)
            elif self.action == "rerun":
                if self.turn_id is None:
                    await interaction.response.send_message("This button is out of date.", ephemeral=True)
                else:
                    await control.rerun(interaction, self.session_id, self.turn_id)
            else:
                await control.retry(interaction, self.session_id)
        except Exception as e:  # like a slash command's error: an id to quote, only the clicker sees it
            await interaction.client.on_app_command_error(interaction, e)  # type: ignore[attr-defined]


def session_view(action: Action, session_id: str, turn_id: int | None = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(SessionButton(action, session_id, turn_id))
    return view


def stop_view(session_id: str) -> discord.ui.View:
    return session_view("stop", session_id)


def retry_view(session_id: str) -> discord.ui.View:
    return session_view("retry", session_id)


def rerun_view(session_id: str, turn_id: int) -> discord.ui.View:
    return session_view("rerun", session_id, turn_id)
