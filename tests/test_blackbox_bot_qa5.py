"""Members and admins of Discord servers where the fifth black-box QA pass of the bot looked: threads
closed while the bot was down, a /research asked as the bot stops, typos fixed and messages deleted the
moment they are posted, the header's words: the real discord.py bot on the fake Discord, the scripted
model on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

import bot.app
from agent.embeddings.minilm import MiniLMEmbedding
from agent.models.embedding_classifier import EmbeddingClassifier, LinearRouter
from bot.store import SessionRecord
from bot.thread_header import render_header
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import answer, flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


async def test_threads_archived_or_locked_while_the_bot_was_down_are_not_reopened_or_charged(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice's and bob's runs are interrupted by a restart, each with a follow-up queued. While the bot
    is down alice archives her thread and a moderator locks bob's. After the restart the bot resumed
    both: alice's archived thread was reopened by the resumed run's messages and her follow-up was
    answered, and bob's locked thread got a paid model call whose answer nobody could see."""
    calc = tool_call("calculator", {"expression": "1+1"})
    llm.script(calc, calc, Reply(hang=True), Reply(hang=True), *[text("never shown")] * 4)
    settings = {"BOT_SHUTDOWN_GRACE_SECONDS": 0.2}
    general = guild.channel("general")
    threads = []
    async with running_bot(fake, llm, tmp_path, guild, **settings):
        for user in ("alice", "bob"):
            fake.inject_interaction("research", {"task": f"tides for {user}"}, user=user, channel=general)
            threads.append(await fake.wait_for_thread(parent=general, name=f"🔎 tides for {user}"))
        await fake.wait_for(lambda: len(llm.requests) == 4, what="both runs' second step", within=15)
        for user, thread in zip(("alice", "bob"), threads, strict=True):
            follow_up = fake.inject_message(thread, user, "And waves?")
            await fake.wait_for(lambda m=follow_up: "⏳" in fake.message(m.id).reactions, what="⏳")
    writes = [len(fake.writes(t)) for t in threads]
    fake.archive_thread(threads[0])
    fake.archive_thread(threads[1], locked=True)
    with capture_logs() as logs:
        monkeypatch.setattr(bot.app, "log", structlog.get_logger("bot.app"))
        async with running_bot(fake, llm, tmp_path, guild, **settings) as agentbot:
            await fake.wait_for(lambda: any(e["event"] == "ready" for e in logs), what="resumed")
            await wait_idle(fake, agentbot)
            usage = flat(await run(fake, guild, "usage me", user="alice"))
    assert threads[0].archived and threads[1].locked
    assert [len(fake.writes(t)) for t in threads] == writes  # not one message more in either
    assert len(llm.requests) == 4  # nothing resumed, no follow-up answered: nothing more charged
    assert "**Sessions running**: 0 of" in usage and "**Requests today**: 1 of" in usage, usage


def test_a_header_under_a_one_step_limit_says_one_step() -> None:
    """An admin set `/config max-steps steps:1`: every header then read "up to 1 steps"."""
    session = SessionRecord(
        id="a" * 32, guild_id=1, channel_id=2, thread_id=3, user_id=4, task="t", tier="auto", model="m"
    )
    one, two = (render_header(session, steps=n, memory_ok=True, private=False) for n in (1, 2))
    assert " · up to 1 step · " in one and " · up to 2 steps · " in two, one


@pytest.mark.usefixtures("fast_write_window")
async def test_research_asked_as_the_bot_stops_is_answered_after_the_restart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """SIGTERM while a member's /research was opening its thread: the store closed under the command,
    the member's "thinking…" never got an answer (a traceback in the log), and nothing ran later."""
    llm.script(text("Tides follow the moon."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild):
        asked = fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
    assert flat(fake.message(asked.original_message_id)) == f"Started in <#{thread.id}>."
    async with running_bot(fake, llm, tmp_path, guild) as agentbot:
        await fake.wait_for_message(thread, lambda m: m.content == "Tides follow the moon.", within=15)
        await wait_idle(fake, agentbot)
    assert "✅ done" in fake.messages(thread)[0].content


async def test_a_task_routed_complex_is_not_explained_as_a_short_look_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A two-word task the embedding sent to the complex tier: the header read "tier complex (auto)
    (complex 31% (≥ 30% routes complex), medium 36%; a short look-up or chat)", the keywords' reason
    for a tier that was not chosen."""
    classifier = EmbeddingClassifier(MiniLMEmbedding())
    monkeypatch.setattr(LinearRouter, "odds", lambda self, features: np.array([[0.1, 0.2, 0.7]]))
    decided = await classifier.classify("volcano facts")
    assert decided.tier == "complex" and "a short look-up or chat" not in decided.reasons, decided


@pytest.mark.usefixtures("fast_write_window")
async def test_a_typo_fixed_right_after_posting_is_what_the_agent_answers(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A member fixes a typo the moment they post, while the bot is still taking the message (a
    follow-up being queued, a mention opening its thread): the edit found nothing to edit yet and was
    dropped, so the agent answered the text with the typo, and no re-run was offered."""
    llm.script(Reply(text="Tides: the moon.", delay=1.5), text("Waves: the wind."), text("Salt: rocks."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as agentbot:
        mention = f"<@{agentbot.user.id}> "
        asked = fake.inject_message(general, "alice", mention + "tdies?")
        edit_message(fake, asked, mention + "tides?")
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        follow_up = fake.inject_message(thread, "alice", "And wvaes?")
        edit_message(fake, follow_up, "And waves?")
        await fake.wait_for(lambda: len(llm.requests) >= 2, what="the follow-up's turn", within=15)
        await wait_idle(fake, agentbot)
    asked = [r["messages"][-1]["content"] for r in llm.requests]
    assert "tides?" in asked and asked[-1] == "And waves?" and "And wvaes?" not in asked, asked


@pytest.mark.usefixtures("fast_write_window")
async def test_a_follow_up_deleted_right_after_posting_is_not_answered(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Posted in the wrong thread and deleted at once, while the bot was still queueing it: the
    deletion found nothing queued yet, so the deleted question was answered and charged."""
    llm.script(Reply(text="Tides: the moon.", delay=1.5), text("Never asked."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as agentbot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        oops = fake.inject_message(thread, "alice", "wrong thread, sorry")
        fake.state.delete_message(oops, via="injected")
        await fake.wait_for_message(thread, lambda m: m.content == "Tides: the moon.", within=15)
        await wait_idle(fake, agentbot)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    assert len(llm.requests) == 1 and "**Requests today**: 1 of" in usage, usage
    shown = [m.content for m in fake.messages(thread)]
    assert shown[1:] == ["Tides: the moon.", shown[-1]] and "tokens" in shown[-1], shown


@pytest.mark.usefixtures("fast_write_window")
async def test_research_with_a_task_of_only_blank_characters_is_refused_before_anything_is_charged(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Discord trims ASCII spaces from a command's text, not U+3000 or a line of tabs: `/research
    task:"　"` opened a thread named "🔎 research", counted a request and paid a model call on nothing
    (a bare mention is asked for words; /memory search refuses such a query)."""
    async with running_bot(fake, llm, tmp_path, guild):
        asked = fake.inject_interaction(
            "research", {"task": "\u3000\t\u3000"}, user="alice", channel=guild.channel("general")
        )
        refused = flat(await answer(fake, asked))
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    assert "what to research" in refused and fake.threads() == [], refused
    assert llm.requests == [] and "**Requests today**: 0 of" in usage, usage
