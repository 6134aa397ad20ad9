"""Issue 20.1-20.4 end to end: who is notified, private threads, who may continue, how threads end.

The real discord.py bot against the fake Discord (which models thread members, silent messages,
THREAD_UPDATE / THREAD_DELETE and archived threads) and the scripted LLM, all over 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import discord
import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.discord_thread_life import SUPPRESS_NOTIFICATIONS
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob", "carol"), admins=())


async def research(fake: FakeDiscord, guild: FakeGuild, task: str, user: str = "alice", **options: object):
    general = guild.channel("general")
    inter = fake.inject_interaction("research", {"task": task, **options}, user=user, channel=general)
    thread = await fake.wait_for_thread(parent=general, name=None)
    return inter, thread


def footer_of(fake: FakeDiscord, thread) -> list:
    return [m for m in fake.messages(thread) if "tokens" in m.content]


# --- 20.1 the requester learns the answer is ready ------------------------------------------------


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_requester_joins_the_thread_and_only_the_answer_notifies(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(tool_call("calculator", {"expression": "6*7"}), text("It is 42. <@&1> @everyone"))
    alice, bob = guild.member("alice").id, guild.member("bob").id
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "What is 6*7?")
        await fake.wait_for(lambda: alice in thread.member_ids, what="alice added to the thread")
        thread.member_ids.add(bob)  # bob follows the thread too
        await fake.wait_for(lambda: footer_of(fake, thread), within=15, what="the footer")
        await wait_idle(fake, bot)
        msgs = fake.messages(thread)
    footer = footer_of(fake, thread)[0]
    # The answer's closing message pings alice (mentions allowed for her alone) and is not silent...
    assert f"<@{alice}>" in footer.content and footer.pinged_user_ids == [alice]
    allowed = footer.allowed_mentions or {}
    assert allowed.get("parse") == [] and [int(u) for u in allowed.get("users", [])] == [alice]
    assert not footer.flags & SUPPRESS_NOTIFICATIONS
    assert alice in fake.notified(footer) and bob in fake.notified(footer)
    # ...and every other message (header, steps, previews, the answer's text) is silent.
    others = [m for m in msgs if m is not footer]
    assert others and all(m.flags & SUPPRESS_NOTIFICATIONS for m in others)
    assert all(fake.notified(m) == [] for m in others)
    assert [m.content for m in others if m.content.startswith("It is 42.")]


# --- 20.2 private means private ----------------------------------------------------------------------


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_private_request_is_refused_not_opened_public_when_discord_refuses(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_error("POST", f"/channels/{general.id}/threads", status=403, code=50013)
        inter = fake.inject_interaction(
            "research", {"task": "secret plans", "private": True}, user="alice", channel=general
        )
        await fake.wait_for(
            lambda: inter.original_message_id and fake.message(inter.original_message_id).content,
            what="the refusal",
        )
        refusal = fake.message(inter.original_message_id).content
        sessions = await bot.services.sessions.by_thread(0)
    assert refusal and "private" in refusal and "**Create Private Threads**" in refusal
    assert "did not open a public thread" in refusal
    assert fake.threads(parent=general) == [] and sessions is None and llm.requests == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_private_thread_without_the_permission_names_it_before_asking_discord(
    llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    perms = discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        read_message_history=True,
    ).value
    guild.roles[0].permissions = perms  # @everyone cannot create private threads either
    async with FakeDiscord([guild], bot_permissions=perms) as fake:
        general = guild.channel("general")
        async with running_bot(fake, llm, tmp_path, guild):
            inter = fake.inject_interaction(
                "research", {"task": "secret", "private": True}, user="alice", channel=general
            )
            await fake.wait_for(
                lambda: inter.original_message_id and fake.message(inter.original_message_id).content,
                what="the refusal",
            )
            refusal = fake.message(inter.original_message_id).content
        assert "**Create Private Threads**" in refusal and "Create Public" not in refusal
        assert not fake.calls("POST", f"/channels/{general.id}/threads")
        assert fake.threads(parent=general) == []


# --- 20.3 only real follow-ups start a paid turn -------------------------------------------------------


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_only_the_requester_or_someone_asking_the_bot_starts_a_turn(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Paris."), text("About 2.1 million."), text("The Seine."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Capital of France?")
        answer = await fake.wait_for_message(thread, lambda m: m.content == "Paris.", within=15)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "bob", "thanks!")
        hint = await fake.wait_for_message(thread, lambda m: "I only answer" in m.content)
        fake.inject_message(thread, "bob", "really, thanks")  # told once: no second hint
        fake.inject_message(thread, "alice", "How many people live there?")  # the requester
        await fake.wait_for_message(thread, lambda m: m.content == "About 2.1 million.", within=15)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "bob", "Which river flows through it?", reply_to=answer)
        await fake.wait_for_message(thread, lambda m: m.content == "The Seine.", within=15)
        await wait_idle(fake, bot)
        hints = [m for m in fake.messages(thread) if "I only answer" in m.content]
    assert len(llm.requests) == 3  # bob's thanks cost nothing
    asked = [r["messages"][-1]["content"] for r in llm.requests]
    assert asked == ["Capital of France?", "How many people live there?", "Which river flows through it?"]
    assert [m.id for m in hints] == [hint.id]
    assert hint.flags & SUPPRESS_NOTIFICATIONS and hint.pinged_user_ids == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_mention_of_the_bots_managed_role_counts_as_a_mention(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Hello via the role."), text("Follow-up via the role."))
    role = next(r for r in guild.roles if r.bot_id == fake.bot_user.id)
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_message(general, "alice", f"{role.mention} say hello")
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Hello via the role.", within=15)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "bob", f"{role.mention} and again")
        await fake.wait_for_message(thread, lambda m: m.content == "Follow-up via the role.", within=15)
        await wait_idle(fake, bot)
    assert [r["messages"][-1]["content"] for r in llm.requests] == ["say hello", "and again"]


# --- 20.4 threads end cleanly -------------------------------------------------------------------------


async def _closed_mid_run(fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, close) -> tuple:
    llm.script(tool_call("calculator", {"expression": "1+1"}), Reply(hang=True), text("never shown"))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Think forever")
        await fake.wait_for(lambda: len(llm.requests) == 2, what="the second model call", within=10)
        await fake.wait_for_message(thread, lambda m: "calculator" in m.content, within=10)
        fake.inject_message(thread, "alice", "and a queued follow-up")
        await fake.wait_for(lambda: any("⏳" in m.reactions for m in fake.messages(thread)), what="⏳")
        writes_before = len(fake.writes(thread))
        close(thread)
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
        turns = await bot.services.sessions.turns(session.id)
        row = await bot.services.db.fetchone("SELECT COUNT(*) FROM active_sessions")
        active = row[0] if row else 0
    return thread, session, turns, writes_before, active


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_archiving_a_thread_stops_its_run_and_the_bot_does_not_reopen_it(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    thread, session, turns, writes_before, active = await _closed_mid_run(
        fake, llm, guild, tmp_path, lambda t: fake.archive_thread(t)
    )
    assert thread.archived  # nothing the bot did reopened it
    assert len(fake.writes(thread)) == writes_before  # not one more write after the archive
    assert len(llm.requests) == 2  # the queued follow-up never ran: nothing more charged
    # "stopped": its header (still "running": an archived thread's messages cannot be edited) is
    # re-rendered when it reopens, also after a restart
    assert [t.status for t in turns] == ["cancelled"] and session.status == "stopped" and active == 0


@pytest.mark.parametrize("how", ["delete", "lock"])
@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_deleting_or_locking_a_thread_stops_its_run(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, how: str
) -> None:
    def close(t) -> None:
        fake.delete_thread(t) if how == "delete" else fake.archive_thread(t, locked=True)

    thread, _, turns, before, active = await _closed_mid_run(fake, llm, guild, tmp_path, close)
    assert [t.status for t in turns] == ["cancelled"] and active == 0 and len(llm.requests) == 2
    if how == "lock":
        assert thread.locked and len(fake.writes(thread)) == before


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_write_that_finds_the_thread_gone_stops_the_run(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "1+1"}, delay=0.3), Reply(hang=True), text("never shown")
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Think forever")
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        # The run has started; from now on the thread is gone for every write.
        fault = fake.inject_error("POST", f"/channels/{thread.id}/messages", status=404, code=10003, count=50)
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
        turns = await bot.services.sessions.turns(session.id)
    assert fault.hits == 1  # given up at the first "Unknown Channel", not retried
    assert [t.status for t in turns] == ["cancelled"] and len(llm.requests) <= 2


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_header_shows_the_run_state_and_queued_mark_goes_when_its_turn_starts(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("first", delay=0.8), text("second"))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        _, thread = await research(fake, guild, "Go")
        header = await fake.wait_for_message(thread)
        await fake.wait_for(lambda: len(llm.requests) == 1, what="the first model call")
        follow = fake.inject_message(thread, "alice", "and then?")
        await fake.wait_for(lambda: follow.reactions.get("⏳"), what="⏳ on the queued follow-up")
        await fake.wait_for_message(thread, lambda m: m.content == "second", within=15)
        await wait_idle(fake, bot)
    assert not follow.reactions.get("⏳")  # removed when its turn started
    running, done = header.history[0], header.history[-1]
    assert "⏳ running" in running.content and running.components
    assert "✅ done <t:" in done.content and ":R>)" in done.content and done.components == []
    assert any("⏳ running" in v.content and v.components for v in header.history[1:-1])  # 2nd turn
