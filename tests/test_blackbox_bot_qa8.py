"""The eighth black-box QA pass of the bot: a member at the edge of their limits and an admin who removes
the bot, against the real discord.py bot on the fake Discord, the scripted model on 127.0.0.1. One test
holds the scenarios that share bot starts (two servers, a restart between). Each assertion failed before
the fix the docstring names."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.limits import Limits
from bot.store import QuotaStore, open_database
from tests.e2e.harness import make_bot, running_bot, wait_idle
from tests.fakes.discord_models import INTENT_GUILDS
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, error, text, tool_call
from tests.test_blackbox_threads_permissions import forbid
from tests.test_e2e_config import answer, flat
from tests.test_quota_enforcement import Clock


@pytest.fixture
def guilds() -> list[FakeGuild]:
    """Lab, Other and Cove: servers, so what happens in one is seen not to reach the others."""
    return [
        FakeGuild.create("Lab", channels=("general",), members=("carol",)),
        FakeGuild.create("Other", channels=("general", "random"), members=("alice", "bob", "dave")),
        FakeGuild.create("Cove", channels=("general",), members=("erin",)),
    ]


def asked(body: dict[str, Any]) -> str:
    """The last question the model is asked."""
    return json.dumps([m.get("content") for m in body["messages"] if m.get("role") == "user"][-1])


@pytest.mark.usefixtures("fast_write_window")
async def test_last_requests_replies_while_restarting_and_a_server_that_removed_the_bot(
    fake: FakeDiscord, llm: FakeLLM, guilds: list[FakeGuild], tmp_path: Path
) -> None:
    """With one request a day allowed, alice sent /research in #general and #random at the same
    instant: both replies said "Started in …", two threads opened, and the second one's run was then
    refused inside its thread ("⛔ Daily request limit reached"): the request is counted when the turn
    starts, so the check at /research let both through. Her one run, interrupted by a restart, was then
    refused on resuming with that same message, "you've made 1 of 1 requests today": the request it
    had counted itself. While the bot restarted, bob asked the bot in her thread ("@agentbot and
    seals?") and chatted there: Discord does not replay messages a bot missed, so his question was
    never answered and nothing said so. An admin of another server, Lab, removed the bot while carol's
    run there waited on a model call: the call went on (a run slot held, the call billed) with no end in
    sight, and the run stayed "running" in the store, to be resumed in a server the bot had left. Cove
    removed the bot while it was down, erin's run there paused mid-call: the next start resumed it
    there (its thread could still be fetched), calling the model again for a server it was no longer
    in. Dave, in alice's server, is answered as ever; his "@everyone kelp @here?" named his thread as
    written, so Discord's notice of the new thread in #general carried an @everyone."""
    calls = {"tides": 0}

    def respond(body: dict[str, Any]) -> Reply:
        said = asked(body)
        if "tides" in said or "waves" in said:
            calls["tides"] += 1  # the first call is cut by the restart, the second is its resumed run
            return Reply(text="Old.", delay=5) if calls["tides"] == 1 else text("Tides follow the moon.")
        if "reefs" in said:  # erin's, cut by the restart
            return Reply(hang=True)
        if "otters" in said:  # carol: one step, then a call that never ends
            return (
                Reply(hang=True)
                if '"tool"' in json.dumps(body["messages"])
                else tool_call("current_time", {})
            )
        return text(f"Answered {said}.")

    llm.responder = respond
    lab, other, cove = guilds
    lab_general, general, random = lab.channel("general"), other.channel("general"), other.channel("random")
    limits: dict[str, Any] = {"QUOTA_REQUESTS_PER_DAY": 1, "BOT_SHUTDOWN_GRACE_SECONDS": 0.5}
    bot = make_bot(fake, llm, tmp_path, lab, **limits)
    await fake.start_bot(bot)
    both = [
        fake.inject_interaction("research", {"task": task}, user="alice", channel=where)
        for task, where in (("tides", general), ("waves", random))
    ]
    replies = sorted([flat(await answer(fake, i)) for i in both])
    fake.inject_interaction("research", {"task": "reefs"}, user="erin", channel=cove.channel("general"))
    reefs = await fake.wait_for_thread(parent=cove.channel("general"), name="🔎 reefs")
    await fake.wait_for(lambda: len(llm.requests) == 2, what="both model calls")
    opened = [t for t in fake.threads() if t.name in ("🔎 tides", "🔎 waves")]
    assert replies[0].startswith("Started in") and replies[1].startswith("⛔ Daily request limit"), replies
    assert len(opened) == 1, [t.name for t in opened]
    thread = opened[0]
    await fake.stop_bot(bot)  # mid-call: the run pauses for the next start
    me = fake.bot_user
    fake.inject_message(thread, "bob", f"<@{me.id}> and seals?", mentions=[me])  # nobody listens
    fake.inject_message(thread, "bob", "nice thread")  # chat: no question for the bot
    fake.state.guilds.pop(cove.id)  # Cove removed the bot meanwhile: the next start is not told of it
    paused = len(fake.messages(reefs))

    async with running_bot(fake, llm, tmp_path, lab, **limits) as bot:
        fake.inject_interaction("research", {"task": "otters"}, user="carol", channel=lab_general)
        otters = await fake.wait_for_thread(parent=lab_general, name="🔎 otters")
        await fake.wait_for_message(otters, lambda m: m.content.startswith("**Step 1**"), within=15)
        await fake.wait_for(lambda: sum("otters" in asked(r) for r in llm.requests) == 2, what="the hang")
        fake.inject_error("*", f"/channels/{otters.id}*", status=403, code=50001, count=10_000)
        fake.state.dispatch("GUILD_DELETE", {"id": str(lab.id)}, intent=INTENT_GUILDS)
        carols = await bot.services.sessions.by_thread(otters.id)
        gone = lambda: carols.id not in bot.runner.live_sessions()  # noqa: E731
        await fake.wait_for(gone, within=10, what="carol's run to stop once the bot was removed")

        fake.inject_interaction("research", {"task": "@everyone kelp @here?"}, user="dave", channel=general)
        kelp = await fake.wait_for_thread(parent=general, name="🔎 everyone kelp here?")
        await fake.wait_for_message(kelp, lambda m: "tokens" in m.content, within=15)
        # alice's run, resumed meanwhile (its thread's write window is taken as full at the start)
        await fake.wait_for_message(
            thread, lambda m: "tokens" in m.content or "limit" in m.content, within=20
        )
        seals = lambda m: "Answered" in m.content and "seals" in m.content  # noqa: E731
        await fake.wait_for_message(thread, seals, within=15)
        await wait_idle(fake, bot)
        shown = [m.content for m in fake.messages(thread)]
        running = await bot.services.sessions.running_turns(bot.services.owner)
    assert "Tides follow the moon." in shown and not any("limit reached" in c for c in shown), shown
    assert running == [], running  # nothing left to resume in the servers that removed the bot
    assert sum("reefs" in asked(r) for r in llm.requests) == 1 and len(fake.messages(reefs)) == paused
    assert 'Answered "@everyone kelp @here?".' in [m.content for m in fake.messages(kelp)]
    said = [m for m in fake.messages(general) if m.author.id == me.id]  # its notice of dave's thread too
    assert not any(m.mention_everyone or m.pinged_user_ids for m in said), [m.content for m in said]
    notes = [c for c in shown if c.startswith("⏳ Answering a message sent while the bot was restarting")]
    assert len(notes) == 1 and "“and seals?”" in notes[0], shown
    assert not any("nice thread" in asked(r) for r in llm.requests)  # bob's chat is asked of nobody


@pytest.mark.usefixtures("fast_write_window")
async def test_retry_where_the_bot_can_no_longer_post_is_refused_before_anything_runs(
    fake: FakeDiscord, llm: FakeLLM, guilds: list[FakeGuild], tmp_path: Path
) -> None:
    """Carol's run failed; an admin then took Send Messages in Threads from the bot in Lab, and carol
    pressed Retry: "Retrying…", and the run took its first step (a model call, charged to her) with
    nothing shown, then stopped, where a follow-up there is refused before anything runs. The press is
    refused now, naming the permission. Alice's Retry in the other server runs as ever. A moderator
    there removed the bot from bob's private thread while his run waited on a model call: the call went
    on, billed, with nothing able to show it (the bot no longer sees the thread); it stops now. Discord
    then refused dave's run's messages for a missing permission (403, code 50013) before the gateway said
    so: the run stopped at its next step, but dave was never told why nothing came (README: he gets
    one DM naming the permission). Bob's /research in a channel Discord hides from the bot (403, code
    50001 Missing Access) was told to grant Create Public Threads and Send Messages in Threads, which
    would not have helped: View Channel is what is missing."""
    lab, other, _ = guilds
    llm.responder = lambda body: error(400, "bad request") if len(llm.requests) <= 2 else text("Retried.")
    async with running_bot(fake, llm, tmp_path, lab) as bot:

        async def failed(guild: FakeGuild, user: str) -> tuple[Any, str]:
            fake.inject_interaction(
                "research", {"task": "tides"}, user=user, channel=guild.channel("general")
            )
            thread = await fake.wait_for_thread(parent=guild.channel("general"))
            offer = await fake.wait_for_message(thread, lambda m: "try it again" in m.content, within=10)
            (custom_id,) = [c["custom_id"] for row in offer.components for c in row["components"]]
            return offer, custom_id

        carols, alices = await failed(lab, "carol"), await failed(other, "alice")
        await wait_idle(fake, bot)
        forbid(lab, fake, send_messages_in_threads=True)
        me = lambda: bot.get_guild(lab.id).me  # noqa: E731
        await fake.wait_for(lambda: not me().guild_permissions.send_messages_in_threads, what="the change")
        by_carol = fake.inject_component(carols[1], message=carols[0], user="carol")
        await fake.wait_for(lambda: by_carol.responses, what="carol's press answered")
        by_alice = fake.inject_component(alices[1], message=alices[0], user="alice")
        await fake.wait_for_message(alices[0].channel_id, lambda m: m.content == "Retried.", within=10)
        await wait_idle(fake, bot)

        llm.responder = lambda body: (
            Reply(hang=True) if len(llm.requests) > 4 else tool_call("current_time", {})
        )
        general = other.channel("general")
        fake.inject_interaction("research", {"task": "otters", "private": True}, user="bob", channel=general)
        otters = await fake.wait_for_thread(parent=general, name="🔎 otters")
        await fake.wait_for_message(otters, lambda m: m.content.startswith("**Step 1**"), within=15)
        await fake.wait_for(lambda: len(llm.requests) == 5, what="the call that hangs")
        removed = {"id": str(otters.id), "guild_id": str(other.id), "member_count": 1}
        removed["removed_member_ids"] = [str(fake.bot_user.id)]
        fake.state.dispatch("THREAD_MEMBERS_UPDATE", removed, intent=INTENT_GUILDS)
        bobs = await bot.services.sessions.by_thread(otters.id)
        gone = lambda: bobs.id not in bot.runner.live_sessions()  # noqa: E731
        await fake.wait_for(gone, within=10, what="bob's run to stop once the bot was removed from it")

        # each call outlasts the pacing (1 s) of the step message before it, which Discord refuses
        llm.responder = lambda body: tool_call("current_time", {}, delay=1.5)
        fake.inject_interaction("research", {"task": "kelp"}, user="dave", channel=general)
        kelp = await fake.wait_for_thread(parent=general, name="🔎 kelp")
        await fake.wait_for(lambda: len(llm.requests) == 6, what="dave's first call")
        fake.inject_error("POST", f"/channels/{kelp.id}/messages", status=403, code=50013, count=100)
        dm = fake.state.open_dm(fake.state.user(other.member("dave").user.id))
        told = await fake.wait_for_message(dm, within=15)
        await wait_idle(fake, bot)

        fake.inject_error("POST", f"/channels/{general.id}/threads", status=403, code=50001, count=1)
        hidden = fake.inject_interaction("research", {"task": "reefs"}, user="bob", channel=general)
        unseen = flat(await answer(fake, hidden))
    refused = by_carol.responses[0]["data"]["content"]
    assert "**Send Messages in Threads**" in refused, refused
    assert by_alice.responses[0]["data"]["content"] == "Retrying…"
    assert 7 <= len(llm.requests) <= 8, len(llm.requests)  # 2 failed, alice's retry, bob's 2, dave's 2
    assert "**Send Messages in Threads**" in told.content and "stopped at its next step" in told.content
    assert "(Missing Access): I can't see that channel. I need **View Channel** there" in unseen, unseen


async def test_a_held_request_whose_turn_never_started_stops_counting_after_the_slot_ttl(
    tmp_path: Path,
) -> None:
    """A new session's request is held from its start until its first turn counts it; a turn that never
    started (the database went away before it could) must not hold the member's last request for the
    rest of the process's life: like its concurrency slot, the hold ends after six hours."""
    clock = Clock(datetime(2026, 3, 10, 1, 0, tzinfo=UTC))
    async with await open_database(str(tmp_path / "q.sqlite3")) as db:
        store = QuotaStore(db, None, replace(Limits.unlimited(), requests_per_day=1), clock=clock)
        held = await store.begin_session(1, 100, (), "s1", count_request=False, hold_request=True)
        refused = await store.check(1, 100)
        clock.advance(hours=6, minutes=1)  # the same UTC day
        later = await store.check(1, 100)
    assert held.allowed and not refused.allowed and refused.limit == "requests_per_day", refused
    assert later.allowed, later
