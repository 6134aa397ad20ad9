"""Edit to re-run (issue 17.3): a member edits the message that asked for a turn, and the thread offers
"Re-run with the edit". Part of :class:`bot.control.SessionControl`, kept apart because it is a feature
of its own: one offer per turn (edited to show the newest edit), only the author may press it, and only
for the session's latest turn."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import discord

from agent.attachments import IncomingFile
from bot.discord_sink import NO_MENTIONS
from bot.notes import RerunOffer
from bot.views import rerun_view

if TYPE_CHECKING:
    from bot.runner import SessionRunner
    from bot.services import Services
    from bot.store import SessionRecord

__all__ = ["EditRerun", "files_of"]


def files_of(turn: Any) -> tuple[IncomingFile, ...]:
    """The files a turn's message brought (kept in its checkpoints), for running its request again."""
    return tuple(IncomingFile(*f) for f in (turn.state or {}).get("attachments", ()))


OFFERS_KEPT = 1000
"""Re-run offers remembered to be edited (in memory: after a restart an edit posts one more)."""


class EditRerun:
    """The re-run offer and its button. The host (``SessionControl``) sets ``sv``, ``runner``,
    ``_offers`` and ``_offering`` and provides the three methods declared below."""

    sv: Services
    runner: SessionRunner
    _offers: OrderedDict[int, discord.Message]
    _offering: set[int]

    async def taken(self, message_id: int) -> None: ...
    async def _channel_refusal(self, session: SessionRecord, where: Any = None) -> str | None: ...
    async def _pressed(
        self, interaction: discord.Interaction, session: Any, prompt: str, **more: Any
    ) -> None: ...

    async def edited(self, message: discord.Message, prompt: str) -> None:
        """``message`` (not the bot's) was edited; ``prompt`` is its new text as a turn would read it.

        An edit that leaves the text as it was (Discord also sends one when it unfurls a link) does
        nothing; so does an edit of a message that asked for no turn."""
        await self.taken(message.id)
        if not prompt or await self.runner.edited(message.id, prompt) is not None:
            return
        sv = self.sv
        turn = await sv.sessions.turn_for_message(message.id)
        if (
            turn is None
            or turn.requester_id != message.author.id
            or prompt in (turn.prompt, turn.edited_prompt)
        ):
            return
        session = await sv.sessions.get(turn.session_id)
        if session is None or session.thread_id is None or message.guild is None:
            return
        thread: Any = message.channel if message.channel.id == session.thread_id else None
        try:
            thread = thread or message.guild.get_thread(session.thread_id)
            thread = thread or await message.guild.fetch_channel(session.thread_id)
        except discord.HTTPException:
            return  # the thread is gone: nowhere to offer it
        if getattr(thread, "archived", False) or getattr(thread, "locked", False):
            return  # an offer would reopen a thread its moderators (or Discord's quiet timer) closed
        if await self._channel_refusal(session):  # no offer its button would refuse
            return
        await sv.sessions.set_edited(turn.id, prompt)
        # One offer per turn, showing the latest edit: edits pass no slowmode, quota or follow-up cap,
        # and each posted an offer of its own (a member editing in a loop had the bot post without end).
        if turn.id in self._offering:
            return  # the offer being written reads the newest edit before it is done
        self._offering.add(turn.id)
        try:
            await self._offer(thread, session.id, turn.id)
        finally:
            self._offering.discard(turn.id)

    async def _offer(self, thread: Any, session_id: str, turn_id: int) -> None:
        """Post the turn's re-run offer, or edit it, until it shows the turn's newest edit."""
        written: str | None = None
        while True:
            turn = next((t for t in await self.sv.sessions.turns(session_id) if t.id == turn_id), None)
            if turn is None or not turn.edited_prompt or turn.edited_prompt == written:
                return
            await self.runner.write_budget(session_id).acquire(self.runner.rest_budget)
            turn = next((t for t in await self.sv.sessions.turns(session_id) if t.id == turn_id), turn)
            written = turn.edited_prompt or ""
            shown = self._offers.get(turn_id)
            try:
                if shown is not None:
                    try:
                        await shown.edit(content=RerunOffer(written).text)
                    except discord.NotFound:  # deleted (by a moderator): the next round posts it again
                        self._offers.pop(turn_id, None)
                        written = None
                else:
                    self._offers[turn_id] = await thread.send(
                        RerunOffer(written).text,
                        view=rerun_view(session_id, turn_id),
                        allowed_mentions=NO_MENTIONS,
                        silent=True,
                    )
                    while len(self._offers) > OFFERS_KEPT:
                        self._offers.popitem(last=False)
            except discord.HTTPException:
                return

    async def rerun(self, interaction: discord.Interaction, session_id: str, turn_id: int) -> None:
        """The "Re-run with the edit" button: only the edited message's author, only the latest turn."""
        sv = self.sv
        session = await sv.sessions.get(session_id)
        turn = next((t for t in await sv.sessions.turns(session_id) if t.id == turn_id), None)
        if session is None or turn is None:
            await interaction.response.send_message("This session no longer exists.", ephemeral=True)
            return
        say = interaction.response.send_message
        if interaction.user.id != turn.requester_id:
            await say("Only the person who wrote the edited message can re-run it.", ephemeral=True)
            return
        latest = await sv.sessions.latest_turn(session_id)
        if turn.superseded_by is not None or turn.edited_prompt is None:
            await say("This turn was already re-run with your edit.", ephemeral=True)
            return
        if latest is None or latest.id != turn.id:
            await say(
                "Only the latest turn can be re-run: later answers were built on this one. "
                "Ask again in a new message instead.",
                ephemeral=True,
            )
            return
        if self.runner.active(session_id):
            await say("A turn is running here; press this again once it has finished.", ephemeral=True)
            return
        if refused := await self._channel_refusal(session, interaction.channel):
            await say(refused, ephemeral=True)
            return
        # Submitted before anything else is awaited, so a second press sees this turn as active.
        await self._pressed(
            interaction,
            session,
            turn.edited_prompt,
            message_id=turn.message_id,
            supersedes=turn.id,
            attachments=files_of(turn),  # the superseded turn's mention of them leaves the history
            pressed=interaction.message,
        )
        await say("Re-running with your edit…", ephemeral=True)
