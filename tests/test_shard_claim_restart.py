"""A shard process keeps its shards across a PostgreSQL restart (README: Scaling).

The shard locks live on one connection; a restart ends it and every lock with it. They were checked at
start-up only, so after a restart a second process could start on the same shard and both answered
everything twice. Real throwaway PostgreSQL, halted and resumed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
import structlog

from agent.config import ConfigError
from bot.store import shard_claim
from bot.store.shard_claim import SHARD_LOCKS, ShardClaim
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.llm_server import FakeLLM
from tests.fakes.postgres import PostgresServer
from tests.test_doctor import agentbot_run


async def held(url: str, shard: int) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval(shard_claim._HOLDER, SHARD_LOCKS, shard))
    finally:
        await conn.close()


async def test_a_shard_process_takes_its_locks_again_after_a_postgresql_restart_or_stops(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shard_claim, "RETRY_EVERY", 0.05)
    monkeypatch.setattr(shard_claim, "log", structlog.get_logger("bot.store.shard_claim"))
    url = await postgres.fresh_database("restart")
    claim = await ShardClaim.take(url, 2, [0])
    # Its old session still holding the locks (a network cut PostgreSQL has not noticed yet) is no rival.
    assert await claim.retake() is None and await held(url, 0)
    lost: list[str] = []
    claim.watch(lost.append)
    try:
        with structlog.testing.capture_logs() as logs:
            await asyncio.to_thread(postgres.halt)
            await asyncio.to_thread(postgres.resume)
            async with asyncio.timeout(30):  # a hang guard, not a timing: the locks come back
                while not await held(url, 0):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        assert [e["event"] for e in logs] == ["shard_claim_connection_lost", "shard_claim_retaken"]
        with pytest.raises(ConfigError, match="shard 0 of 2 is already served"):
            await ShardClaim.take(url, 2, [0])  # the second process is refused again
        assert lost == []

        # Cut off while another process starts on its shard: this one has lost it, and says so.
        await claim.close()
        claim = await ShardClaim.take(url, 2, [0])
        await asyncio.to_thread(postgres.halt)
        await asyncio.to_thread(postgres.resume)
        other = await ShardClaim.take(url, 2, [0])
        try:
            why = await claim.retake()
        finally:
            await other.close()
        assert why is not None and why.startswith("DISCORD_SHARD_IDS: shard 0 of 2 is already served")
        assert "lost the claim while its connection to PostgreSQL was down" in why
    finally:
        await claim.close()


async def test_agentbot_run_that_lost_its_shard_stops_with_one_line(
    postgres: PostgresServer, fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    """Its claim's connection ends and another session takes shard 0 before it reconnects (one statement:
    the lock is granted the moment the old session is gone): the process stops, exit 1, one line."""
    url = await postgres.fresh_database("lost")
    discord = {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "ROUTER_CLASSIFIER": "heuristic",
    }
    run = asyncio.create_task(agentbot_run(llm, tmp_path, DATABASE_URL=url, **discord))
    rival = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(60):  # a hang guard: until the process holds shard 0
            while not (pid := await rival.fetchval(shard_claim._HOLDER, SHARD_LOCKS, 0)):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await rival.execute("SELECT pg_terminate_backend($1), pg_advisory_lock($2, 0)", pid, SHARD_LOCKS)
        code, out = await run
    finally:
        await rival.close()
    assert code == 1 and "Traceback" not in out, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("agentbot: DISCORD_SHARD_IDS: shard 0 of 1 is already served by another"), out
    assert "lost the claim while its connection to PostgreSQL was down" in last
