"""Sessions, history and turns: what a thread needs to continue after a restart or a crash."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.messages import Message, ToolCall
from bot.store import (
    SessionNotFound,
    SessionRecord,
    SessionStore,
    StoreError,
    new_session_id,
    open_database,
)
from tests.conftest import StoreTarget

ROOT = Path(__file__).resolve().parents[1]


def record(session_id: str, thread_id: int | None = 900) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        guild_id=1,
        channel_id=10,
        thread_id=thread_id,
        user_id=7,
        task="compare sqlite and postgres",
        tier="fast",
        model="llama-3.1-8b",
    )


async def test_session_history_and_turns_survive_reopening(store_target: StoreTarget) -> None:
    path = await store_target()
    sid = new_session_id()
    conversation = [
        Message("user", "compare sqlite and postgres"),
        Message("assistant", "", tool_calls=[ToolCall("c1", "web_search", '{"q": "sqlite vs postgres"}')]),
        Message("tool", "results…", tool_call_id="c1", name="web_search"),
        Message("assistant", "SQLite is embedded; Postgres is a server. Ünïcode kept."),
    ]
    async with await open_database(path) as db:
        store = SessionStore(db)
        created = await store.create(record(sid))
        assert created.created_at is not None and created.status == "idle"
        turn = await store.start_turn(sid, "compare sqlite and postgres", requester_id=7)
        await store.set_status(sid, "running")
        await store.set_header(sid, 5555)
        await store.append_messages(sid, [m.to_dict() for m in conversation[:2]], turn_id=turn)
        await store.append_messages(sid, [m.to_dict() for m in conversation[2:]], turn_id=turn)
        await store.finish_turn(turn, "completed", {"text": "SQLite is embedded", "steps": 2})
        await store.set_status(sid, "done")

    async with await open_database(path) as db:
        store = SessionStore(db)
        again = await store.by_thread(900)
        assert again is not None and again.id == sid
        assert (again.status, again.header_message_id, again.model) == ("done", 5555, "llama-3.1-8b")
        history = [Message.from_dict(d) for d in await store.history(sid)]
        assert history == conversation
        (t,) = await store.turns(sid)
        assert (t.status, t.result, t.requester_id) == (
            "completed",
            {"text": "SQLite is embedded", "steps": 2},
            7,
        )
        assert await store.running_turns() == []


async def test_a_queued_follow_up_is_kept_until_its_turn_opens(store_target: StoreTarget) -> None:
    """Migration 4 on both backends: a follow-up queued behind a running turn survives reopening, in
    order, and leaves the queue in the same transaction that opens its turn (never both, never neither)."""
    path = await store_target()
    sid = new_session_id()
    async with await open_database(path) as db:
        store = SessionStore(db)
        await store.create(record(sid))
        await store.start_turn(sid, "first", requester_id=7)
        big_role = 2**60  # Discord ids pass 2**53: kept exactly
        q1 = await store.queue_turn(sid, "and Ünïcode?", 8, "bob", (big_role, 3))
        q2 = await store.queue_turn(sid, "third", 7, "alice", ())
        await store.drop_queued(q2)
        await store.queue_turn(sid, "fourth", 7, "alice", ())

    async with await open_database(path) as db:
        store = SessionStore(db)
        first, fourth = await store.queued_turns()
        assert (first.id, first.prompt, first.requester_id, first.requester_name, first.role_ids) == (
            q1,
            "and Ünïcode?",
            8,
            "bob",
            (2**60, 3),
        )
        assert fourth.prompt == "fourth" and fourth.id > q1
        turn = await store.start_turn(sid, first.prompt, first.requester_id, queued_id=first.id)
        assert [q.prompt for q in await store.queued_turns()] == ["fourth"]
        assert [t.prompt for t in await store.turns(sid)] == ["first", "and Ünïcode?"]
        assert turn == (await store.turns(sid))[-1].id
        with pytest.raises(SessionNotFound):
            await store.start_turn("no-such-session", "x", requester_id=7, queued_id=fourth.id)
        assert [q.prompt for q in await store.queued_turns()] == ["fourth"]  # rolled back with it


async def test_a_checkpoint_saves_only_a_steps_new_messages_and_reads_back_whole(
    store_target: StoreTarget,
) -> None:
    """Migration 7 on both backends: each step's checkpoint writes its own messages (one row each), a
    running turn reads back all of them in order, a replaced message wins over the stale row, and the
    rows go when the turn ends (its messages are then in the history)."""
    path = await store_target()
    msgs = [{"role": "user", "content": "task"}, *({"role": "tool", "content": f"r{i} Ü"} for i in range(4))]
    async with await open_database(path) as db:
        store = SessionStore(db)
        await store.create(record("s"))
        turn = await store.start_turn("s", "task", requester_id=7)
        await store.checkpoint(turn, {"attachments": [["a.txt", "u", 1, None]]})  # before step 1
        await store.checkpoint(turn, {"step": 1}, messages=msgs[:3])
        await store.checkpoint(turn, {"step": 2}, messages=msgs[3:], start=3)
        with pytest.raises(StoreError, match="no turn"):
            await store.checkpoint(turn + 99, {"step": 1}, messages=msgs[:1])

    async with await open_database(path) as db:  # as after a crash
        store = SessionStore(db)
        (running,) = await store.running_turns()
        assert running.state == {"step": 2, "messages": msgs}
        steps = await db.fetchall("SELECT seq, data FROM turn_steps WHERE turn_id = ? ORDER BY seq", (turn,))
        assert [r[0] for r in steps] == [1, 2, 3, 4, 5]  # each message once
        # a history replaced from its second message on, shorter than before: no stale row shows
        await store.checkpoint(turn, {"step": 3}, messages=[{"role": "user", "content": "new"}], start=1)
        assert (await store.latest_turn("s")).state == {
            "step": 3,
            "messages": [msgs[0], {"role": "user", "content": "new"}],
        }  # type: ignore[union-attr]
        await store.finish_turn(turn, "completed", {})
        assert await db.fetchall("SELECT seq FROM turn_steps") == []
        (done,) = await store.turns("s")
        assert done.state == {"step": 3}


async def test_concurrent_appends_never_interleave_or_lose_messages(store_target: StoreTarget) -> None:
    async with await open_database(await store_target()) as db:
        store = SessionStore(db)
        await store.create(record("s"))

        async def writer(name: str) -> None:
            for i in range(5):
                batch = [
                    {"role": "user", "content": f"{name}{i}a"},
                    {"role": "assistant", "content": f"{name}{i}b"},
                ]
                await store.append_messages("s", batch)

        await asyncio.gather(*(writer(n) for n in "ABCD"))
        contents = [m["content"] for m in await store.history("s")]
        assert len(contents) == 40
        pairs = list(zip(contents[::2], contents[1::2], strict=True))
        assert all(a[:-1] == b[:-1] for a, b in pairs)  # every batch stayed together, in order


async def test_bad_input_is_refused_with_a_clear_error(store_target: StoreTarget) -> None:
    async with await open_database(await store_target()) as db:
        store = SessionStore(db)
        await store.create(record("s"))
        with pytest.raises(ValueError, match="idle, running, stopped, failed, done"):
            await store.set_status("s", "paused")  # type: ignore[arg-type]
        with pytest.raises(SessionNotFound, match="nope"):
            await store.set_status("nope", "done")
        with pytest.raises(SessionNotFound):
            await store.append_messages("nope", [{"role": "user", "content": "x"}])
        with pytest.raises(SessionNotFound):
            await store.start_turn("nope", "x", 1)
        with pytest.raises(ValueError, match="each with a 'role'"):
            await store.append_messages("s", [{"content": "no role"}])
        turn = await store.start_turn("s", "x", 1)
        with pytest.raises(ValueError, match="done, stopped, failed, interrupted, completed"):
            await store.finish_turn(turn, "running", {})
        with pytest.raises(ValueError, match="got 'paused'"):
            await store.finish_turn(turn, "paused", {})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="JSON"):
            await store.checkpoint(turn, {"when": object()})
        assert await store.history("s") == []  # nothing half-written


CRASHING_RUN = """
import asyncio, os, sys
from agent.events import Usage
from bot.limits import Limits
from bot.store import QuotaStore, SessionRecord, SessionStore
from bot.store import open_database

