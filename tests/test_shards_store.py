"""Shard processes sharing one store (issue 18.3): each recovers only its own servers at start-up, and a
server setting changed by one process applies in the others at once (PostgreSQL NOTIFY)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from types import SimpleNamespace

import asyncpg
import pytest

from agent.config import ConfigError
from agent.events import Usage
from bot.cogs.usage import usage_line
from bot.config import load_bot_settings
from bot.limits import ALL_SERVERS_REQUESTS, Limits
from bot.resume import resume_interrupted
from bot.runner import SessionRunner
from bot.shards import ShardOwnership, shard_of
from bot.store import (
    GuildSettingsStore,
    QuotaStore,
    SessionRecord,
    SessionStore,
    SettingsSchema,
    open_database,
)
from bot.store.pg import PgDatabase
from bot.store.settings_sync import SettingsListener
from tests.conftest import StoreTarget
from tests.fakes.postgres import PostgresServer

G0, G1 = 1000 << 22, 1001 << 22
"""Two servers on shards 0 and 1 of 2, as Discord assigns them."""
SHARD0, SHARD1 = ShardOwnership.of(2, [0]), ShardOwnership.of(2, [1])


async def _create(sessions: SessionStore, sid: str, gid: int | None) -> None:
    rec = SessionRecord(
        id=sid, guild_id=gid, channel_id=10, thread_id=900, user_id=7, task="t", tier="medium", model="m"
    )
    await sessions.create(rec)


def test_ownership_follows_discords_rule_and_direct_messages_are_shard_zeros() -> None:
    assert (shard_of(G0, 2), shard_of(G1, 2), shard_of(None, 2)) == (0, 1, 0)
    assert SHARD0.owns(G0) and SHARD0.owns(None) and not SHARD0.owns(G1)
    assert SHARD1.owns(G1) and not SHARD1.owns(None)
    # One process holding every shard (or no sharding at all) owns everything, as before.
    assert ShardOwnership.of(2, [0, 1]).shard_ids is None and ShardOwnership.of(None, None).owns(G1)
    # Discord's global request limit is the bot's: a process takes its shards' share of the budget.
    assert (SHARD0.share, ShardOwnership.of(4, [1, 3]).share, ShardOwnership.of(None, None).share) == (
        0.5,
        0.5,
        1.0,
    )


async def test_a_shard_process_resumes_and_recovers_only_its_own_servers(store_target: StoreTarget) -> None:
    async with await open_database(await store_target()) as db:
        sessions = SessionStore(db)
        quotas = QuotaStore(db, None, Limits(tokens_per_day=10_000, concurrent_sessions=1))
        for sid, gid in (("s0", G0), ("s1", G1), ("dm", None)):
            await _create(sessions, sid, gid)
            await sessions.start_turn(sid, f"interrupted in {sid}", 7)
            await sessions.queue_turn(sid, f"queued in {sid}", 7, "alice", ())
            assert (await quotas.begin_session(gid, 7, (), sid)).allowed
            await quotas.budget(gid, 7, (), sid).reserve("m", Usage(prompt_tokens=600), None)
        await quotas.flush()

        assert [t.session_id for t in await sessions.running_turns(SHARD0)] == ["s0", "dm"]
        assert [q.session_id for q in await sessions.queued_turns(SHARD1)] == ["s1"]
        # Shard 0's process restarts: it clears its own servers' slots and reservations only; shard 1's
        # run is alive in the other process and keeps holding its user's slot and tokens.
        assert await quotas.recover(SHARD0) == (2, 2)
        assert (await quotas.usage(G0, 7)).item("tokens_per_day").used == 0
        g1 = await quotas.usage(G1, 7)
        assert (g1.item("tokens_per_day").used, g1.item("concurrent_sessions").used) == (600, 1)
        assert not (await quotas.check(G1, 7)).allowed
        # A single process (no sharding) still owns every turn.
        assert len(await sessions.running_turns()) == 3


async def test_at_start_up_a_shard_process_touches_only_its_own_servers_interrupted_runs(
    store_target: StoreTarget,
) -> None:
    """The runner's start-up resume, wired to the process's shards: here every thread is gone, so a
    run it owns is closed (session failed, follow-up dropped) and the other shard's are left alone."""
    async with await open_database(await store_target()) as db:
        sessions = SessionStore(db)
        for sid, gid in (("s0", G0), ("s1", G1)):
            await _create(sessions, sid, gid)
            await sessions.start_turn(sid, "interrupted", 7)
            await sessions.queue_turn(sid, "queued", 7, "alice", ())
        asked: list[int] = []

        async def gone(thread_id: int) -> None:
            asked.append(thread_id)
            raise LookupError("no such thread")

        settings = load_bot_settings(_env_file=None)
        services = SimpleNamespace(sessions=sessions, bot_settings=settings, owner=SHARD1)
        runner = SessionRunner(services)  # type: ignore[arg-type]
        assert runner.rest_budget.per_second == settings.rest_writes_per_second / 2
        assert await resume_interrupted(runner, gone) == 0
        assert asked == [900]
        assert [t.session_id for t in await sessions.running_turns()] == ["s0"]
        assert [q.session_id for q in await sessions.queued_turns()] == ["s0"]
        assert ((await sessions.get("s0")).status, (await sessions.get("s1")).status) == ("idle", "failed")


