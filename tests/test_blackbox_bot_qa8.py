"""The eighth black-box QA pass of the bot: a member at the edge of their limits and an admin who removes
the bot, against the real discord.py bot on the fake Discord, the scripted model on 127.0.0.1. One test
holds the scenarios that share bot starts (two servers, a restart between). Each assertion failed before
the fix the docstring names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import make_bot, running_bot, wait_idle
from tests.fakes.discord_models import INTENT_GUILDS
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_e2e_config import answer, flat

LAB = FakeGuild.create("Lab", channels=("general",), members=("carol",))
OTHER = FakeGuild.create("Other", channels=("general", "random"), members=("alice", "bob"))


@pytest.fixture
def guilds() -> list[FakeGuild]:
    return [LAB, OTHER]


def asked(body: dict[str, Any]) -> str:
    return json.dumps([m.get("content") for m in body["messages"] if m.get("role") == "user"])


async def test_a_members_last_request_runs_once_and_a_server_that_removed_the_bot_stops_its_runs(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    """With one request a day allowed, alice sent /research in #general and #random at the same
    instant: both replies said "Started in …", two threads opened, and the second one's run was then
    refused inside its thread ("⛔ Daily request limit reached"): the request is counted when the turn
    starts, so the check at /research let both through. Her one run, interrupted by a restart, was then
    refused on resuming with that same message, "you've made 1 of 1 requests today": the request it
    had counted itself. An admin of another server, Lab, removed the bot while carol's run there waited on a
    model call: the call went on (a run slot held, the call billed) with no end in sight, and the run
    stayed "running" in the store, to be resumed in a server the bot had left. Bob, in alice's server,
    is answered as ever."""
    calls = {"tides": 0}

    def respond(body: dict[str, Any]) -> Reply:
        said = asked(body)
        if "tides" in said or "waves" in said:
            calls["tides"] += 1  # the first call is cut by the restart, the second is its resumed run
            return Reply(text="Old.", delay=5) if calls["tides"] == 1 else text("Tides follow the moon.")
        if "otters" in said:  # carol: one step, then a call that never ends
            return (
                Reply(hang=True)
                if '"tool"' in json.dumps(body["messages"])
                else tool_call("current_time", {})
            )
        return text("Bob's answer.")

    llm.responder = respond
    lab_general, general, random = LAB.channel("general"), OTHER.channel("general"), OTHER.channel("random")
    limits: dict[str, Any] = {"QUOTA_REQUESTS_PER_DAY": 1, "BOT_SHUTDOWN_GRACE_SECONDS": 0.5}
    bot = make_bot(fake, llm, tmp_path, LAB, **limits)
    await fake.start_bot(bot)
    both = [
        fake.inject_interaction("research", {"task": task}, user="alice", channel=where)
        for task, where in (("tides", general), ("waves", random))
    ]
    replies = sorted([flat(await answer(fake, i)) for i in both])
    await fake.wait_for(lambda: llm.requests, what="the model call")
    opened = [t for t in fake.threads() if t.name in ("🔎 tides", "🔎 waves")]
    assert replies[0].startswith("Started in") and replies[1].startswith("⛔ Daily request limit"), replies
    assert len(opened) == 1, [t.name for t in opened]
    thread = opened[0]
    await fake.stop_bot(bot)  # mid-call: the run pauses for the next start

    async with running_bot(fake, llm, tmp_path, LAB, **limits) as bot:
        fake.inject_interaction("research", {"task": "otters"}, user="carol", channel=lab_general)
        otters = await fake.wait_for_thread(parent=lab_general, name="🔎 otters")
        await fake.wait_for_message(otters, lambda m: m.content.startswith("**Step 1**"), within=15)
        await fake.wait_for(lambda: sum("otters" in asked(r) for r in llm.requests) == 2, what="the hang")
        fake.inject_error("*", f"/channels/{otters.id}*", status=403, code=50001, count=10_000)
        fake.state.dispatch("GUILD_DELETE", {"id": str(LAB.id)}, intent=INTENT_GUILDS)
        carols = await bot.services.sessions.by_thread(otters.id)
        gone = lambda: carols.id not in bot.runner.live_sessions()  # noqa: E731
        await fake.wait_for(gone, within=10, what="carol's run to stop once the bot was removed")

        fake.inject_interaction("research", {"task": "kelp"}, user="bob", channel=general)
        kelp = await fake.wait_for_thread(parent=general, name="🔎 kelp")
        await fake.wait_for_message(kelp, lambda m: "tokens" in m.content, within=15)
        # alice's run, resumed meanwhile (its thread's write window is taken as full at the start)
        await fake.wait_for_message(
            thread, lambda m: "tokens" in m.content or "limit" in m.content, within=20
        )
        await wait_idle(fake, bot)
        shown = [m.content for m in fake.messages(thread)]
        running = await bot.services.sessions.running_turns(bot.services.owner)
    assert "Tides follow the moon." in shown and not any("limit reached" in c for c in shown), shown
    assert running == [], running  # nothing left to resume in the server that removed the bot
    assert "Bob's answer." in [m.content for m in fake.messages(kelp)]
