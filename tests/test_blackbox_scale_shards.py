"""Shard ids given to two processes, or processes with different shard counts, sharing one PostgreSQL
(README: Scaling, "every id from 0 to count-1 in exactly one process", "the same count").

Before the check every such process started and looked healthy: two processes on one shard both get
its servers' events and answer twice, and the later one took the other's live runs for interrupted
ones at start-up (its quota reservations and concurrency slots were dropped). The services are built
as ``agentbot run`` builds them; ``tests/test_blackbox_scale_run.py`` shows that a start-up error
becomes one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.config import ConfigError, load_agent_settings
from bot.config import load_bot_settings
from bot.services import Services, build_services
from tests.fakes.postgres import PostgresServer

ZERO_GUILD = 2 << 22  # on shard 0 of 2


async def services(tmp_path: Path, name: str, *, serving: bool = True, **env: str) -> Services:
    data = tmp_path / name
    return await build_services(
        load_agent_settings(DATA_DIR=str(data), ROUTER_CLASSIFIER="heuristic", PYTHON_SANDBOX="off"),
        load_bot_settings(MEMORY_ENABLED=False, **env),
        serving=serving,
    )


async def test_a_shard_in_two_processes_or_two_shard_counts_refuse_to_start(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shards-claim-0001")
    url = await postgres.fresh_database("claim")
    zero = await services(tmp_path, "zero", DATABASE_URL=url, DISCORD_SHARD_COUNT=2, DISCORD_SHARD_IDS=[0])
    try:
        await zero.db.write(  # a live run of shard 0's process: its concurrency slot
            "INSERT INTO active_sessions (session_id, guild_id, user_id, started_at) VALUES (?, ?, ?, ?)",
            ("live", ZERO_GUILD, 7, time.time()),
        )
        with pytest.raises(ConfigError) as twice:
            await services(
                tmp_path, "both", DATABASE_URL=url, DISCORD_SHARD_COUNT=2, DISCORD_SHARD_IDS=[0, 1]
            )
        assert str(twice.value).startswith("DISCORD_SHARD_IDS: shard 0 of 2 is already served by another")
        with pytest.raises(ConfigError) as counts:
            await services(tmp_path, "three", DATABASE_URL=url, DISCORD_SHARD_COUNT=3, DISCORD_SHARD_IDS=[2])
        assert str(counts.value).startswith("DISCORD_SHARD_COUNT=3, but another agentbot process")
        assert "runs with DISCORD_SHARD_COUNT=2" in str(counts.value)
        with pytest.raises(
            ConfigError, match=r"DISCORD_SHARD_COUNT=1 \(not set\), but"
        ):  # a second, unsharded bot
            await services(tmp_path, "plain", DATABASE_URL=url)
        # The refused ones took nothing over: shard 0's live run still holds its slot.
        assert await zero.db.fetchall("SELECT session_id FROM active_sessions") == [("live",)]

        # A host that dies leaves its connection to PostgreSQL's keepalives: a minute, not the OS's two hours.
        assert await zero.shard_claim._conn.fetchval("SHOW tcp_keepalives_idle") in ("30", "30s")
        # `agentbot sync` next to the running bot serves no shard, so it is not refused.
        await (await services(tmp_path, "sync", serving=False, DATABASE_URL=url)).close()
        one = await services(tmp_path, "one", DATABASE_URL=url, DISCORD_SHARD_COUNT=2, DISCORD_SHARD_IDS=[1])
        await one.close()
    finally:
        await zero.close()
    # Stopped, its shard is free for the next process (a restart, or a re-shard with every process down).
    await (await services(tmp_path, "again", DATABASE_URL=url, DISCORD_SHARD_COUNT=3)).close()


async def test_agentbot_sync_next_to_a_running_bot_leaves_its_live_runs_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``agentbot sync`` logs in and builds the bot's services while the bot runs; it used to clear
    the "left by a previous process" quota reservations and concurrency slots, which were the running
    bot's, so a user at the concurrency limit could start one more run."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shards-claim-0001")
    running = await services(tmp_path, "bot")
    try:
        await running.db.write(
            "INSERT INTO active_sessions (session_id, guild_id, user_id, started_at) VALUES (?, ?, ?, ?)",
            ("live", ZERO_GUILD, 7, time.time()),
        )
        await (await services(tmp_path, "bot", serving=False)).close()
        # A second `agentbot run` on the same DATA_DIR (SQLite) used to start, recover the first one's live
        # runs as interrupted (dropping this slot) and answer everything twice: refused, naming DATA_DIR.
        with pytest.raises(ConfigError, match=r"^DATA_DIR: another agentbot run already serves .*agentbot"):
            await services(tmp_path, "bot")
        assert [tuple(r) for r in await running.db.fetchall("SELECT session_id FROM active_sessions")] == [
            ("live",)
        ]
    finally:
        await running.close()
    await (await services(tmp_path, "bot")).close()  # stopped, its store is free for the next start


async def test_the_bot_wide_cap_on_running_turns_holds_across_shard_processes(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BOT_MAX_CONCURRENT_RUNS is "turns running at once across all servers" (.env.example): with two
    shard processes each ran that many, twice the cap. Each now takes its shards' share, as with
    BOT_REST_WRITES_PER_SECOND; a process always keeps at least one."""
    from bot.runner import SessionRunner

    monkeypatch.setenv("OPENAI_API_KEY", "sk-shards-claim-0001")
    url = await postgres.fresh_database("cap")
    limits = {}
    for count, ids, cap in ((2, [1], 8), (3, [0, 2], 8), (4, [3], 2)):
        sv = await services(
            tmp_path,
            f"cap{count}",
            DATABASE_URL=url,
            DISCORD_SHARD_COUNT=count,
            DISCORD_SHARD_IDS=ids,
            BOT_MAX_CONCURRENT_RUNS=cap,
        )
        try:
            limits[count] = SessionRunner(sv).slots.limit
        finally:
            await sv.close()
    assert limits == {2: 4, 3: 5, 4: 1}