async def test_a_limit_across_servers_holds_across_processes(store_target: StoreTarget) -> None:
    """QUOTA_REQUESTS_PER_DAY_ALL_SERVERS=3: twelve requests at once, from two processes (two databases
    handles) in servers on both shards, start exactly three sessions; the per-server limit is not hit."""
    target = await store_target()
    async with await open_database(target) as db_a, await open_database(target) as db_b:
        limits = Limits(requests_per_day=50, concurrent_sessions=None)
        stores = [QuotaStore(db, None, limits, all_servers_per_day=3) for db in (db_a, db_b)]
        tries = [
            stores[i % 2].begin_session((G0, G1)[i % 3 % 2], 7, (), f"s{i}", need_tokens=1) for i in range(12)
        ]
        decisions = await asyncio.gather(*tries)
        assert sum(d.allowed for d in decisions) == 3
        refused = next(d for d in decisions if not d.allowed)
        assert refused.message.startswith("Daily request limit reached: you've made 3 of 3 requests today")
        assert "in all servers together" in refused.message
        assert not (await stores[1].check(G1, 7)).allowed
        assert (await stores[0].check(G0, 8)).allowed  # another user is not touched
        assert (await stores[0].usage(G0, 7)).item("requests_per_day").used <= 3
        # /usage in either server shows the limit across servers, counted from both processes.
        report = await stores[1].usage(G1, 7)
        line = usage_line(report.item(ALL_SERVERS_REQUESTS))
        assert line.startswith("⛔ **Requests today in all servers**: 3 of 3 · none left · resets <t:"), line
        assert ALL_SERVERS_REQUESTS not in {
            i.name for i in (await QuotaStore(db_a, None, limits).usage(G0, 7)).items
        }


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"DISCORD_SHARD_IDS": "1"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        ({"DISCORD_SHARD_IDS": "2", "DISCORD_SHARD_COUNT": "2"}, "[2] not in 0..1"),
        ({"DISCORD_SHARD_IDS": "1", "DISCORD_SHARD_COUNT": "2"}, "set DATABASE_URL=postgresql://"),
    ],
)
def test_shard_settings_that_cannot_form_one_bot_are_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=error.replace("[", r"\[").replace("]", r"\]")):
        load_bot_settings(_env_file=None)


def test_one_shard_id_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_SHARD_IDS", "1")
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot@db:5432/agentbot")
    assert load_bot_settings(_env_file=None).shard_ids == [1]


async def _until(check: Callable[[], object], what: str) -> None:
    for _ in range(500):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_setting_changed_by_one_process_applies_in_the_other(postgres: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres.url())
    await conn.execute("CREATE DATABASE shards_settings")
    await conn.close()
    url = postgres.url("shards_settings")
    schema = SettingsSchema(["gpt-4o-mini"], ["web_search"])
    db_a, db_b = await PgDatabase.open(url), await PgDatabase.open(url)
    a, b = GuildSettingsStore(db_a, schema), GuildSettingsStore(db_b, schema)
    listener = SettingsListener(url, b, retry=0.05)
    await listener.start()
    try:
        assert listener.connected.is_set()
        assert (await b.get(G0)).max_steps == 12  # now cached in b's process

        async def b_sees(n: int) -> bool:
            return (await b.get(G0)).max_steps == n

        await a.set(G0, 42, "max_steps", 5)
        await _until(lambda: b_sees(5), "process b to see max_steps=5")
        await a.reset(G0, 42, "max_steps")
        await _until(lambda: b_sees(12), "process b to see the reset")

        # The listener's connection dies: until it is back, b reads every time (a change made while
        # nobody listened is never served stale), and on reconnecting b is fresh again.
        killer = await asyncpg.connect(url)
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
        )
        await killer.close()
        await _until(lambda: not listener.connected.is_set(), "the listener to notice")
        await a.set(G0, 42, "max_steps", 7)
        assert (await b.get(G0)).max_steps == 7
        await _until(listener.connected.is_set, "the listener to reconnect")
        await a.set(G0, 42, "max_steps", 9)
        await _until(lambda: b_sees(9), "process b to see max_steps=9 after the reconnect")
    finally:
        await listener.close()
        await db_a.close()
        await db_b.close()
