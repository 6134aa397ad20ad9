"""One server's load as another server meets it: the real bot on the fake Discord with two servers, the
scripted model on 127.0.0.1 (found by the second black-box security QA)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Busy", channels=("general",), members=("alice", "bob", "carol"))


@pytest.fixture
def other() -> FakeGuild:
    return FakeGuild.create("Quiet", channels=("general",), members=("dave",))


@pytest.fixture
def guilds(guild: FakeGuild, other: FakeGuild) -> list[FakeGuild]:
    return [guild, other]


async def test_a_busy_server_cannot_queue_another_server_behind_all_its_runs(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, other: FakeGuild, tmp_path: Path
) -> None:
    # Run slots were one bot-wide FIFO: members of one server (or one member, where an admin raised
    # concurrent_sessions) filled every slot and its queue, and a quiet server's first request waited
    # behind all of them. A freed slot now goes to the server holding the fewest.
    first_run = asyncio.Event()  # alice's run holds the one slot until every other request waits for it
    llm.script(text("Busy 1.", gate=first_run), text("Next."), text("Next."), text("Next."))
    busy, quiet = guild.channel("general"), other.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, BOT_MAX_CONCURRENT_RUNS=1) as bot:
        for n, (who, where) in enumerate([("alice", busy), ("bob", busy), ("carol", busy), ("dave", quiet)]):
            fake.inject_interaction("research", {"task": f"task of {who}"}, user=who, channel=where)
            await fake.wait_for(
                lambda n=n: len(fake.threads(parent=busy)) + len(fake.threads(parent=quiet)) == n + 1,
                what=f"{who}'s thread",
            )
            await fake.wait_for(lambda: llm.requests, what="the first run's model call")
        waiting = fake.threads(parent=busy)[1:] + fake.threads(parent=quiet)
        await fake.wait_for(
            lambda: (
                len(waiting) == 3
                and all(
                    fake.messages(t) and "waiting for a free slot" in fake.messages(t)[0].content
                    for t in waiting
                )
            ),
            what="bob's, carol's and dave's runs waiting for the slot",
        )
        first_run.set()
        await fake.wait_for(lambda: len(llm.requests) == 4, within=20, what="every run")
        await wait_idle(fake, bot)
    asked = [r["messages"][-1]["content"] for r in llm.requests]
    assert asked == ["task of alice", "task of dave", "task of bob", "task of carol"]
