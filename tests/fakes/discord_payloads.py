"""Message JSON as Discord sends it, built from a stored :class:`MessageRecord`.

REST answers and gateway events differ in one way that matters to discord.py: gateway messages carry
``guild_id`` and the author's partial ``member`` (and members on mentions); REST messages do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.discord_models import FakeGuild, channel_payload, iso, member_payload, user_payload
from tests.fakes.discord_records import InteractionRecord, MessageRecord, StoredAttachment

if TYPE_CHECKING:
    from tests.fakes.discord_state import FakeState

MESSAGE_DEFAULT, MESSAGE_THREAD_CREATED, MESSAGE_REPLY, MESSAGE_CHAT_INPUT = 0, 18, 19, 20


def attachment_payload(
    state: FakeState, message: MessageRecord, attachment: StoredAttachment
) -> dict[str, Any]:
    url = f"{state.base_url}/attachments/{message.channel_id}/{attachment.id}/{attachment.filename}"
    data: dict[str, Any] = {
        "id": str(attachment.id),
        "filename": attachment.filename,
        "size": len(attachment.data),
        "url": url,
        "proxy_url": url,
        "content_type": attachment.content_type,
    }
    if attachment.description:
        data["description"] = attachment.description
    return data


def message_payload(state: FakeState, message: MessageRecord, *, gateway: bool = False) -> dict[str, Any]:
    channel = state.channels.get(message.channel_id)
    guild = state.guild_of(channel) if channel else None
    data: dict[str, Any] = {
        "id": str(message.id),
        "channel_id": str(message.channel_id),
        "author": user_payload(message.author),
        "content": message.content,
        "timestamp": iso(message.timestamp),
        "edited_timestamp": iso(message.edited_timestamp) if message.edited_timestamp else None,
        "tts": message.tts,
        "mention_everyone": message.mention_everyone,
        "mentions": [
            _mention_payload(state, guild, uid, gateway) for uid in message.mention_ids if uid in state.users
        ],
        "mention_roles": [str(r) for r in message.mention_role_ids],
        "attachments": [attachment_payload(state, message, a) for a in message.attachments],
        "embeds": [{"type": "rich", **e} for e in message.embeds],
        "components": message.components,
        "pinned": False,
        "type": message.type,
        "flags": message.flags,
    }
    if message.nonce is not None:
        data["nonce"] = message.nonce
    if message.webhook_id is not None:
        data["webhook_id"] = str(message.webhook_id)
    if message.reactions:
        data["reactions"] = [
            _reaction_payload(state, e, users) for e, users in message.reactions.items() if users
        ]
    if message.interaction_id is not None and message.interaction_id in state.interactions:
        data["application_id"] = str(state.application_id)
        data["interaction_metadata"] = _interaction_metadata(
            state, state.interactions[message.interaction_id], message
        )
    if message.reference_id is not None:
        data["message_reference"] = _reference(message, message.reference_id)
        referenced = state.messages.get(message.reference_id)
        if referenced is not None and not referenced.deleted and message.type == MESSAGE_REPLY:
            data["referenced_message"] = message_payload(state, referenced)
    if message.type == MESSAGE_THREAD_CREATED and message.thread_id is not None:
        data["message_reference"] = {
            "type": 0,
            "channel_id": str(message.thread_id),
            "guild_id": str(message.guild_id),
        }
    elif message.thread_id is not None and message.thread_id in state.channels:
        data["thread"] = channel_payload(state.channels[message.thread_id])
    if gateway and guild is not None:
        data["guild_id"] = str(guild.id)
        author_member = guild.find_member(message.author.id)
        if author_member is not None and message.webhook_id is None:
            data["member"] = member_payload(author_member, with_user=False)
    return data


def _mention_payload(
    state: FakeState, guild: FakeGuild | None, user_id: int, gateway: bool
) -> dict[str, Any]:
    data = user_payload(state.users[user_id])
    member = guild.find_member(user_id) if guild else None
    if gateway and member is not None:
        data["member"] = member_payload(member, with_user=False)
    return data


def _reaction_payload(state: FakeState, emoji: str, users: set[int]) -> dict[str, Any]:
    name, _, emoji_id = emoji.partition(":")
    return {
        "count": len(users),
        "count_details": {"burst": 0, "normal": len(users)},
        "me": state.bot_user.id in users,
        "me_burst": False,
        "burst_colors": [],
        "emoji": {"id": emoji_id or None, "name": name},
    }


def _reference(message: MessageRecord, referenced_id: int) -> dict[str, Any]:
    data = {"type": 0, "message_id": str(referenced_id), "channel_id": str(message.channel_id)}
    if message.guild_id is not None:
        data["guild_id"] = str(message.guild_id)
    return data


def _interaction_metadata(
    state: FakeState, interaction: InteractionRecord, message: MessageRecord
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(interaction.id),
        "type": interaction.type,
        "user": user_payload(state.users[interaction.user_id]),
        "authorizing_integration_owners": {"0": str(interaction.guild_id)} if interaction.guild_id else {},
    }
    if interaction.command:
        data["name"] = interaction.command
    if interaction.original_message_id and interaction.original_message_id != message.id:
        data["original_response_message_id"] = str(interaction.original_message_id)
    if interaction.message_id:
        data["interacted_message_id"] = str(interaction.message_id)
    return data
