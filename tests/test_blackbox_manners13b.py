"""Thread manners end to end, second round (session 13): the real discord.py bot against the fake
Discord and the scripted LLM, over 127.0.0.1. What a member or a moderator would notice in a session
thread after something went wrong: a refused header, a closed thread, a retry, big files.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import discord
import pytest

from tests.e2e.harness import make_bot, running_bot, wait_idle
from tests.fakes.discord_models import BOT_PERMISSIONS, NEWS, NEWS_THREAD, FakeChannel
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.discord_thread_life import close_thread
from tests.fakes.llm_server import FakeLLM, Reply, error, text
from tests.test_e2e_thread_manners import answer_of

INVITED = BOT_PERMISSIONS & ~discord.Permissions(manage_threads=True, manage_messages=True).value
"""What README's invite asks for: no Manage Threads, so the bot cannot delete a thread."""


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


@pytest.mark.usefixtures("fast_write_window")
async def test_a_thread_left_by_a_refused_header_starts_no_headerless_turn(
    llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The header refused and the thread not removable (no Manage Threads): the empty thread stayed and
    still led to the failed session, so the requester's message there ran a paid turn with no header."""
    llm.script(text("Tides answer."))
    async with FakeDiscord([guild], bot_permissions=INVITED) as fake:
        general = guild.channel("general")
        async with running_bot(fake, llm, tmp_path, guild) as bot:
            fake.inject_error("POST", "/channels/*/messages", status=403, code=50013, count=1)
            inter = fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
            refusal = await answer_of(fake, inter)
            (left,) = fake.threads(parent=general)
            fake.inject_message(left, "alice", "so what about the tides?")
            asked = fake.inject_message(left, "alice", f"<@{fake.bot_user.id}> hello?")
            told = await fake.wait_for_message(left, lambda m: m.reference_id == asked.id)
            await wait_idle(fake, bot)
            shown = [m.content for m in fake.messages(left)]
    assert "could not remove" in refusal, refusal
    assert llm.requests == [], shown  # a paid turn ran, its answer under no header
    assert told.content.startswith("Nothing runs in this thread"), told.content
    assert len(shown) == 3, shown


@pytest.mark.usefixtures("fast_write_window")
async def test_retry_button_is_disabled_once_the_retry_starts(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The Retry button stayed live after the turn it started ended; pressed again it only got a private
    "nothing to retry". One a limit refused (nothing ran) stays live, to press once the limit resets."""
    llm.script(error(400, "bad request"), error(400, "bad request"))
    general = guild.channel("general")

    def buttons(offer) -> list[dict]:
        return [c for row in fake.message(offer.id).components for c in row["components"]]

    async with running_bot(fake, llm, tmp_path, guild, QUOTA_REQUESTS_PER_DAY=2) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        offers = []
        for _ in range(2):  # the first fails, its retry fails too; the second retry passes the limit
            offer = await fake.wait_for_message(
                thread, lambda m, n=len(offers): "try it again" in m.content and m not in offers, within=10
            )
            offers.append(offer)
            await wait_idle(fake, bot)
            press = fake.inject_component(buttons(offer)[0]["custom_id"], message=offer, user="alice")
            await fake.wait_for(lambda press=press: press.responses, what="the press answered")
        refused = await fake.wait_for_message(thread, lambda m: m.content.startswith("⛔"), within=10)
        await wait_idle(fake, bot)
        with contextlib.suppress(TimeoutError):  # within the thread's write pacing
            await fake.wait_for(lambda: all(b.get("disabled") for b in buttons(offers[0])), within=10)
            # the second: disabled as its retry started, enabled again once the limit refused it
            await fake.wait_for(lambda: len(fake.message(offers[1].id).history) >= 3, within=10)
    assert press.responses[0]["data"]["content"] == "Retrying…"
    assert all(b.get("disabled") for b in buttons(offers[0])), buttons(offers[0])
    assert fake.message(offers[0].id).content == offers[0].content
    assert "limit" in refused.content, refused.content
    assert not any(b.get("disabled") for b in buttons(offers[1])), buttons(offers[1])
    assert len(llm.requests) == 2


async def test_a_thread_closed_mid_run_then_reopened_after_a_restart_says_it_is_not_running(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Which threads' headers to re-render on reopening was kept in memory only: a restart between the
    archive (or lock) that stopped a run and the reopening left "⏳ running…" and a Stop button for good.
    So did a thread archived while the bot was down with a turn running."""
    llm.script(Reply(hang=True), Reply(hang=True), Reply(hang=True))
    general = guild.channel("general")
    threads = []
    async with running_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0.2) as bot:
        for user, task in (("alice", "tides"), ("bob", "waves"), ("alice", "kelp")):
            fake.inject_interaction("research", {"task": task}, user=user, channel=general)
            threads.append(await fake.wait_for_thread(parent=general, name=f"🔎 {task}"))
            await fake.wait_for(lambda n=len(threads): len(llm.requests) == n, what="the run's model call")
        close_thread(fake.state, threads[0], archived=True)
        close_thread(fake.state, threads[1], archived=False, locked=True)
        await fake.wait_for(lambda: len(bot.runner.live_sessions()) == 1, what="two runs stopped")
    close_thread(fake.state, threads[2], archived=True)  # while the bot is down, its turn paused
    bot, resumed = make_bot(fake, llm, tmp_path, guild), asyncio.Event()
    on_ready = bot.on_ready

    async def ready() -> None:  # what start-up found (a thread archived meanwhile) is stored
        await on_ready()
        resumed.set()

    bot.on_ready = ready  # type: ignore[method-assign]
    async with fake.run_bot(bot):
        await resumed.wait()
        for thread in threads:
            close_thread(fake.state, thread, archived=False)  # reopened, or unlocked
        headers = []
        for thread in threads:
            first = fake.messages(thread)[0].id
            reopened = lambda m, first=first: m.id == first and "⏳" not in m.content  # noqa: E731
            with contextlib.suppress(TimeoutError):
                await fake.wait_for_message(thread, reopened, within=3)
            headers.append(fake.message(first))
    for header in headers:
        assert "⏹️ stopped" in header.content and not header.components, header.content[-60:]


@pytest.mark.usefixtures("fast_write_window")
async def test_research_in_an_announcement_channel_opens_an_announcement_thread(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """Discord documents a thread in an announcement channel as an announcement thread (type 10); /research
    asked for a public thread (11), which Discord refuses there, and the member read "Cannot execute action
    on this channel type ... Try again later", which never helps. A private one cannot exist there."""
    lab = FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))
    news = lab._add_channel(FakeChannel("news", NEWS))
    llm.script(text("Tides follow the moon."))
    async with FakeDiscord([lab]) as fake, running_bot(fake, llm, tmp_path, lab) as bot:
        started = fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=news)
        said = await answer_of(fake, started)
        thread = await fake.wait_for_thread(parent=news)
        await fake.wait_for_message(thread, lambda m: "Tides follow" in m.content, within=10)
        private = {"task": "waves", "private": True}
        refused = await answer_of(
            fake, fake.inject_interaction("research", private, user="bob", channel=news)
        )
        await wait_idle(fake, bot)
    assert said.startswith("Started in"), said
    assert thread.type == NEWS_THREAD and len(fake.threads(parent=news)) == 1
    assert "announcement channel" in refused and "text channel" in refused, refused
    assert len(fake.calls("POST", f"/channels/{news.id}/threads")) == 1  # the private one asked nothing


@pytest.mark.usefixtures("fast_write_window")
async def test_written_files_past_one_requests_limit_are_split_over_messages(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A turn may leave up to 10 files of 8 MB each; all went in one message, past the 25 MiB Discord
    takes in one request (413), and the message, its note and every file were dropped without a word."""
    size, names = 8 * 2**20, [f"table{i}.bin" for i in range(4)]

    def write_then_answer(body: dict) -> Reply:  # as run_python's code would, during the model's call
        (workspace,) = (tmp_path / "workspaces").iterdir()
        for i, name in enumerate(names):
            (workspace / name).write_bytes(bytes([65 + i]) * size)
        return text("Four tide tables are attached.")

    llm.responder = write_then_answer
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "tide tables"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Four tide tables" in m.content, within=10)
        await wait_idle(fake, bot, within=30)
    sent = [m for m in fake.messages(thread) if m.attachments]
    assert sorted(a.filename for m in sent for a in m.attachments) == names, [m.content for m in sent]
    assert [m.content for m in sent] == [
        "📎 Files written in this turn (1/2):",
        "📎 Files written in this turn (2/2):",
    ]
