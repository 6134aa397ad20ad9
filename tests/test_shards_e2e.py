"""Two shard processes form one bot (issue 18.3): real `agentbot run` processes for shards 0 and 1 of 2
against the fake Discord (a gateway per shard), one throwaway PostgreSQL, one Chroma server (`chroma
run`) and the scripted LLM.

A user limited to 3 requests a day in all servers, spread over a server on each shard, gets exactly 3.
Then the bot is scaled down to one process owning both shards: the memory the first process stored and
the persona it was given with /config are there, since nothing lived in either process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.chroma_server import ChromaServer
from tests.fakes.discord_server import FakeDiscord, FakeGuild, shard_guild
from tests.fakes.llm_server import FakeLLM, text
from tests.fakes.postgres import PostgresServer
from tests.test_e2e_memory import ANSWER, PARAPHRASE, TASK, command, research
from tests.warm_agentbot import WarmProcess, start_agentbot

Process = asyncio.subprocess.Process | WarmProcess


@pytest.fixture
def guilds() -> tuple[FakeGuild, FakeGuild]:
    g0 = shard_guild(0, 2, "Zero", channels=("general",), members=("alice", "bob"), admins=("admin",))
    g1 = shard_guild(1, 2, "One", channels=("general",), members=(), admins=("boss",))
    g1.add_member(g0.member("alice").user)  # the same person in both servers
    return g0, g1


@pytest.fixture
async def fake(guilds: tuple[FakeGuild, FakeGuild]) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(list(guilds), shard_count=2) as server:
        yield server


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path / "chroma").start()
    yield server
    server.stop()


@pytest.fixture
async def database(postgres: PostgresServer) -> str:
    return await postgres.fresh_database("shards")


class Shards:
    """Starts `agentbot run` processes that share the database and the Chroma server."""

    def __init__(self, fake: FakeDiscord, llm: FakeLLM, database: str, chroma: ChromaServer, tmp: Path):
        self.fake, self.llm, self.database, self.chroma, self.tmp = fake, llm, database, chroma, tmp
        self.procs: list[Process] = []

    async def start(self, name: str, shard_ids: str) -> Process:
        data = self.tmp / name
        data.mkdir()
        (data / "tiers.toml").write_text(
            '[tiers]\nsimple = ["gpt-4o-mini"]\nmedium = ["gpt-4o-mini"]\ncomplex = ["gpt-4o-mini"]\n'
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            health = s.getsockname()[1]
        keep = ("OPENAI_", "DISCORD_", "AGENT_", "DATABASE_", "CHROMA_", "QUOTA_", "MEMORY_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
        env |= {
            "OPENAI_BASE_URL": self.llm.base_url,
            "OPENAI_API_KEY": "sk-shards-test-0001",
            "DATA_DIR": str(data),
            "DISCORD_TOKEN": self.fake.token,
            "DISCORD_API_BASE_URL": self.fake.api_url,
            "DISCORD_GATEWAY_URL": self.fake.gateway_url,
            "DISCORD_SHARD_COUNT": "2",
            "DISCORD_SHARD_IDS": shard_ids,
            "DATABASE_URL": self.database,
            "CHROMA_HOST": "127.0.0.1",
            "CHROMA_PORT": str(self.chroma.port),
            "MEMORY_ENABLED": "true",
            "QUOTA_REQUESTS_PER_DAY_ALL_SERVERS": "3",
            "ROUTER_TIERS_FILE": str(data / "tiers.toml"),
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(health),
            "LOG_FORMAT": "json",
            "BOT_SHUTDOWN_GRACE_SECONDS": "1",
            "PYTHON_SANDBOX": "off",
        }
        log = self.tmp / f"{name}.log"
        with log.open("ab") as stderr:
            proc = await start_agentbot(
                "run", cwd=data, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
            )
        self.procs.append(proc)
        async with httpx.AsyncClient() as http:

            async def ready() -> bool:
                assert proc.returncode is None, log.read_text()[-3000:]
                try:
                    return (
                        await http.get(f"http://127.0.0.1:{health}/healthz", timeout=1)
                    ).status_code == 200
                except httpx.HTTPError:
                    return False

            for _ in range(600):  # the health endpoint says 200 once the gateway is ready
                if await ready():
                    return proc
                await asyncio.sleep(0.1)
        raise AssertionError(f"{name} not ready: {log.read_text()[-3000:]}")

    async def stop(self, proc: Process) -> int:
        proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(proc.wait(), 30)

    async def kill_all(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_two_shard_processes_form_one_bot(
    fake: FakeDiscord,
    llm: FakeLLM,
    guilds: tuple[FakeGuild, FakeGuild],
    database: str,
    chroma: ChromaServer,
    tmp_path: Path,
) -> None:
    g0, g1 = guilds
    llm.script(
        text(ANSWER),
        text("Server One's answer: tides follow the moon."),
        text("Server Zero's second answer: bread needs time."),
        text("Arr, feed it daily with flour and water."),
    )
    shards = Shards(fake, llm, database, chroma, tmp_path)
    try:
        zero, one = await asyncio.gather(shards.start("shard0", "0"), shards.start("shard1", "1"))
        await fake.wait_for(lambda: fake.commands(None), within=30, what="commands synced by shard 0")
        assert sorted(s.shard for s in fake.gateway.sessions.values()) == [[0, 2], [1, 2]]

        # alice, limited to 3 requests a day in all servers, alternates between the two shards.
        await research(fake, g0, TASK, "alice")
        await research(fake, g1, "Why are there two tides a day?", "alice")
        await research(fake, g0, "Why does dough need to rest?", "alice")
        refused = await command(fake, g1, "research", {"task": "One more, please?"}, "alice")
        assert refused.content.startswith(
            "⛔ Daily request limit reached: you've made 3 of 3 requests today in all servers together."
        )
        assert len(llm.requests) == 3  # the fourth never reached the model
        persona = await command(fake, g0, "config persona", {"text": "Answer like a pirate."}, "admin")
        assert "pirate" in persona.content

        # Scale down to one process owning both shards: nothing was kept inside the old ones.
        assert (await shards.stop(zero), await shards.stop(one)) == (0, 0)
        await shards.start("both", "0,1")
        thread = await research(fake, g0, PARAPHRASE, "bob")
        assert any("recalled 1 memory" in c for c in thread), thread
        system = llm.requests[3]["messages"][0]["content"]
        assert ANSWER in system  # stored in the Chroma server by shard 0's process
        assert "Answer like a pirate." in system  # set with /config in shard 0's process
        assert fake.duplicates == []
    finally:
        await shards.kill_all()
