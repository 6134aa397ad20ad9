"""/stop and the Stop button as members meet them: the real discord.py bot on the fake Discord, the
scripted model on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob", "carol"))


def answers(inter) -> list[str]:
    return [r["data"].get("content", "") for r in inter.responses]


@pytest.mark.usefixtures("fast_write_window")
async def test_a_run_waiting_for_a_free_slot_can_be_stopped_and_never_starts(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """At the bot-wide cap a second and third /research wait for a slot. Their requesters stop them
    while they wait (/stop, and the Stop button the waiting header keeps): each is told it stopped,
    the header says so, and neither starts (nor asks the model, nor is charged) when the slot frees."""
    llm.script(text("First answer.", delay=2.0), text("Should never run."), text("Nor this."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, BOT_MAX_CONCURRENT_RUNS=1) as bot:
        fake.inject_interaction("research", {"task": "one"}, user="alice", channel=general)
        first = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first run's model call")
        threads = {}
        for user, task in (("bob", "two"), ("carol", "three")):
            fake.inject_interaction("research", {"task": task}, user=user, channel=general)
            n = len(threads) + 2
            await fake.wait_for(lambda n=n: len(fake.threads(parent=general)) == n, what="its thread")
            threads[user] = fake.threads(parent=general)[-1]
            await fake.wait_for_message(
                threads[user], lambda m: "waiting for a free slot" in m.content, within=10
            )
        stop = fake.inject_interaction("stop", {}, user="bob", channel=threads["bob"])
        header = fake.messages(threads["carol"])[0]
        (row,) = header.components
        click = fake.inject_component(row["components"][0]["custom_id"], message=header, user="carol")
        for user in ("bob", "carol"):
            await fake.wait_for_message(threads[user], lambda m: m.content.startswith("⏹️"), within=10)
        await fake.wait_for_message(first, lambda m: m.content == "First answer.", within=15)
        await wait_idle(fake, bot)
        turns = [await bot.services.sessions.turns(s.id) for s in await sessions_of(bot, threads)]
        queued = await bot.services.sessions.queued_turns()
    assert answers(stop) == ["Stopping…"] and answers(click) == ["Stopping…"]
    for user in ("bob", "carol"):
        shown = [m.content for m in fake.messages(threads[user])]
        assert "⏹️ stopped" in shown[0], shown
        assert any("Stopped by" in c and "before it started" in c for c in shown[1:]), shown
    assert len(llm.requests) == 1  # neither waiting run asked the model once the slot freed
    assert turns == [[], []] and queued == []  # nothing ran, nothing to charge or answer after a restart


async def sessions_of(bot, threads) -> list:
    found = [await bot.services.sessions.by_thread(t.id) for t in threads.values()]
    assert all(found)
    return found
