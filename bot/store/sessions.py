"""Research sessions, their conversation history and their turns, so a thread can continue after a
restart and a run killed by a crash can be found (and resumed or closed) at start-up.

A session is one /research thread; a turn is one run of the agent inside it (the first task or a
follow-up). History rows are ``agent.messages.Message.to_dict()`` dicts in ``seq`` order.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from typing import Any, TypeVar

from agent.messages import well_formed
from bot.limits import Clock, utc_now
from bot.shards import EVERY_SHARD, ShardOwnership
from bot.store.db import Database, StoreError
from bot.store.session_records import (
    TURN_STATUSES,
    QueuedTurn,
    SessionNotFound,
    SessionRecord,
    SessionStatus,
    TurnRecord,
    TurnStatus,
    check_status,
    columns,
    session_of,
    to_ts,
    turn_of,
)

_COLUMNS = [f.name for f in fields(SessionRecord)]
_INSERT_SESSION = (
    f"INSERT INTO sessions ({', '.join(_COLUMNS)}) VALUES ({', '.join(':' + c for c in _COLUMNS)})"
)
_LATEST_TURN = "SELECT * FROM turns WHERE {} = ? AND superseded_by IS NULL ORDER BY id DESC LIMIT 1"
_R = TypeVar("_R")
STEP_COUNT = "message_count"
"""In a stored checkpoint: how many ``turn_steps`` rows are its messages (rows past it are left over)."""
_SAVE_STEP = (
    "INSERT INTO turn_steps (turn_id, seq, data) VALUES (?,?,?)"
    " ON CONFLICT (turn_id, seq) DO UPDATE SET data = excluded.data"
)


def _json(value: Any, what: str) -> str:
    try:
        return well_formed(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable: {e}") from e


class SessionStore:
    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    # --- sessions ---------------------------------------------------------------------------------

    async def create(self, rec: SessionRecord) -> SessionRecord:
        """Insert a new session; returns it with timestamps filled. A duplicate id is an error."""
        check_status(rec.status)
        now = self.clock()
        created, updated = rec.created_at or now, rec.updated_at or now
        rec = replace(rec, created_at=created, updated_at=updated)
        try:
            await self.db.write(
                _INSERT_SESSION, asdict(rec) | {"created_at": to_ts(created), "updated_at": to_ts(updated)}
            )
        except sqlite3.IntegrityError as e:
            raise StoreError(f"a session with id {rec.id!r} already exists") from e
        return rec

    async def get(self, session_id: str) -> SessionRecord | None:
        return await self._one(session_of, "SELECT * FROM sessions WHERE id = ?", session_id)

    async def by_thread(self, thread_id: int) -> SessionRecord | None:
        """The newest session posted in ``thread_id``."""
        sql = "SELECT * FROM sessions WHERE thread_id = ? ORDER BY created_at DESC, id DESC LIMIT 1"
        return await self._one(session_of, sql, thread_id)

    async def _one(self, make: Callable[[Any], _R], sql: str, *params: Any) -> _R | None:
        row = await self.db.fetchone(sql, params)
        return make(row) if row else None

    async def set_status(self, session_id: str, status: SessionStatus) -> None:
        check_status(status)
        await self._update(session_id, "status = ?", (status,))

    async def set_header(self, session_id: str, message_id: int) -> None:
        await self._update(session_id, "header_message_id = ?", (message_id,))

    async def _update(self, session_id: str, assignment: str, params: tuple[Any, ...]) -> None:
        count, _ = await self.db.write(
            f"UPDATE sessions SET {assignment}, updated_at = ? WHERE id = ?",
            (*params, to_ts(self.clock()), session_id),
        )
        if count == 0:
            raise SessionNotFound(f"no session with id {session_id!r}")

    # --- history ----------------------------------------------------------------------------------

    async def append_messages(
        self, session_id: str, messages: list[dict[str, Any]], *, turn_id: int | None = None
    ) -> int:
        """Append messages atomically (all or none) after the existing ones; returns the last ``seq``."""
        if any(not isinstance(m, dict) or "role" not in m for m in messages):
            raise ValueError("append_messages takes Message.to_dict() dicts, each with a 'role'")
        rows = [_json(m, "each message") for m in messages]
        async with self.db.transaction() as conn:
            found = await conn.execute_fetchall(  # no row: no such session
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE session_id = ?) FROM sessions"
                " WHERE id = ?",
                (session_id, session_id),
            )
            if not found:
                raise SessionNotFound(f"no session with id {session_id!r}")
            base = int(next(iter(found))[0])
            await conn.executemany(
                "INSERT INTO messages (session_id, seq, turn_id, data) VALUES (?,?,?,?)",
                [(session_id, base + i, turn_id, data) for i, data in enumerate(rows, start=1)],
            )
            await conn.execute(
                "UPDATE sessions SET updated_at = ? WHERE id = ?", (to_ts(self.clock()), session_id)
            )
        return base + len(rows)

    async def close_turn(
        self,
        session_id: str,
        status: SessionStatus,
        *,
        messages: Sequence[dict[str, Any]] = (),
        turn_id: int | None = None,
        turn: tuple[TurnStatus, dict[str, Any]] | None = None,
    ) -> None:
        """A turn's closing writes in one transaction: ``messages`` appended to the history (as
        :meth:`append_messages`), ``turn`` (its status and summary, as :meth:`finish_turn`) and the
        session's ``status``. One hop to SQLite's thread instead of seven (append's BEGIN, read, insert,
        update and COMMIT, then two updates), each ~90 us of CPU at 100 sessions (``bench/bot_load.py``);
        and all or nothing, so a call repeated after an outage writes nothing twice."""
        check_status(status)
        if any(not isinstance(m, dict) or "role" not in m for m in messages):
            raise ValueError("close_turn takes Message.to_dict() dicts, each with a 'role'")
        now = to_ts(self.clock())
        statements: list[tuple[str, Sequence[Any]]] = []
        if messages:  # each row after the last, which includes the rows this statement added before it
            statements.append(
                (
                    "INSERT INTO messages (session_id, seq, turn_id, data) VALUES"
                    " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?), ?, ?)",
                    [(session_id, session_id, turn_id, _json(m, "each message")) for m in messages],
                )
            )
        if turn is not None:
            turn_status, summary = turn
            if turn_status not in TURN_STATUSES or turn_status == "running" or turn_id is None:
                raise ValueError(f"close_turn needs a turn id and a final turn status; got {turn_status!r}")
            statements.append(
                (
                    "UPDATE turns SET status = ?, result = ?, finished_at = ? WHERE id = ?",
                    [(turn_status, _json(summary, "the turn result"), now, turn_id)],
                )
            )
        statements.append(
            ("UPDATE sessions SET status = ?, updated_at = ? WHERE id = ?", [(status, now, session_id)])
        )
        try:
            counts = await self.db.write_many(statements)
        except sqlite3.IntegrityError as e:  # messages of no session
            raise SessionNotFound(f"no session with id {session_id!r}") from e
        if counts[-1] == 0:
            raise SessionNotFound(f"no session with id {session_id!r}")
        if turn is not None and counts[-2] == 0:
            raise StoreError(f"no turn with id {turn_id}")

    async def history(self, session_id: str, *, without_turn: int | None = None) -> list[dict[str, Any]]:
        """The conversation the agent sees: superseded turns' messages (and ``without_turn``'s, the turn
        a re-run is about to replace) are left out."""
        rows = await self.db.fetchall(
            "SELECT data FROM messages WHERE session_id = ? AND (turn_id IS NULL OR turn_id NOT IN"
            " (SELECT id FROM turns WHERE session_id = ? AND (superseded_by IS NOT NULL OR id = ?)))"
            " ORDER BY seq",
            (session_id, session_id, without_turn if without_turn is not None else -1),
        )
        return [json.loads(r[0]) for r in rows]

    # --- turns ------------------------------------------------------------------------------------

    async def start_turn(
        self,
        session_id: str,
        prompt: str,
        requester_id: int,
        *,
        queued_id: int | None = None,
        message_id: int | None = None,
        supersedes: int | None = None,
    ) -> int:
        """Open a turn in ``running`` state; returns its id. ``queued_id``: the queued follow-up it
        answers, removed in the same transaction, so after a crash it is either queued or running.
        ``supersedes``: the turn this one re-runs with an edit, marked replaced in the same transaction
        (its messages leave the history)."""
        insert = (
            "INSERT INTO turns (session_id, requester_id, prompt, status, started_at, message_id)"
            " VALUES (?,?,?,'running',?,?)"
        )
        params = (session_id, requester_id, prompt, to_ts(self.clock()), message_id)
        try:
            if queued_id is None and supersedes is None:  # one statement: one hop, not BEGIN, it, COMMIT
                _, turn_id = await self.db.write(insert, params)
                assert turn_id is not None
                return turn_id
            async with self.db.transaction() as conn:
                cur = await conn.execute(insert, params)
                if queued_id is not None:
                    await conn.execute("DELETE FROM queued_turns WHERE id = ?", (queued_id,))
                if supersedes is not None:
                    await conn.execute(
                        "UPDATE turns SET superseded_by = ?, edited_prompt = NULL WHERE id = ?",
                        (cur.lastrowid, supersedes),
                    )
        except sqlite3.IntegrityError as e:
            raise SessionNotFound(f"no session with id {session_id!r}") from e
        assert cur.lastrowid is not None
        return cur.lastrowid

    # --- follow-ups queued behind a running turn ------------------------------------------------

    async def queue_turn(
        self,
        session_id: str,
        prompt: str,
        requester_id: int,
        requester_name: str,
        role_ids: tuple[int, ...],
        message_id: int | None = None,
    ) -> int:
        roles, now = json.dumps(list(role_ids)), to_ts(self.clock())
        _, row_id = await self.db.write(
            "INSERT INTO queued_turns (session_id, requester_id, requester_name, role_ids, prompt, created_at,"
            " message_id) VALUES (?,?,?,?,?,?,?)",
            (session_id, requester_id, requester_name, roles, prompt, now, message_id),
        )
        assert row_id is not None
        return row_id

    async def edit_queued(self, queued_id: int, prompt: str) -> None:
        """A queued follow-up's message was edited before its turn began: it takes the new text."""
        await self.db.write("UPDATE queued_turns SET prompt = ? WHERE id = ?", (prompt, queued_id))

    async def queued_turns(self, owner: ShardOwnership = EVERY_SHARD) -> list[QueuedTurn]:
        """Queued follow-ups of ``owner``'s servers, oldest first (at start-up: the ones a restart left)."""
        rows = await self.db.fetchall(
            "SELECT q.* FROM queued_turns q JOIN sessions s ON s.id = q.session_id"
            f" WHERE {owner.sql('s.guild_id')} ORDER BY q.id"
        )
        return [
            QueuedTurn(**{**columns(r, exclude="created_at"), "role_ids": tuple(json.loads(r["role_ids"]))})
            for r in rows
        ]

    async def drop_queued(self, queued_id: int) -> None:
        """A queued follow-up that will not run (refused, or its thread is gone)."""
        await self.db.write("DELETE FROM queued_turns WHERE id = ?", (queued_id,))

    async def finish_turn(self, turn_id: int, status: TurnStatus, result: dict[str, Any]) -> None:
        if status not in TURN_STATUSES or status == "running":
            allowed = ", ".join(s for s in TURN_STATUSES if s != "running")
            raise ValueError(f"finish_turn status must be one of {allowed}; got {status!r}")
        result_text = _json(result, "the turn result")
        await self._update_turn(turn_id, "status = ?, result = ?, finished_at = ?", status, result_text)

    async def request_stop(self, turn_id: int, by: str) -> None:
        """A member stopped the running turn: kept in its result (empty while it runs) before they are
        told, so a kill before the turn has settled still ends it as stopped at the next start
        (``bot.turn_end``). A turn that has finished meanwhile keeps its own result."""
        await self.db.write(
            "UPDATE turns SET result = ? WHERE id = ? AND status = 'running'",
            (_json({"stopped_by": by}, "the stop"), turn_id),
        )

    async def checkpoint(
        self, turn_id: int, state: dict[str, Any], *, messages: Sequence[dict[str, Any]] = (), start: int = 0
    ) -> None:
        """Replace the turn's saved state (only the latest is kept). ``messages``: the run's messages from
        position ``start`` on, those before it saved by an earlier checkpoint of this turn; a step saves
        only its own (each one row of ``turn_steps``, see migration 7), and the state read back while the
        turn runs holds all of them as ``"messages"``."""
        if messages or start:
            state = {**state, STEP_COUNT: start + len(messages)}
        now = to_ts(self.clock())
        try:
            (count, _) = await self.db.write_many(
                [
                    ("UPDATE turns SET state = ?, checkpointed_at = ? WHERE id = ?",
                     [(_json(state, "the checkpoint state"), now, turn_id)]),
                    (_SAVE_STEP, [(turn_id, start + i, _json(m, "each message"))
                                  for i, m in enumerate(messages, start=1)]),
                ]
            )  # fmt: skip
        except sqlite3.IntegrityError:  # a step of no turn
            count = 0
        if count == 0:
            raise StoreError(f"no turn with id {turn_id}")

    async def _update_turn(self, turn_id: int, assignment: str, *params: Any) -> None:
        """``assignment``'s last ``?`` is the time now."""
        count, _ = await self.db.write(
            f"UPDATE turns SET {assignment} WHERE id = ?", (*params, to_ts(self.clock()), turn_id)
        )
        if count == 0:
            raise StoreError(f"no turn with id {turn_id}")

    async def turns(self, session_id: str) -> list[TurnRecord]:
        rows = await self.db.fetchall("SELECT * FROM turns WHERE session_id = ? ORDER BY id", (session_id,))
        return [await self._with_steps(turn_of(r)) for r in rows]

    async def turn_for_message(self, message_id: int) -> TurnRecord | None:
        """The turn a Discord message asked for (its latest re-run, if it was re-run)."""
        return await self._one_turn(_LATEST_TURN.format("message_id"), message_id)

    async def latest_turn(self, session_id: str) -> TurnRecord | None:
        """The session's last turn that was not replaced by a re-run."""
        return await self._one_turn(_LATEST_TURN.format("session_id"), session_id)

    async def _one_turn(self, sql: str, *params: Any) -> TurnRecord | None:
        turn = await self._one(turn_of, sql, *params)
        return await self._with_steps(turn) if turn is not None else None

    async def _with_steps(self, turn: TurnRecord) -> TurnRecord:
        """A running turn's checkpointed messages into its state (a finished turn's rows are gone: its
        messages are in the history)."""
        count = turn.state.pop(STEP_COUNT, None) if turn.state else None
        if count is not None and turn.status == "running":
            rows = await self.db.fetchall(
                "SELECT data FROM turn_steps WHERE turn_id = ? AND seq <= ? ORDER BY seq", (turn.id, count)
            )
            assert turn.state is not None
            turn.state["messages"] = [json.loads(r[0]) for r in rows]
        return turn

    async def set_edited(self, turn_id: int, prompt: str) -> None:
        """Keep a finished turn's edited text for its "Re-run with the edit" button (the latest edit wins)."""
        await self.db.write("UPDATE turns SET edited_prompt = ? WHERE id = ?", (prompt, turn_id))

    async def stopped_waiting(self, owner: ShardOwnership = EVERY_SHARD) -> list[SessionRecord]:
        """``owner``'s sessions whose turn a member stopped while it waited for a run slot, and whose
        header had not said so yet when the bot was killed (``SessionRunner.stop``)."""
        sql = f"SELECT * FROM sessions WHERE status = 'stopped' AND {owner.sql('guild_id')} ORDER BY id"
        return [session_of(r) for r in await self.db.fetchall(sql)]

    async def running_turns(self, owner: ShardOwnership = EVERY_SHARD) -> list[TurnRecord]:
        """``owner``'s turns still marked ``running``: at start-up, the ones a crash or kill interrupted
        (another shard process's are live, not interrupted)."""
        rows = await self.db.fetchall(
            "SELECT t.* FROM turns t JOIN sessions s ON s.id = t.session_id"
            f" WHERE t.status = 'running' AND {owner.sql('s.guild_id')} ORDER BY t.id"
        )
        return [await self._with_steps(turn_of(r)) for r in rows]