async def main():
    db = await open_database(sys.argv[1])
    store = SessionStore(db)
    await store.create(SessionRecord(id="s", guild_id=1, channel_id=10, thread_id=900, user_id=7,
                                     task="long task", tier="fast", model="m", status="running"))
    turn = await store.start_turn("s", "long task", 7)
    await store.append_messages("s", [{"role": "user", "content": "long task"}], turn_id=turn)
    await store.checkpoint(turn, {"step": 3, "notes": "half done"})
    quotas = QuotaStore(db, None, Limits(tokens_per_day=1000))
    assert (await quotas.begin_session(1, 7, [], "s")).allowed
    await quotas.budget(1, 7, [], "s").reserve("m", Usage(600, 0), None)
    os._exit(0)  # killed mid-run: no finish_turn, no settle, no close

asyncio.run(main())
"""


async def test_a_run_killed_mid_turn_is_found_at_start_up(store_target: StoreTarget) -> None:
    from bot.limits import Limits
    from bot.store import QuotaStore

    path = await store_target()
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", textwrap.dedent(CRASHING_RUN), str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr

    async with await open_database(path) as db:
        store = SessionStore(db)
        (turn,) = await store.running_turns()
        assert (turn.session_id, turn.prompt, turn.state) == (
            "s",
            "long task",
            {"step": 3, "notes": "half done"},
        )
        assert await store.history("s") == [{"role": "user", "content": "long task"}]

        quotas = QuotaStore(db, None, Limits(tokens_per_day=1000, concurrent_sessions=1))
        before = await quotas.usage(1, 7)
        assert before.item("tokens_per_day").used == 600  # the dead run's reservation still holds room
        assert before.item("concurrent_sessions").used == 1
        assert await quotas.recover() == (1, 1)
        after = await quotas.usage(1, 7)
        assert after.item("tokens_per_day").used == 0
        assert (await quotas.check(1, 7)).allowed

        await store.finish_turn(turn.id, "interrupted", {"error": "the bot restarted"})
        assert await store.running_turns() == []
