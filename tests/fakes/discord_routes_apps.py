"""REST routes of the application side: slash-command registration, interaction callbacks, followups.

Interaction rules as Discord enforces them: one callback per interaction, within the acknowledgement
deadline (3 s; later → 404 "Unknown interaction", code 10062); callbacks answer ``?with_response=1``
with ``{"interaction": …, "resource": …}`` (discord.py ≥ 2.5 parses it); the interaction token works
for followups and ``@original`` for 15 minutes (then 401, code 50027); a followup sent while a deferred
response is still "thinking…" replaces that response instead of adding a message.
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.discord_models import new_snowflake
from tests.fakes.discord_payloads import MESSAGE_CHAT_INPUT, MESSAGE_DEFAULT
from tests.fakes.discord_records import InteractionRecord, MessageRecord
from tests.fakes.discord_rest import Reply, RestApi, RestRequest
from tests.fakes.discord_state import FakeState
from tests.fakes.discord_validation import (
    ApiError,
    form_error,
    validate_autocomplete,
    validate_commands,
    validate_modal,
)

CHANNEL_MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, AUTOCOMPLETE, MODAL = 4, 5, 6, 7, 8, 9
COMPONENT_ONLY = {DEFERRED_UPDATE, UPDATE_MESSAGE}
TOKEN_LIFETIME = 15 * 60


class AppRoutes:
    def __init__(
        self, state: FakeState, *, ack_deadline: float = 3.0, token_lifetime: float = TOKEN_LIFETIME
    ) -> None:
        self.state = state
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime

    def register(self, api: RestApi) -> None:
        add = api.add
        base = "/applications/{application_id}"
        for scope in (base, base + "/guilds/{guild_id}"):
            add("GET", scope + "/commands", self.list_commands)
            add("PUT", scope + "/commands", self.overwrite_commands)
            add("POST", scope + "/commands", self.upsert_command)
            add("GET", scope + "/commands/{command_id}", self.get_command)
            add("PATCH", scope + "/commands/{command_id}", self.edit_command)
            add("DELETE", scope + "/commands/{command_id}", self.delete_command)
        add("POST", "/interactions/{interaction_id}/{token}/callback", self.callback, auth=False)
        add("POST", "/webhooks/{application_id}/{token}", self.followup, auth=False)
        add(
            "GET",
            "/webhooks/{application_id}/{token}/messages/{message_id}",
            self.get_webhook_message,
            auth=False,
        )
        add(
            "PATCH",
            "/webhooks/{application_id}/{token}/messages/{message_id}",
            self.edit_webhook_message,
            auth=False,
        )
        add(
            "DELETE",
            "/webhooks/{application_id}/{token}/messages/{message_id}",
            self.delete_webhook_message,
            auth=False,
        )

    # ---- application commands ----------------------------------------------------------------------

    def _scope(self, req: RestRequest) -> int | None:
        if int(req.params["application_id"]) != self.state.application_id:
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" not in req.params:
            return None
        return self.state.guild(int(req.params["guild_id"])).id

    def _stored(
        self, scope: int | None, command: dict[str, Any], previous: list[dict[str, Any]]
    ) -> dict[str, Any]:
        kind = int(command.get("type", 1))
        same = next((c for c in previous if c["name"] == command["name"] and c["type"] == kind), None)
        stored: dict[str, Any] = {
            "id": same["id"] if same else str(new_snowflake()),
            "application_id": str(self.state.application_id),
            "version": str(new_snowflake()),
            "type": kind,
            "name": command["name"],
            "name_localizations": command.get("name_localizations"),
            "description": command.get("description", ""),
            "description_localizations": command.get("description_localizations"),
            "options": command.get("options") or [],
            "default_member_permissions": command.get("default_member_permissions"),
            "dm_permission": command.get("dm_permission", True),
            "nsfw": bool(command.get("nsfw", False)),
            "integration_types": command.get("integration_types") or [0],
            "contexts": command.get("contexts"),
        }
        if scope is not None:
            stored["guild_id"] = str(scope)
        return stored

    async def list_commands(self, req: RestRequest) -> Reply:
        return Reply(body=self.state.commands.get(self._scope(req), []))

    async def overwrite_commands(self, req: RestRequest) -> Reply:
        scope = self._scope(req)
        validate_commands(req.json)
        previous = self.state.commands.get(scope, [])
        self.state.commands[scope] = [self._stored(scope, c, previous) for c in req.json]
        self.state.changed()
        return Reply(body=self.state.commands[scope])

    async def upsert_command(self, req: RestRequest) -> Reply:
        scope = self._scope(req)
        validate_commands([req.body])
        commands = self.state.commands.setdefault(scope, [])
        stored = self._stored(scope, req.body, commands)
        commands[:] = [c for c in commands if c["id"] != stored["id"]] + [stored]
        self.state.changed()
        return Reply(201, stored)

    def _command(self, req: RestRequest) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        commands = self.state.commands.get(self._scope(req), [])
        found = next((c for c in commands if c["id"] == req.params["command_id"]), None)
        if found is None:
            raise ApiError(404, 10063, "Unknown application command")
        return commands, found

    async def get_command(self, req: RestRequest) -> Reply:
        return Reply(body=self._command(req)[1])

    async def edit_command(self, req: RestRequest) -> Reply:
        _, found = self._command(req)
        updated = {**found, **{k: v for k, v in req.body.items() if k in ("name", "description", "options")}}
        validate_commands([updated])
        found.update(updated, version=str(new_snowflake()))
        self.state.changed()
        return Reply(body=found)

    async def delete_command(self, req: RestRequest) -> Reply:
        commands, found = self._command(req)
        commands.remove(found)
        self.state.changed()
        return Reply(204)

    # ---- interaction callback ----------------------------------------------------------------------

    async def callback(self, req: RestRequest) -> Reply:
        record = self.state.interactions.get(_int(req.params["interaction_id"]))
        if record is None or record.token != req.params["token"]:
            raise ApiError(404, 10062, "Unknown interaction")
        if record.responses:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - record.t > self.ack_deadline:
            record.late_callbacks += 1
            self.state.changed()
            raise ApiError(404, 10062, "Unknown interaction")
        body = req.body
        kind, data = body.get("type"), body.get("data") or {}
        if kind in COMPONENT_ONLY and record.type != 3:
            raise form_error(
                "type",
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Response type {kind} is only valid for components",
            )
        state = self.state
        info: dict[str, Any] = {"id": str(record.id), "type": record.type}
        resource: dict[str, Any] = {"type": kind}
        message: MessageRecord | None = None
        if kind == CHANNEL_MESSAGE:
            message = state.create_message(
                state.channel(record.channel_id),
                state.bot_user,
                data,
                req.files,
                via="interaction",
                call_seq=req.seq,
                message_type=MESSAGE_CHAT_INPUT if record.type == 2 else MESSAGE_DEFAULT,
                interaction=record,
                webhook_id=state.application_id,
                allow_ephemeral=True,
            )
        elif kind == DEFERRED_MESSAGE:
            message = state.create_message(
                state.channel(record.channel_id),
                state.bot_user,
                {"flags": int(data.get("flags") or 0) & 64},
                via="interaction",
                call_seq=req.seq,
                message_type=MESSAGE_CHAT_INPUT if record.type == 2 else MESSAGE_DEFAULT,
                interaction=record,
                webhook_id=state.application_id,
                allow_ephemeral=True,
                allow_empty=True,
                extra_flags=128,
            )
        elif kind == DEFERRED_UPDATE:
            record.original_message_id = record.message_id
        elif kind == UPDATE_MESSAGE:
            target = state.messages[record.message_id or 0]
            message = state.edit_message(target, data, req.files, via="interaction", call_seq=req.seq)
            record.original_message_id = target.id
        elif kind == AUTOCOMPLETE:
            validate_autocomplete(data)
        elif kind == MODAL:
            validate_modal(data)
        else:
            raise form_error(
                "type", "INTERACTION_RESPONSE_TYPE_INVALID", f"Unsupported interaction response type {kind!r}"
            )
        if message is not None:
            if kind in (CHANNEL_MESSAGE, DEFERRED_MESSAGE):
                record.original_message_id = message.id
            info.update(
                response_message_id=str(message.id),
                response_message_loading=message.loading,
                response_message_ephemeral=message.ephemeral,
            )
            resource["message"] = state.message_payload(message)
        record.responses.append(body)
        state.changed()
        return Reply(body={"interaction": info, "resource": resource})

    # ---- followups and @original -------------------------------------------------------------------

    def _interaction(self, req: RestRequest) -> InteractionRecord:
        if _int(req.params["application_id"]) != self.state.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        record = self.state.interactions_by_token.get(req.params["token"])
        if record is None:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if record.token_expired or time.monotonic() - record.t > self.token_lifetime:
            record.token_expired = True
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return record

    def _webhook_message(self, req: RestRequest, record: InteractionRecord) -> MessageRecord:
        key = req.params["message_id"]
        message_id = record.original_message_id if key == "@original" else _int(key)
        message = self.state.messages.get(message_id or 0)
        owned = message is not None and (
            message.interaction_id == record.id or message.id == record.message_id
        )
        if message is None or message.deleted or not owned:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    async def followup(self, req: RestRequest) -> Reply:
        record = self._interaction(req)
        if not record.responses:
            raise ApiError(404, 10015, "Unknown Webhook")
        state = self.state
        original = state.messages.get(record.original_message_id or 0)
        if original is not None and original.loading and not original.deleted:
            body = {k: v for k, v in req.body.items() if k != "flags"}
            message = state.edit_message(
                original, body, req.files, via="webhook", call_seq=req.seq, clear_loading=True
            )
        else:
            message = state.create_message(
                state.channel(record.channel_id),
                state.bot_user,
                req.body,
                req.files,
                via="webhook",
                call_seq=req.seq,
                interaction=record,
                webhook_id=state.application_id,
                allow_ephemeral=True,
            )
            record.followup_ids.append(message.id)
        if req.query.get("wait", "0").lower() in ("1", "true"):
            return Reply(body=state.message_payload(message))
        return Reply(204)

    async def get_webhook_message(self, req: RestRequest) -> Reply:
        record = self._interaction(req)
        return Reply(body=self.state.message_payload(self._webhook_message(req, record)))

    async def edit_webhook_message(self, req: RestRequest) -> Reply:
        record = self._interaction(req)
        message = self._webhook_message(req, record)
        self.state.edit_message(
            message, req.body, req.files, via="webhook", call_seq=req.seq, clear_loading=message.loading
        )
        return Reply(body=self.state.message_payload(message))

    async def delete_webhook_message(self, req: RestRequest) -> Reply:
        record = self._interaction(req)
        self.state.delete_message(self._webhook_message(req, record), via="webhook", call_seq=req.seq)
        return Reply(204)


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None
