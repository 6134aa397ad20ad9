"""INTERACTION_CREATE payloads as Discord builds them: slash commands (with subcommand groups) and clicks.

When the bot has registered the command (bulk overwrite), options are typed and checked against that
schema — an unknown option, a missing required one, or a value outside the declared choices is refused
here, because Discord's client would never send it. When it has not, types are inferred from the
Python values so a test can still drive a command the bot never synced.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from tests.fakes.discord_models import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    channel_payload,
    member_payload,
    new_snowflake,
    role_payload,
    user_payload,
)
from tests.fakes.discord_records import InteractionRecord, MessageRecord, StoredAttachment
from tests.fakes.discord_state import FakeState

SUB_COMMAND, SUB_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
APPLICATION_COMMAND, MESSAGE_COMPONENT = 2, 3


class InteractionBuildError(ValueError):
    """The requested interaction is one Discord's client could not send; the message says why."""


def find_command(state: FakeState, guild_id: int | None, name: str) -> tuple[dict[str, Any] | None, bool]:
    """The registered chat-input command ``name``: guild-scoped first, then global (Discord's precedence)."""
    for scope in (guild_id, None):
        for command in state.commands.get(scope, []):
            if command["name"] == name and int(command.get("type", 1)) == 1:
                return command, scope is not None
    return None, False


def build_command_interaction(
    state: FakeState,
    *,
    command: str,
    options: Mapping[str, Any],
    member: FakeMember,
    guild: FakeGuild,
    channel: FakeChannel,
    permissions: int | None,
    locale: str,
    require_registered: bool,
) -> InteractionRecord:
    parts = command.strip().lstrip("/").split()
    if not 1 <= len(parts) <= 3:
        raise InteractionBuildError(
            f"command must be 'name', 'name sub' or 'name group sub', got {command!r}"
        )
    root, path = parts[0], parts[1:]
    schema, guild_scoped = find_command(state, guild.id, root)
    if schema is None and require_registered:
        known = sorted({c["name"] for scope in (guild.id, None) for c in state.commands.get(scope, [])})
        raise InteractionBuildError(
            f"/{root} is not registered (registered: {known}); did the bot sync its tree?"
        )
    perms = guild.permissions_of(member) if permissions is None else permissions
    resolved: dict[str, dict[str, Any]] = {}
    top: list[dict[str, Any]] = []
    container = top
    node: dict[str, Any] | None = schema
    for depth, name in enumerate(path):
        kind = SUB_COMMAND if depth == len(path) - 1 else SUB_GROUP
        if node is not None:
            child = next(
                (
                    o
                    for o in node.get("options") or []
                    if o["name"] == name and o["type"] in (SUB_COMMAND, SUB_GROUP)
                ),
                None,
            )
            if child is None:
                subs = [o["name"] for o in node.get("options") or [] if o["type"] in (SUB_COMMAND, SUB_GROUP)]
                raise InteractionBuildError(
                    f"/{' '.join(parts[: depth + 1])} does not exist; choices here: {subs}"
                )
            kind, node = child["type"], child
        entry: dict[str, Any] = {"name": name, "type": kind, "options": []}
        container.append(entry)
        container = entry["options"]
    if node is not None and any(o["type"] in (SUB_COMMAND, SUB_GROUP) for o in node.get("options") or []):
        subs = [o["name"] for o in node["options"]]
        raise InteractionBuildError(f"/{' '.join(parts)} is a group; name one of its subcommands: {subs}")
    container.extend(_leaf_options(node, options, guild, resolved, state, perms, " ".join(parts)))
    interaction_id = new_snowflake()
    data: dict[str, Any] = {
        "id": str(schema["id"]) if schema else str(new_snowflake()),
        "name": root,
        "type": 1,
    }
    if top:
        data["options"] = top
    if resolved:
        data["resolved"] = resolved
    if guild_scoped:
        data["guild_id"] = str(guild.id)
    record = _record(state, APPLICATION_COMMAND, interaction_id, member, guild, channel, perms, locale, data)
    record.command = " ".join(parts)
    return record


def build_component_interaction(
    state: FakeState,
    *,
    custom_id: str,
    message: MessageRecord,
    member: FakeMember,
    guild: FakeGuild,
    channel: FakeChannel,
    component_type: int,
    values: list[str] | None,
    permissions: int | None,
    locale: str,
) -> InteractionRecord:
    if custom_id not in _custom_ids(message.components):
        raise InteractionBuildError(
            f"message {message.id} has no component with custom_id {custom_id!r} "
            f"(has {sorted(_custom_ids(message.components))}); a user cannot click what is not there"
        )
    perms = guild.permissions_of(member) if permissions is None else permissions
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
    if values is not None:
        data["values"] = list(values)
    record = _record(state, MESSAGE_COMPONENT, new_snowflake(), member, guild, channel, perms, locale, data)
    record.payload["message"] = state.message_payload(message)
    record.custom_id = custom_id
    record.message_id = message.id
    return record


