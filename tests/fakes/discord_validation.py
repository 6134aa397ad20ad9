"""Discord's documented limits, enforced the way Discord refuses them (400 / code 50035 "Invalid Form Body").

A fake that accepted a 2001-character message would let a splitting bug reach production; these checks
make the real discord.py raise the same ``HTTPException`` it would raise against Discord.
"""

from __future__ import annotations

import re
from typing import Any

CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TOTAL_MAX = 6000
EMBED_LIMITS = {"title": 256, "description": 4096}
EMBED_FIELDS_MAX = 25
ACTION_ROWS_MAX = 5
ROW_ITEMS_MAX = 5
CUSTOM_ID_MAX = 100
BUTTON_LABEL_MAX = 80
THREAD_NAME_MAX = 100
CHOICES_MAX = 25
OPTIONS_MAX = 25
COMMANDS_MAX = 100
COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
ALLOWED_MESSAGE_FLAGS = 4 | 64 | 4096 | 32768
"""SUPPRESS_EMBEDS, EPHEMERAL (interactions only), SUPPRESS_NOTIFICATIONS, IS_COMPONENTS_V2."""


class ApiError(Exception):
    """A refusal with Discord's JSON error body; the REST layer turns it into the HTTP response."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            data["errors"] = self.errors
        return data


def form_error(path: str, code: str, message: str) -> ApiError:
    """Discord nests field errors by path: ``embeds.0.description`` → ``{"embeds": {"0": {...}}}``."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


