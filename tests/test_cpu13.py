"""Bot CPU per agent step (``bench/bot_load.py``, issue 18.1), session 13: hand-offs to SQLite's thread.

A hop to aiosqlite's thread and back cost ~90 us of CPU per hop at 100 sessions (measured by adding one
no-op hop before each: +0.62 / +0.77 ms per step for 45 more hops a run), so each cut is pinned here by
the hops that are gone, with what a member or operator reads afterwards unchanged. No timed assertions;
the figures are in the commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.events import Cost, RunResult, Usage
from agent.messages import Message
from bot.checkpoint import closing_writes
from bot.store import SessionRecord, SessionStore, new_session_id, open_database
from tests.conftest import StoreTarget


@contextmanager
def hops_to_writer(db: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every hand-off to a SQLite connection's thread (writer or reader) while the block runs (none on PostgreSQL)."""
    hops: list[str] = []
    conn = getattr(db, "conn", None)
    if conn is None:
        yield hops
        return
    real = type(conn)._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self is conn or self is db.reader:  # the read-only connection's thread: a hop as well
            hops.append(str(args[0]) if args and isinstance(args[0], str) else getattr(fn, "__name__", "?"))
        return await real(self, fn, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(type(conn), "_execute", counted)
        yield hops


def _result(*messages: Message) -> RunResult:
    return RunResult(
        "4", "completed", 2, Usage(30, 5, requests=2), Cost(0.0001), ["gpt-4o-mini"], messages=list(messages)
    )


async def test_a_turns_closing_writes_are_one_transaction(
    store_target: StoreTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of a turn was seven hops (append's BEGIN, read of the last seq, insert, update, COMMIT;
    the turn's summary; the session's status); now one transaction, the same rows after it: the run's
    messages after the earlier turns', the turn's summary, the session idle."""
    async with await open_database(await store_target()) as db:
        store, sid = SessionStore(db), new_session_id()
        await store.create(
            SessionRecord(
                id=sid, guild_id=1, channel_id=10, thread_id=20, user_id=7, task="t", tier="simple", model="m"
            )
        )
        first = await store.start_turn(sid, "what is 1+1", requester_id=7)
        await store.append_messages(sid, [Message("user", "what is 1+1").to_dict()], turn_id=first)
        await store.append_messages(sid, [Message("assistant", "2").to_dict()], turn_id=first)
        turn = await store.start_turn(sid, "and 2+2?", requester_id=7)
        await store.set_status(sid, "running")
        run = [Message("user", "and 2+2?"), Message("assistant", "4")]
        writes = closing_writes(store, sid, turn, _result(*run), "done", [])
        with hops_to_writer(db, monkeypatch) as hops:
            await writes()
            await writes()  # called again (as after an outage): nothing is written twice
        if db.backend == "sqlite":
            assert len(hops) == 1, hops
        history = await store.history(sid)
        assert [(m["role"], m["content"]) for m in history] == [
            ("user", "what is 1+1"),
            ("assistant", "2"),
            ("user", "and 2+2?"),
            ("assistant", "4"),
        ]
        finished = await store.latest_turn(sid)
        assert finished is not None and finished.id == turn
        assert finished.status == "completed" and finished.finished_at is not None
        assert finished.result is not None and finished.result["text"] == "4"
        assert finished.result["tokens"] == 35
        session = await store.get(sid)
        assert session is not None and session.status == "idle"
        # A failed turn adds nothing to the history; its session says failed.
        failed = await store.start_turn(sid, "and 3+3?", requester_id=7)
        await closing_writes(store, sid, failed, _result(Message("user", "and 3+3?")), "failed", [])()
        assert len(await store.history(sid)) == 4
        session = await store.get(sid)
        assert session is not None and session.status == "failed"


async def test_a_turns_start_is_three_hops_not_nine(
    store_target: StoreTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn's start was nine hops (the quota check's BEGIN, read, three counter writes, COMMIT; the turn's
    BEGIN, insert, COMMIT); the check is BEGIN with its read, then its writes with COMMIT, and a turn that
    answers no queued follow-up and replaces none is one insert. The member's slot and request are counted
    as before, once."""
    from bot.limits import Limits
    from bot.store import QuotaStore

    async with await open_database(await store_target()) as db:
        store, quotas, sid = SessionStore(db), QuotaStore(db, None, Limits.unlimited()), new_session_id()
        await store.create(
            SessionRecord(
                id=sid, guild_id=1, channel_id=10, thread_id=20, user_id=7, task="t", tier="simple", model="m"
            )
        )
        with hops_to_writer(db, monkeypatch) as hops:
            began = await quotas.begin_session(1, 7, (), sid)
            turn = await store.start_turn(sid, "what is 1+1", requester_id=7)
        assert began.allowed
        if db.backend == "sqlite":
            assert len(hops) == 3, hops
        row = await db.fetchone("SELECT requests FROM usage_daily WHERE guild_id = 1 AND user_id = 7")
        assert row is not None and row[0] == 1
        assert (await db.fetchone("SELECT COUNT(*) FROM active_sessions WHERE session_id = ?", (sid,)))[
            0
        ] == 1  # type: ignore[index]
        latest = await store.latest_turn(sid)
        assert latest is not None and latest.id == turn and latest.status == "running"


async def test_a_new_sessions_quota_check_is_two_hops_and_refuses_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/research's quota check read the counters (a hop to the reader's thread), then took the slot in a
    transaction that read them again (BEGIN, read, write, COMMIT): five hops. Now the transaction alone,
    BEGIN with its read and the write with COMMIT; a member past a limit is refused with the same words."""
    from agent.config import load_agent_settings
    from bot.config import load_bot_settings
    from bot.control import SessionControl
    from bot.services import build_services

    monkeypatch.setenv("OPENAI_API_KEY", "sk-cpu13-test-0001")
    sv = await build_services(
        load_agent_settings(DATA_DIR=str(tmp_path), ROUTER_CLASSIFIER="heuristic", PYTHON_SANDBOX="off"),
        load_bot_settings(MEMORY_ENABLED=False, QUOTA_REQUESTS_PER_DAY=1),
        serving=False,
    )
    try:
        control = SessionControl(sv, None)  # type: ignore[arg-type]  # may_start needs no runner
        member = SimpleNamespace(id=7, roles=())
        assert (await control.may_start(1, member, "what is 1+1")).allowed  # reads the server's settings once
        with hops_to_writer(sv.db, monkeypatch) as hops:
            first = await control.may_start(1, member, "what is 1+1", "s-first")
        assert first.allowed
        assert len(hops) == 2, hops
        await sv.quotas.begin_session(1, 7, (), "s-first")  # its first turn counts the request
        second = await control.may_start(1, member, "and 2+2?", "s-second")
        told = await control.may_start(1, member, "and 2+2?")  # no session id: the read-only check
        assert not second.allowed and not told.allowed
        assert second.message == told.message and "1 request" in second.message
        assert (await sv.db.fetchone("SELECT COUNT(*) FROM active_sessions"))[0] == 1  # type: ignore[index]
    finally:
        await sv.close()


async def test_the_gateways_echoes_of_bot_messages_are_not_built_into_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each post and edit of the bot came back from the gateway and was built into a ``Message`` (70-84 us
    of CPU each, 1.5 per agent step) that no listener takes. Now only members' messages are built and
    heard; a channel still knows its last message."""
    import discord

    from agent.config import load_agent_settings
    from bot.app import AgentBot
    from bot.config import load_bot_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-cpu13-test-0001")
    bot = AgentBot(
        load_agent_settings(DATA_DIR=str(tmp_path), ROUTER_CLASSIFIER="heuristic", PYTHON_SANDBOX="off"),
        load_bot_settings(MEMORY_ENABLED=False),
    )
    await bot._async_setup_hook()  # the loop, as login sets it
    state = bot._connection
    state._add_guild_from_data(
        {
            "id": "1",
            "name": "Lab",
            "channels": [
                {"id": "10", "type": 0, "name": "general", "position": 0, "permission_overwrites": []}
            ],
            "roles": [],
            "members": [],
        }
    )
    built: list[str] = []
    real = discord.Message.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(kwargs["data"]["content"])
        real(self, *args, **kwargs)

    monkeypatch.setattr(discord.Message, "__init__", counting)
    heard: list[str] = []

    async def on_message(message: discord.Message) -> None:
        heard.append(message.content)

    bot.add_listener(on_message, "on_message")

    def message(mid: int, content: str, *, by_bot: bool) -> dict[str, Any]:
        author = {"id": "99" if by_bot else "7", "username": "agentbot" if by_bot else "alice", "bot": by_bot}
        author |= {"discriminator": "0", "avatar": None, "global_name": None}
        return {"id": str(mid), "channel_id": "10", "guild_id": "1", "author": author, "content": content,
                "timestamp": "2026-12-06T03:00:00+00:00", "edited_timestamp": None, "tts": False,
                "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
                "pinned": False, "type": 0}  # fmt: skip

    state.parsers["MESSAGE_CREATE"](message(501, "🔎 step 1", by_bot=True))
    state.parsers["MESSAGE_UPDATE"](message(501, "🔎 step 2", by_bot=True))
    state.parsers["MESSAGE_CREATE"](message(502, "and what about 3+3?", by_bot=False))
    await asyncio.sleep(0.05)
    assert built == ["and what about 3+3?"]
    assert heard == ["and what about 3+3?"]
    channel = bot.get_channel(10)
    assert isinstance(channel, discord.TextChannel) and channel.last_message_id == 502
    state.parsers["MESSAGE_CREATE"](message(503, "answer", by_bot=True))
    assert channel.last_message_id == 503 and len(built) == 1
