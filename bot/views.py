"""Every button the bot posts (Stop, Retry, Re-run with the edit, and the confirmations of /memory and
/config reset) is one dynamic item whose custom id, ``agentbot:<kind>:<arg>:…``, carries all a click
needs: buttons keep working after a restart without any view kept in memory.

A click goes to the handler registered for its kind in the client's ``buttons`` (the session actions
of :class:`bot.control.SessionControl`, and the cogs' confirmations), called with the id's arguments;
each handler re-reads and re-checks everything. This module imports nothing of the bot's, so nothing
cycles back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord

Handler = Callable[..., Awaitable[None]]
"""``handler(interaction, *args)``: the custom id's arguments as strings."""


class Button(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"agentbot:(?P<kind>[a-z]{1,16})(?::[0-9a-z_.*-]{1,80}){0,3}",
):
    def __init__(
        self,
        custom_id: str,
        label: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        emoji: str | None = None,
    ) -> None:
        super().__init__(discord.ui.Button(label=label, style=style, emoji=emoji, custom_id=custom_id))
        _, self.kind, *self.args = custom_id.split(":")

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Button:
        return cls(match.string)

    async def callback(self, interaction: discord.Interaction) -> None:
        client: Any = interaction.client
        handler: Handler | None = client.buttons.get(self.kind)
        try:
            if handler is None:
                await interaction.response.edit_message(content="These commands are not loaded.", view=None)
            else:
                await handler(interaction, *self.args)
        except Exception as e:  # like a slash command's error: an id to quote, only the clicker sees it
            await client.on_app_command_error(interaction, e)


def buttons_view(*buttons: Button) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(button)
    return view


def spent_view(message: discord.Message, *, disabled: bool = True) -> discord.ui.View:
    """``message``'s buttons (as it was posted), all disabled (or enabled again): a Retry or Re-run left
    live after its turn started was pressed again once that turn had answered, and got only a private
    "nothing to retry". Stopped, so discord.py keeps no view in memory for it (the client's dynamic
    items dispatch a click on it, enabled again, as on the message it was posted with)."""
    view = discord.ui.View(timeout=None)
    for row in message.components:
        for c in getattr(row, "children", ()):
            if isinstance(c, discord.Button):
                view.add_item(
                    discord.ui.Button(
                        style=c.style,
                        label=c.label,
                        emoji=c.emoji,
                        custom_id=c.custom_id,
                        url=c.url,
                        disabled=disabled,
                    )
                )
    view.stop()
    return view


def confirm_view(kind: str, label: str, seconds: float, *args: str) -> discord.ui.View:
    """A confirmation (/config reset, /memory forget and clear): a danger button whose custom id carries
    when it expires and ``args``, and Cancel (``x``), so a click works across a restart but not days later."""
    ok = ":".join(("agentbot", kind, str(int(time.time() + seconds)), *args))
    return buttons_view(Button(ok, label, discord.ButtonStyle.danger), Button(f"agentbot:{kind}:x", "Cancel"))


async def confirmation_open(interaction: discord.Interaction, expires: str, command: str) -> bool:
    """Whether a click on :func:`confirm_view` goes on; a Cancel or an expired one is answered here."""
    if expires == "x":
        text = "Cancelled; nothing changed."
    elif not expires.isdigit() or time.time() > int(expires):  # not a number: a button of an older bot
        text = f"This confirmation has expired; nothing changed. Run {command} again."
    else:
        return True
    await interaction.response.edit_message(content=text, view=None)
    return False


def stop_view(session_id: str) -> discord.ui.View:
    return buttons_view(Button(f"agentbot:stop:{session_id}", "Stop", discord.ButtonStyle.danger, "⏹️"))


def retry_view(session_id: str) -> discord.ui.View:
    return buttons_view(Button(f"agentbot:retry:{session_id}", "Retry", discord.ButtonStyle.primary, "🔁"))


def retry_offer(
    session_id: str, cooling: float, *, host_broken: bool = False
) -> tuple[str, discord.ui.View | None]:
    """What a failed turn offers: Retry, or while every model cools down after errors (``cooling``
    seconds; up to 15 min after a rejected key) when to ask again, since a Retry would fail until then
    (as quota refusals say when they reset). ``host_broken`` (the session's workspace cannot be made):
    no Retry either, it fails the same way until an admin fixes the bot's host."""
    if host_broken:
        return (
            "This turn failed and would fail the same way until an admin fixes the bot's host: ask again then.",
            None,
        )
    if cooling <= 0:
        return "This turn failed. You can try it again:", retry_view(session_id)
    when = f"<t:{int(time.time() + cooling) + 1}:R>"
    return f"This turn failed, and the model provider is cooling down after errors: ask again {when}.", None


def rerun_view(session_id: str, turn_id: int) -> discord.ui.View:
    return buttons_view(
        Button(
            f"agentbot:rerun:{session_id}:{turn_id}", "Re-run with the edit", discord.ButtonStyle.primary, "✏️"
        )
    )