def _too_long(path: str, limit: int) -> ApiError:
    return form_error(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def validate_message_body(body: dict[str, Any], *, allow_ephemeral: bool) -> None:
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        raise form_error("content", "BASE_TYPE_STRING", "Must be a string.")
    if content and len(content) > CONTENT_MAX:
        raise _too_long("content", CONTENT_MAX)
    embeds = body.get("embeds") or []
    if len(embeds) > EMBEDS_MAX:
        raise _too_long("embeds", EMBEDS_MAX)
    total = 0
    for index, embed in enumerate(embeds):
        total += _validate_embed(embed, f"embeds.{index}")
    if total > EMBED_TOTAL_MAX:
        raise form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
    _validate_components(body.get("components") or [])
    flags = int(body.get("flags") or 0)
    allowed = ALLOWED_MESSAGE_FLAGS if allow_ephemeral else ALLOWED_MESSAGE_FLAGS & ~64
    if flags & ~allowed:
        raise form_error("flags", "MESSAGE_FLAGS_INVALID", f"Invalid message flags {flags}.")


def require_not_empty(message: dict[str, Any]) -> None:
    """Applied to the resulting message (after an edit, too): Discord refuses a message with nothing in it."""
    if not (
        message.get("content")
        or message.get("embeds")
        or message.get("attachments")
        or message.get("components")
        or message.get("sticker_ids")
        or message.get("poll")
    ):
        raise ApiError(400, 50006, "Cannot send an empty message")


def _validate_embed(embed: dict[str, Any], path: str) -> int:
    size = 0
    for key, limit in EMBED_LIMITS.items():
        value = embed.get(key) or ""
        if len(value) > limit:
            raise _too_long(f"{path}.{key}", limit)
        size += len(value)
    fields = embed.get("fields") or []
    if len(fields) > EMBED_FIELDS_MAX:
        raise _too_long(f"{path}.fields", EMBED_FIELDS_MAX)
    for index, item in enumerate(fields):
        name, value = item.get("name") or "", item.get("value") or ""
        if not name or not value:
            raise form_error(f"{path}.fields.{index}", "BASE_TYPE_REQUIRED", "This field is required")
        if len(name) > 256:
            raise _too_long(f"{path}.fields.{index}.name", 256)
        if len(value) > 1024:
            raise _too_long(f"{path}.fields.{index}.value", 1024)
        size += len(name) + len(value)
    footer = (embed.get("footer") or {}).get("text") or ""
    author = (embed.get("author") or {}).get("name") or ""
    if len(footer) > 2048:
        raise _too_long(f"{path}.footer.text", 2048)
    if len(author) > 256:
        raise _too_long(f"{path}.author.name", 256)
    return size + len(footer) + len(author)


def _validate_components(rows: list[dict[str, Any]]) -> None:
    if len(rows) > ACTION_ROWS_MAX and not any(r.get("type") != 1 for r in rows):
        raise _too_long("components", ACTION_ROWS_MAX)
    seen: set[str] = set()
    for r_index, row in enumerate(rows):
        items = (row.get("components") or []) if row.get("type") == 1 else [row]
        if row.get("type") == 1 and len(items) > ROW_ITEMS_MAX:
            raise _too_long(f"components.{r_index}.components", ROW_ITEMS_MAX)
        for i_index, item in enumerate(items):
            path = f"components.{r_index}.components.{i_index}"
            custom_id = item.get("custom_id")
            if custom_id is not None:
                if len(custom_id) > CUSTOM_ID_MAX:
                    raise _too_long(f"{path}.custom_id", CUSTOM_ID_MAX)
                if custom_id in seen:
                    raise form_error(
                        f"{path}.custom_id",
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                seen.add(custom_id)
            if item.get("type") == 2:
                if len(item.get("label") or "") > BUTTON_LABEL_MAX:
                    raise _too_long(f"{path}.label", BUTTON_LABEL_MAX)
                if item.get("style") != 5 and item.get("style") != 6 and custom_id is None:
                    raise form_error(f"{path}.custom_id", "BASE_TYPE_REQUIRED", "This field is required")


def validate_thread_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        raise form_error("name", "BASE_TYPE_REQUIRED", "This field is required")
    if len(name) > THREAD_NAME_MAX:
        raise form_error(
            "name", "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {THREAD_NAME_MAX} in length."
        )


def validate_commands(commands: Any) -> None:
    if not isinstance(commands, list):
        raise form_error("_root", "BASE_TYPE_ARRAY", "Must be an array.")
    if len(commands) > COMMANDS_MAX:
        raise _too_long("_root", COMMANDS_MAX)
    seen: set[tuple[str, int]] = set()
    for index, command in enumerate(commands):
        kind = int(command.get("type", 1))
        key = (command.get("name", ""), kind)
        if key in seen:
            raise form_error(
                f"{index}.name",
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                f"Application command names must be unique: {key[0]}",
            )
        seen.add(key)
        _validate_command_node(command, str(index), slash=kind == 1)


def _validate_command_node(node: dict[str, Any], path: str, *, slash: bool) -> None:
    name = node.get("name", "")
    if slash:
        if not COMMAND_NAME.match(name) or name != name.lower():
            raise form_error(
                f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}"
            )
        description = node.get("description", "")
        if not 1 <= len(description) <= 100:
            raise form_error(
                f"{path}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
    elif not 1 <= len(name) <= 32:
        raise form_error(f"{path}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
    options = node.get("options") or []
    if len(options) > OPTIONS_MAX:
        raise _too_long(f"{path}.options", OPTIONS_MAX)
    names: set[str] = set()
    optional_seen = False
    for index, option in enumerate(options):
        option_path = f"{path}.options.{index}"
        if option.get("name") in names:
            raise form_error(
                f"{option_path}.name",
                "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                "Option names must be unique",
            )
        names.add(option.get("name"))
        if option.get("type") in (1, 2):
            _validate_command_node(option, option_path, slash=True)
            continue
        if not COMMAND_NAME.match(option.get("name", "")):
            raise form_error(
                f"{option_path}.name", "APPLICATION_COMMAND_INVALID_NAME", "Option name is invalid"
            )
        if not 1 <= len(option.get("description", "")) <= 100:
            raise form_error(
                f"{option_path}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        if len(option.get("choices") or []) > CHOICES_MAX:
            raise _too_long(f"{option_path}.choices", CHOICES_MAX)
        if option.get("required"):
            if optional_seen:
                raise form_error(
                    f"{option_path}.required",
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            optional_seen = True


def validate_autocomplete(data: dict[str, Any]) -> None:
    if len(data.get("choices") or []) > CHOICES_MAX:
        raise _too_long("data.choices", CHOICES_MAX)


def validate_modal(data: dict[str, Any]) -> None:
    for key, limit in (("custom_id", CUSTOM_ID_MAX), ("title", 45)):
        value = data.get(key)
        if not value:
            raise form_error(f"data.{key}", "BASE_TYPE_REQUIRED", "This field is required")
        if len(value) > limit:
            raise _too_long(f"data.{key}", limit)
    if not 1 <= len(data.get("components") or []) <= 5:
        raise form_error("data.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