def _custom_ids(components: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for component in components:
        if component.get("custom_id"):
            found.add(component["custom_id"])
        found |= _custom_ids(component.get("components") or [])
        if isinstance(component.get("accessory"), dict):
            found |= _custom_ids([component["accessory"]])
    return found


def _record(
    state: FakeState,
    kind: int,
    interaction_id: int,
    member: FakeMember,
    guild: FakeGuild,
    channel: FakeChannel,
    perms: int,
    locale: str,
    data: dict[str, Any],
) -> InteractionRecord:
    token = "fake-interaction-" + secrets.token_urlsafe(32)
    bot_perms = guild.permissions_of(state.bot_member(guild))
    payload: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(state.application_id),
        "type": kind,
        "token": token,
        "version": 1,
        "data": data,
        "guild_id": str(guild.id),
        "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
        "channel_id": str(channel.id),
        "channel": channel_payload(channel, permissions=perms),
        "member": member_payload(member, permissions=perms),
        "app_permissions": str(bot_perms),
        "locale": locale,
        "guild_locale": guild.locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "authorizing_integration_owners": {"0": str(guild.id)},
        "context": 0,
        "attachment_size_limit": state.attachment_size_limit,
    }
    record = InteractionRecord(
        id=interaction_id,
        token=token,
        type=kind,
        channel_id=channel.id,
        guild_id=guild.id,
        user_id=member.id,
        t=time.monotonic(),
        payload=payload,
    )
    state.interactions[interaction_id] = record
    state.interactions_by_token[token] = record
    return record


def _leaf_options(
    node: dict[str, Any] | None,
    values: Mapping[str, Any],
    guild: FakeGuild,
    resolved: dict[str, dict[str, Any]],
    state: FakeState,
    perms: int,
    command: str,
) -> list[dict[str, Any]]:
    declared = {o["name"]: o for o in (node or {}).get("options") or []} if node is not None else None
    result = []
    for name, value in values.items():
        if declared is not None:
            if name not in declared:
                raise InteractionBuildError(f"/{command} has no option {name!r}; it has {sorted(declared)}")
            option_type = declared[name]["type"]
            choices = [c["value"] for c in declared[name].get("choices") or []]
        else:
            option_type, choices = _infer_type(name, value), []
        wire = _wire_value(option_type, value, name, guild, resolved, state, perms)
        if choices and wire not in choices:
            raise InteractionBuildError(f"/{command} option {name!r} must be one of {choices}, got {wire!r}")
        if declared is not None:
            _check_bounds(declared[name], wire, f"/{command} option {name!r}")
        result.append({"name": name, "type": option_type, "value": wire})
    if declared is not None:
        missing = [n for n, o in declared.items() if o.get("required") and n not in values]
        if missing:
            raise InteractionBuildError(f"/{command} needs required option(s) {missing}")
    return result


def _check_bounds(option: dict[str, Any], value: Any, where: str) -> None:
    """Discord's client enforces declared ranges and lengths before sending, so the fake refuses too."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = option.get("min_value"), option.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise InteractionBuildError(f"{where} must be within [{low}, {high}], got {value!r}")
    if isinstance(value, str) and option.get("type") == STRING:
        low, high = option.get("min_length"), option.get("max_length")
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            raise InteractionBuildError(f"{where} length must be within [{low}, {high}], got {len(value)}")


def _infer_type(name: str, value: Any) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, FakeUser | FakeMember):
        return USER
    if isinstance(value, FakeChannel):
        return CHANNEL
    if isinstance(value, FakeRole):
        return ROLE
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bytes):
        return ATTACHMENT
    raise InteractionBuildError(
        f"cannot infer a Discord option type for {name}={value!r}; register the command"
    )


def _wire_value(
    option_type: int,
    value: Any,
    name: str,
    guild: FakeGuild,
    resolved: dict[str, dict[str, Any]],
    state: FakeState,
    perms: int,
) -> Any:
    def wrong(expected: str) -> InteractionBuildError:
        return InteractionBuildError(f"option {name!r} is declared as {expected}, got {value!r}")

    if option_type == STRING:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if option_type == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if option_type == BOOLEAN:
        if not isinstance(value, bool):
            raise wrong("a boolean")
        return value
    if option_type == NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        return value
    if (
        option_type in (USER, MENTIONABLE)
        and isinstance(value, FakeUser | FakeMember | int)
        and not isinstance(value, bool)
    ):
        user_id = value if isinstance(value, int) else value.id
        user = state.user(user_id)
        resolved.setdefault("users", {})[str(user_id)] = user_payload(user)
        member = guild.find_member(user_id)
        if member is not None:
            resolved.setdefault("members", {})[str(user_id)] = member_payload(
                member, with_user=False, permissions=guild.permissions_of(member)
            )
        return str(user_id)
    if option_type in (ROLE, MENTIONABLE) and isinstance(value, FakeRole):
        resolved.setdefault("roles", {})[str(value.id)] = role_payload(value)
        return str(value.id)
    if option_type == CHANNEL:
        channel = value if isinstance(value, FakeChannel) else state.channel(value)
        resolved.setdefault("channels", {})[str(channel.id)] = channel_payload(channel, permissions=perms)
        return str(channel.id)
    if option_type == ATTACHMENT:
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bytes)):
            raise wrong("an attachment given as (filename, bytes)")
        attachment = StoredAttachment(new_snowflake(), value[0], value[1], "application/octet-stream")
        state.loose_attachments[attachment.id] = attachment
        url = f"{state.base_url}/attachments/0/{attachment.id}/{attachment.filename}"
        resolved.setdefault("attachments", {})[str(attachment.id)] = {
            "id": str(attachment.id),
            "filename": attachment.filename,
            "size": len(attachment.data),
            "url": url,
            "proxy_url": url,
            "content_type": attachment.content_type,
        }
        return str(attachment.id)
    raise wrong(f"option type {option_type}")
