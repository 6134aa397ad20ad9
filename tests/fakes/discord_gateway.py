"""The fake Discord gateway: one websocket per client, sessions that survive a dropped connection.

Protocol as discord.py 2.7 speaks it: HELLO, IDENTIFY → READY (guilds unavailable) then one GUILD_CREATE
per guild, heartbeats answered with ACKs, RESUME replaying every event the client missed (its ``seq``
onward) then RESUMED. Frames are text JSON; discord.py only decompresses binary frames, so ``compress``
in the URL is ignored. Events are filtered by the intents sent in IDENTIFY, and message content is
blanked for a client without the MESSAGE_CONTENT intent, as Discord does.

Sharding as Discord does it: a session that IDENTIFYs with ``shard: [i, n]`` is sent READY (listing only
its servers), GUILD_CREATE and every other dispatch only for servers with ``(guild_id >> 22) % n == i``;
events without a server (DMs) go to shard 0. A session without ``shard`` receives everything, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_models import (
    INTENT_GUILD_MEMBERS,
    INTENT_MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    guild_payload,
    member_payload,
    user_payload,
    utcnow,
)
from tests.fakes.discord_state import FakeState

(
    HELLO,
    HEARTBEAT,
    IDENTIFY,
    PRESENCE,
    VOICE_STATE,
    RESUME,
    RECONNECT,
    REQUEST_MEMBERS,
    INVALID_SESSION,
    ACK,
) = (
    10,
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
    11,
)
APPLICATION_FLAGS = (1 << 13) | (1 << 15) | (1 << 19)
"""GATEWAY_*_LIMITED: presence, members and message content intents are enabled (as for a small bot)."""
REPLAY_BUFFER = 10_000


@dataclass
class GatewaySession:
    session_id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    buffer: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER))
    connection: GatewayConnection | None = None

    def receives(self, guild_id: int | None) -> bool:
        """Whether this session's shard carries the server's events (DMs: shard 0's)."""
        if self.shard is None:
            return True
        index, count = self.shard
        return ((guild_id or 0) >> 22) % count == index


def guild_of(event: str, data: dict[str, Any]) -> int | None:
    """The server a dispatch belongs to: ``guild_id``, or a guild event's own ``id``; ``None`` for DMs."""
    gid = data.get("guild_id")
    if gid is None and event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"):
        gid = data.get("id")
    return int(gid) if gid is not None else None


class GatewayConnection:
    """One websocket. A single writer task sends queued frames so events keep their order."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: GatewaySession | None = None
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.writer = asyncio.create_task(self._write())

    def send(self, payload: dict[str, Any] | str) -> None:
        self.queue.put_nowait(payload if isinstance(payload, str) else json.dumps(payload))

    async def _write(self) -> None:
        while (frame := await self.queue.get()) is not None:
            if self.ws.closed:
                return
            try:
                await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return

    async def stop(self) -> None:
        self.queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self.writer


class FakeGateway:
    def __init__(
        self,
        state: FakeState,
        *,
        token: str,
        heartbeat_interval_ms: int = 41_250,
        allowed_privileged_intents: int | None = None,
    ) -> None:
        self.state = state
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.allowed_privileged_intents = allowed_privileged_intents
        self.url = ""
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: set[GatewayConnection] = set()
        self.identify_count = 0
        self.resume_count = 0
        self.ready_count = 0
        self.heartbeat_count = 0
        self.failed_resumes = 0
        self.presence_updates: list[dict[str, Any]] = []
        self.close_codes: list[int | None] = []
        self.ack_heartbeats = True
        self._gate = asyncio.Event()
        self._gate.set()
        state.dispatch = self.dispatch

    # ---- test controls -----------------------------------------------------------------------------

    @property
    def has_session(self) -> bool:
        return bool(self.sessions)

    @property
    def connected(self) -> bool:
        return any(s.connection is not None for s in self.sessions.values())

    async def drop(self, *, code: int = 4000, hold: bool = False) -> None:
        """Close every identified connection with ``code`` (4000 is resumable) as a network failure would.

        With ``hold``, new connections wait before HELLO until :meth:`release`, so a test can make
        things happen while the client is away and check they are replayed on RESUME.
        """
        connections = [c for c in self.connections if c.session is not None]
        if not connections:
            raise RuntimeError("fake Discord: no identified gateway connection to drop (is the bot running?)")
        if hold:
            self._gate.clear()
        for connection in connections:
            if connection.session is not None and connection.session.connection is connection:
                connection.session.connection = None
            connection.session = None
            await connection.ws.close(code=code, message=b"fake Discord: connection dropped")
        self.state.changed()

    def release(self) -> None:
        self._gate.set()

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and resumes, as when Discord rotates a gateway node."""
        for connection in list(self.connections):
            if connection.session is not None:
                connection.send({"op": RECONNECT, "d": None})

    def invalidate_sessions(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; unless ``resumable`` the client must IDENTIFY again."""
        for connection in list(self.connections):
            session = connection.session
            if session is None:
                continue
            if not resumable:
                self.sessions.pop(session.session_id, None)
            connection.send({"op": INVALID_SESSION, "d": resumable})

    async def close_all(self) -> None:
        self._gate.set()
        for connection in list(self.connections):
            await connection.ws.close(code=1001, message=b"fake Discord shutting down")

    # ---- dispatch ----------------------------------------------------------------------------------

    def dispatch(
        self, event: str, data: dict[str, Any], *, intent: int, needs_content_intent: bool = False
    ) -> None:
        guild_id = guild_of(event, data)
        for session in list(self.sessions.values()):
            if intent and not session.intents & intent:
                continue
            if not session.receives(guild_id):
                continue
            payload = data
            if needs_content_intent and not session.intents & INTENT_MESSAGE_CONTENT:
                payload = {**data, "content": "", "embeds": [], "attachments": [], "components": []}
                payload.pop("poll", None)
            self._send_dispatch(session, event, payload)

    def _send_dispatch(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": session.seq, "d": data})
        session.buffer.append((session.seq, frame))
        if session.connection is not None:
            session.connection.send(frame)

    # ---- websocket ---------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = GatewayConnection(ws)
        self.connections.add(connection)
        try:
            await self._gate.wait()
            connection.send(
                {"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
            )
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_frame(connection, json.loads(message.data))
                elif message.type is WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
        finally:
            self.close_codes.append(ws.close_code)
            session = connection.session
            if session is not None and session.connection is connection:
                session.connection = None
                if ws.close_code in (1000, 1001):
                    # A clean close ends the session, as on Discord: it cannot be resumed.
                    self.sessions.pop(session.session_id, None)
            self.connections.discard(connection)
            await connection.stop()
            self.state.changed()
        return ws

    async def _on_frame(self, connection: GatewayConnection, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            self.heartbeat_count += 1
            if self.ack_heartbeats:
                connection.send({"op": ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            await self._identify(connection, data or {})
        elif op == RESUME:
            await self._resume(connection, data or {})
        elif op == PRESENCE:
            self.presence_updates.append(data)
        elif op == REQUEST_MEMBERS:
            self._member_chunk(connection, data or {})
        elif op == VOICE_STATE:
            return
        else:
            await connection.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        if connection.session is not None:
            await connection.ws.close(code=4005, message=b"Already authenticated.")
            return
        if data.get("token") != self.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            await connection.ws.close(code=4013, message=b"Invalid intent(s).")
            return
        allowed = self.allowed_privileged_intents
        if allowed is not None and intents & PRIVILEGED_INTENTS & ~allowed:
            await connection.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard")
        if shard is not None and not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(isinstance(x, int) for x in shard)
            and 0 <= shard[0] < shard[1]
        ):
            await connection.ws.close(code=4010, message=b"Invalid shard.")
            return
        session = GatewaySession(secrets.token_hex(16), intents, shard, connection=connection)
        self.sessions[session.session_id] = session
        connection.session = session
        self.identify_count += 1
        state = self.state
        guilds = [g for g in state.guilds.values() if session.receives(g.id)]
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**user_payload(state.bot_user), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.url,
            "application": {"id": str(state.application_id), "flags": APPLICATION_FLAGS},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"],
            "auth": {},
            "user_settings": {},
            "_trace": ["fake-discord"],
        }
        if shard is not None:
            ready["shard"] = shard
        self._send_dispatch(session, "READY", ready)
        joined = utcnow()
        for guild in guilds:
            members = guild.members if intents & INTENT_GUILD_MEMBERS else [state.bot_member(guild)]
            self._send_dispatch(
                session, "GUILD_CREATE", guild_payload(guild, members=members, joined_at=joined)
            )
        self.ready_count += 1
        state.changed()

    async def _resume(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        if data.get("token") != self.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        oldest = session.buffer[0][0] if session and session.buffer else 1
        if session is None or not isinstance(seq, int) or seq < oldest - 1 or seq > session.seq:
            self.failed_resumes += 1
            connection.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        if session.connection is not None and session.connection is not connection:
            stale = session.connection
            stale.session = None
            await stale.ws.close(code=4000, message=b"Session resumed elsewhere.")
        session.connection = connection
        connection.session = session
        for frame_seq, frame in session.buffer:
            if frame_seq > seq:
                connection.send(frame)
        self._send_dispatch(session, "RESUMED", {"_trace": ["fake-discord"]})
        self.resume_count += 1
        self.state.changed()

    def _member_chunk(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        session = connection.session
        guild = self.state.guilds.get(int(data.get("guild_id") or 0))
        if session is None or guild is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = (data.get("query") or "").lower()
        members = [
            m
            for m in guild.members
            if (not wanted or m.id in wanted) and m.user.username.lower().startswith(query)
        ][: data.get("limit") or None]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [member_payload(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        self._send_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)
