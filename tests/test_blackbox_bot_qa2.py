"""Members meet sessions at the edges (shutdown, lost permissions, a cooling provider, two starts at once,
another member's Retry): the real discord.py bot on the fake Discord, the scripted model on 127.0.0.1
(found by the second black-box QA pass of the bot)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import make_bot, running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, error, text, tool_call
from tests.test_blackbox_threads_permissions import forbid
from tests.test_e2e_config import answer, flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"))


@pytest.mark.usefixtures("fast_write_window")
async def test_an_edit_that_restarts_a_turn_while_the_bot_stops_is_answered_after_the_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A question edited while its turn ran and the bot was stopping: the turn stopped for the edit,
    but the edit lived in memory only, so the next start answered nothing and the edit was lost."""
    llm.script(Reply(text="Old answer.", delay=1.5), text("About 2.1 million."))
    bot = make_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=5)
    await fake.start_bot(bot)
    general = guild.channel("general")
    asked = fake.inject_message(general, "alice", f"<@{bot.user.id}> How old is Paris?")
    thread = await fake.wait_for_thread(parent=general)
    await fake.wait_for(lambda: llm.requests, what="the model call")
    stopping = asyncio.create_task(fake.stop_bot(bot))
    await fake.wait_for(lambda: bot.runner._closing, what="the bot to be stopping")
    edit_message(fake, asked, f"<@{bot.user.id}> How many live in Paris?")
    await stopping
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await fake.wait_for_message(thread, lambda m: m.content == "About 2.1 million.", within=15)
        await wait_idle(fake, bot)
    assert llm.requests[-1]["messages"][-1]["content"] == "How many live in Paris?"


@pytest.mark.usefixtures("fast_write_window")
async def test_a_turn_failed_while_the_provider_cools_down_says_when_to_ask_again_instead_of_retry(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A rejected key opens the provider's circuit breaker for 15 minutes: the failed turn offered a
    Retry that could only fail again until then."""
    llm.script(error(401, "Incorrect API key provided"))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        note = await fake.wait_for_message(
            thread, lambda m: m.content.startswith("This turn failed"), within=10
        )
        await wait_idle(fake, bot)
    assert "cooling down" in note.content and "ask again <t:" in note.content, note.content
    assert note.components == [], note.components


@pytest.mark.usefixtures("fast_write_window")
async def test_two_research_runs_started_at_the_same_instant_take_one_slot_and_one_thread(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one session at once allowed, both passed the check: the second thread opened, its run was
    refused inside it and its header said "stopped" after the reply had said "Started"."""
    monkeypatch.setenv("QUOTA_CONCURRENT_SESSIONS", "1")
    llm.script(Reply(text="Tides follow the moon.", delay=0.5), text("Waves follow the wind."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        first, second = (
            fake.inject_interaction("research", {"task": t}, user="alice", channel=general)
            for t in ("tides", "waves")
        )
        replies = [flat(await answer(fake, i)) for i in (first, second)]
        await fake.wait_for_message(fake.threads(general)[0], lambda m: "Tides" in m.content, within=10)
        await wait_idle(fake, bot)
        assert len(fake.threads(general)) == 1, [t.name for t in fake.threads(general)]
        # The slot is given back when the run ends: the next one starts.
        third = fake.inject_interaction("research", {"task": "waves"}, user="alice", channel=general)
        assert flat(await answer(fake, third)).startswith("Started in")
        await wait_idle(fake, bot)
    started = [r for r in replies if r.startswith("Started in")]
    refused = [r for r in replies if "Too many sessions at once" in r]
    assert len(started) == 1 and len(refused) == 1, replies
    assert refused[0].count("limit 1") == 1, refused
    assert len(llm.requests) == 2


@pytest.mark.usefixtures("fast_write_window")
async def test_only_the_member_who_asked_a_failed_follow_up_can_retry_it_and_is_charged(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Bob's follow-up in alice's session failed: bob could not press its Retry, and alice's press
    ran it charged to her."""
    llm.script(text("Tides follow the moon."), error(400, "bad request"), text("Spring tides are higher."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Tides follow" in m.content, within=10)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "bob", f"<@{bot.user.id}> And spring tides?")
        offer = await fake.wait_for_message(thread, lambda m: "try it again" in m.content, within=10)
        await wait_idle(fake, bot)
        (custom_id,) = [c["custom_id"] for row in offer.components for c in row["components"]]
        by_alice = fake.inject_component(custom_id, message=offer, user="alice")
        await fake.wait_for(lambda: by_alice.responses, what="alice's click answered")
        by_bob = fake.inject_component(custom_id, message=offer, user="bob")
        await fake.wait_for_message(thread, lambda m: m.content == "Spring tides are higher.", within=10)
        await wait_idle(fake, bot)
        usage = {u: flat(await run(fake, guild, "usage me", user=u)) for u in ("alice", "bob")}
    assert "Only the member who asked this turn" in by_alice.responses[0]["data"]["content"]
    assert by_bob.responses[0]["data"]["content"] == "Retrying…"
    assert "**Requests today**: 1 " in usage["alice"], usage["alice"]
    assert "**Requests today**: 2 " in usage["bob"], usage["bob"]


@pytest.mark.usefixtures("fast_write_window")
async def test_a_run_whose_thread_refuses_its_messages_stops_at_the_next_step_and_the_member_is_told(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """An admin took Send Messages in Threads away mid-run: every write was given up in silence while
    the run went on to its end, charged in full."""
    calc = {"expression": "6*7"}
    llm.script(
        tool_call("calculator", calc, delay=0.5),
        tool_call("calculator", calc, delay=0.5),
        tool_call("calculator", calc),
        text("Nobody sees this."),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        forbid(guild, fake, send_messages_in_threads=True)
        dm = fake.state.open_dm(fake.state.user(guild.member("alice").user.id))
        told = await fake.wait_for_message(dm, within=10)
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
        header = fake.messages(thread)[0]
    assert len(llm.requests) <= 2, len(llm.requests)  # stopped at a step boundary, not run to its end
    assert "**Send Messages in Threads**" in told.content and f"<#{thread.id}>" in told.content
    assert len(fake.messages(dm)) == 1
    assert f"**Tokens today**: {120 * len(llm.requests)} " in usage, usage
    assert "stopped" in header.content, header.content
