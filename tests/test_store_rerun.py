"""Edit to re-run in the store (migration 5, both backends): a turn knows the message that asked for it,
keeps an edit waiting behind its button, and a re-run supersedes it, taking its messages out of the
conversation the agent sees while keeping them stored."""

from __future__ import annotations

from bot.store import SessionRecord, SessionStore, new_session_id, open_database
from tests.conftest import StoreTarget

BIG = 2**60  # Discord ids pass 2**53: kept exactly


def record(session_id: str) -> SessionRecord:
    return SessionRecord(
        id=session_id, guild_id=1, channel_id=10, thread_id=900, user_id=7, task="t", tier="fast", model="m"
    )


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


async def test_a_re_run_supersedes_the_turn_and_its_messages_leave_the_history(
    store_target: StoreTarget,
) -> None:
    path = await store_target()
    sid = new_session_id()
    async with await open_database(path) as db:
        store = SessionStore(db)
        await store.create(record(sid))
        first = await store.start_turn(sid, "first question", 7)
        await store.append_messages(
            sid, [msg("user", "first question"), msg("assistant", "A1")], turn_id=first
        )
        await store.finish_turn(first, "completed", {})
        typo = await store.start_turn(sid, "waht is 2+2", 7, message_id=BIG)
        await store.append_messages(sid, [msg("user", "waht is 2+2"), msg("assistant", "A2")], turn_id=typo)
        await store.finish_turn(typo, "completed", {})
        await store.set_edited(typo, "what is 2+2")

    async with await open_database(path) as db:
        store = SessionStore(db)
        found = await store.turn_for_message(BIG)
        assert found is not None and (found.id, found.edited_prompt) == (typo, "what is 2+2")
        assert (await store.latest_turn(sid)).id == typo  # type: ignore[union-attr]
        # What the re-run reads before it is allowed to start: the old turn already left out.
        assert [m["content"] for m in await store.history(sid, without_turn=typo)] == ["first question", "A1"]
        again = await store.start_turn(sid, "what is 2+2", 7, message_id=BIG, supersedes=typo)
        await store.append_messages(sid, [msg("user", "what is 2+2"), msg("assistant", "4")], turn_id=again)
        assert [m["content"] for m in await store.history(sid)] == [
            "first question",
            "A1",
            "what is 2+2",
            "4",
        ]
        old = next(t for t in await store.turns(sid) if t.id == typo)
        assert (old.superseded_by, old.edited_prompt) == (again, None)
        assert (await store.turn_for_message(BIG)).id == again  # type: ignore[union-attr]
        assert (await store.latest_turn(sid)).id == again  # type: ignore[union-attr]
        assert await store.turn_for_message(12345) is None


async def test_a_queued_follow_up_keeps_its_message_and_takes_an_edit(store_target: StoreTarget) -> None:
    path = await store_target()
    sid = new_session_id()
    async with await open_database(path) as db:
        store = SessionStore(db)
        await store.create(record(sid))
        q = await store.queue_turn(sid, "typo", 7, "alice", (), BIG)
        await store.edit_queued(q, "fixed")
    async with await open_database(path) as db:
        (queued,) = await SessionStore(db).queued_turns()
        assert (queued.prompt, queued.message_id) == ("fixed", BIG)
