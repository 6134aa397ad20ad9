"""The fake Discord's HTTP layer: parse, record, authenticate, fail on demand, rate-limit, answer.

Route handlers only deal with Discord semantics; everything every route shares happens here, in the
order Discord applies it: unknown route (404, recorded so missing coverage shows), bad token (401),
injected faults (429/5xx/anything), the per-channel write limit, then the handler. Every answer is
``Content-Type: application/json`` exactly — discord.py compares the header verbatim and treats
``application/json; charset=utf-8`` as text, then crashes on it.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.discord_limits import (
    ChannelWriteLimiter,
    FaultInjector,
    rate_limited_body,
    rate_limited_headers,
)
from tests.fakes.discord_records import RateLimitViolation, RecordedFile, RestCall
from tests.fakes.discord_state import FakeState
from tests.fakes.discord_thread_life import GlobalLimit
from tests.fakes.discord_validation import ApiError

API_PREFIX = re.compile(r"^/api/v(9|10)(?=/)")


@dataclass
class RestRequest:
    call: RestCall
    params: dict[str, str]

    @property
    def json(self) -> Any:
        return self.call.json

    @property
    def body(self) -> dict[str, Any]:
        """The JSON object body ({} when absent); a non-object body is refused as Discord would."""
        if self.call.json is None:
            return {}
        if not isinstance(self.call.json, dict):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "_errors": [
                        {
                            "code": "DICT_TYPE_CONVERT",
                            "message": "Only dictionaries may be used in a DictType",
                        }
                    ]
                },
            )
        return self.call.json

    @property
    def files(self) -> list[RecordedFile]:
        return self.call.files

    @property
    def query(self) -> dict[str, str]:
        return self.call.query

    @property
    def seq(self) -> int:
        return self.call.seq


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """JSON-serialisable body; None answers with no body (204)."""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RestRequest], Awaitable[Reply]]


@dataclass
class RouteSpec:
    method: str
    template: str
    handler: Handler
    auth: bool
    channel_write: bool
    pattern: re.Pattern[str]

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {**(headers or {}), "Content-Type": "application/json"}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)


class RestApi:
    def __init__(self, state: FakeState, *, token: str, faults: FaultInjector) -> None:
        self.state = state
        self.token = token
        self.faults = faults
        self.write_limiter: ChannelWriteLimiter | None = None
        self.global_limit: GlobalLimit | None = None
        self.routes: list[RouteSpec] = []
        self._seq = 0

    def add(
        self, method: str, template: str, handler: Handler, *, auth: bool = True, channel_write: bool = False
    ) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(template))
        self.routes.append(
            RouteSpec(method, template, handler, auth, channel_write, re.compile(f"^{regex}$"))
        )

    def match(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        for route in self.routes:
            if route.method == method and (found := route.pattern.match(path)):
                return route, found.groupdict()
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/attachments/"):
            self.state.attachment_downloads += 1
            if self.state.attachment_gate is not None:
                await self.state.attachment_gate.wait()
            return self._attachment(request)
        call = await self._record(request)
        try:
            on_api = API_PREFIX.match(request.path) is not None
            route_and_params = self.match(call.method, call.path) if on_api else None
            if route_and_params is None:
                return self._finish(call, Reply(404, {"message": "404: Not Found", "code": 0}))
            route, params = route_and_params
            call.route = route.name
            if route.auth and request.headers.get("Authorization") != f"Bot {self.token}":
                return self._finish(call, Reply(401, {"message": "401: Unauthorized", "code": 0}))
            if isinstance(call.json, InvalidJson):
                return self._finish(
                    call, Reply(400, {"message": "The request body contains invalid JSON.", "code": 50109})
                )
            fault = self.faults.take(call.method, call.path)
            if fault is not None:
                return self._finish(call, Reply(fault.status, fault.body, dict(fault.headers)))
            if route.auth and self.global_limit is not None:
                refused = self.global_limit.check(call.t, call.method, call.path)
                if refused is not None:
                    return self._finish(call, Reply(*refused))
            limit_headers: dict[str, str] = {}
            if route.channel_write and self.write_limiter is not None:
                decision = self.write_limiter.acquire(int(params["channel_id"]))
                if not decision.allowed:
                    self.state.violations.append(
                        RateLimitViolation(
                            call.t, int(params["channel_id"]), call.method, call.path, decision.retry_after
                        )
                    )
                    headers = {
                        **decision.headers,
                        **rate_limited_headers(decision.retry_after, scope="user", via=True),
                    }
                    return self._finish(
                        call, Reply(429, rate_limited_body(decision.retry_after, is_global=False), headers)
                    )
                limit_headers = decision.headers
            try:
                reply = await route.handler(RestRequest(call, params))
            except ApiError as error:
                reply = Reply(error.status, error.body())
            reply.headers = {**limit_headers, **reply.headers}
            return self._finish(call, reply)
        except Exception as exc:
            # A bug in the fake itself: answer 400 (discord.py would retry a 500 for ~16 s) and remember it.
            self.state.internal_errors.append(f"{call.method} {call.path}: {traceback.format_exc()}")
            return self._finish(
                call, Reply(400, {"message": f"fake Discord internal error: {exc!r}", "code": 0})
            )

    def _finish(self, call: RestCall, reply: Reply) -> web.Response:
        call.status = reply.status
        call.response = reply.body
        self.state.changed()
        if reply.body is None:
            return web.Response(status=204 if reply.status == 200 else reply.status, headers=reply.headers)
        return json_response(reply.status, reply.body, reply.headers)

    async def _record(self, request: web.Request) -> RestCall:
        self._seq += 1
        matched = API_PREFIX.match(request.path)
        path = request.path[matched.end() :] if matched else request.path
        body: Any = None
        files: list[RecordedFile] = []
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = _loads(await part.text())  # type: ignore[union-attr]
                else:
                    data = await part.read()  # type: ignore[union-attr]
                    files.append(
                        RecordedFile(
                            part.name or "",  # type: ignore[union-attr]
                            part.filename or "",  # type: ignore[union-attr]
                            bytes(data),
                            part.headers.get("Content-Type"),  # type: ignore[union-attr]
                        )
                    )
        elif request.can_read_body:
            raw = await request.read()
            if raw:
                body = _loads(raw.decode("utf-8", "replace"))
        call = RestCall(
            seq=self._seq,
            t=time.monotonic(),
            method=request.method,
            path=path,
            query=dict(request.query),
            json=body,
            files=files,
            headers=dict(request.headers),
        )
        self.state.calls.append(call)
        return call

    def _attachment(self, request: web.Request) -> web.StreamResponse:
        """Serve uploaded bytes at the attachment URLs the fake hands out (``Attachment.read()`` works)."""
        parts = request.path.split("/")
        try:
            attachment_id = int(parts[3])
        except (IndexError, ValueError):
            return json_response(404, {"message": "404: Not Found", "code": 0})
        found = self.state.loose_attachments.get(attachment_id)
        if found is None:
            for message in self.state.messages.values():
                found = next((a for a in message.attachments if a.id == attachment_id), None)
                if found is not None:
                    break
        if found is None:
            return json_response(404, {"message": "404: Not Found", "code": 0})
        return web.Response(body=found.data, content_type=found.content_type or "application/octet-stream")


class InvalidJson(str):
    """A body that was not JSON: recorded as sent, refused with Discord's 50109."""


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return InvalidJson(text)
