"""The bot on PostgreSQL when PostgreSQL goes away and comes back: the real discord.py bot on the fake
Discord, the scripted LLM, and the test worker's throwaway PostgreSQL, which the tests stop and restart."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.fakes.postgres import PostgresServer
from tests.test_e2e_config import flat, run


@pytest.fixture
def server(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """This worker's throwaway PostgreSQL (tests of a worker run one at a time): the test stops and
    restarts it, and whatever happened the next test finds it running (its databases kept)."""
    yield postgres
    with contextlib.suppress(RuntimeError):  # pg_ctl refuses to start a running server: nothing to do
        postgres.resume()


@pytest.mark.usefixtures("fast_write_window")
async def test_pg_a_run_caught_by_a_postgresql_restart_finishes_once_it_is_back_charging_every_call(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, server: PostgresServer
) -> None:
    """PostgreSQL stopped while a step's model call was out: the step's charge could not be written.
    Before the fix the run then waited forever (until some other run happened to charge something),
    its thread showing nothing more; now the charge is written once PostgreSQL is back and the run ends."""
    calls: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> Reply:
        calls.append(body)
        if len(calls) == 1:
            server.halt()  # the outage starts while the first model call is answered
            return tool_call("current_time", {}, prompt_tokens=100, completion_tokens=20)
        return text("It is now.", prompt_tokens=100, completion_tokens=20)

    llm.responder = respond
    url = await server.fresh_database()
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, DATABASE_URL=url) as bot:
        fake.inject_interaction("research", {"task": "What time is it?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: calls, what="the first model call")
        await asyncio.sleep(1.5)  # the run tries to charge the call while PostgreSQL is down
        await asyncio.to_thread(server.resume)
        footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content, within=30)
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    assert len(calls) == 2
    assert "240 tokens" in footer.content, footer.content
    assert re.search(r"\*\*Tokens today\*\*: 240 of", usage), usage  # both calls charged, nothing lost


async def test_pg_commands_while_postgresql_is_down_say_so_clearly_and_work_again_when_it_is_back(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, server: PostgresServer
) -> None:
    """Before: "Something went wrong (error id …)" for every command (and a traceback in the log per use),
    which tells a member nothing; now they read that the database cannot be reached and nothing was done."""
    llm.script(text("Paris.", prompt_tokens=100, completion_tokens=20))
    url = await server.fresh_database()
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, DATABASE_URL=url) as bot:
        await run(fake, guild, "config max-steps", {"steps": 5})
        await asyncio.to_thread(server.halt)
        down = {
            "research": flat(
                await run(fake, guild, "research", {"task": "Capital of France?"}, user="alice")
            ),
            "usage me": flat(await run(fake, guild, "usage me", user="alice")),
            "config show": flat(await run(fake, guild, "config show")),
            "config max-steps": flat(await run(fake, guild, "config max-steps", {"steps": 9})),
        }
        assert not fake.threads(parent=general) and not llm.requests
        await asyncio.to_thread(server.resume)
        show = flat(await run(fake, guild, "config show"))
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Paris.", within=15)
        await wait_idle(fake, bot)
        usage = flat(await run(fake, guild, "usage me", user="alice"))
    for command, said in down.items():
        assert "database" in said and "try again" in said.lower(), (command, said)
        assert "Something went wrong" not in said, (command, said)
    assert "Max steps: **5** *(set here)*" in show  # the change made while it was down was not half-made
    assert re.search(r"\*\*Requests today\*\*: 1 of", usage), usage  # the refused /research charged nothing


async def test_pg_a_follow_up_while_postgresql_is_down_is_answered_with_what_happened(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, server: PostgresServer
) -> None:
    """A follow-up the bot cannot take used to vanish without a word: the bot's handler for failing events
    itself failed (``log.exception(..., event=...)`` collides with structlog's own ``event`` argument), so
    nothing was said in the thread and nothing was logged. Then it said only "Something went wrong"; now
    the member reads that the message was not taken because the database cannot be reached, and to send
    it again."""
    llm.script(text("Paris."), text("Berlin."))
    url = await server.fresh_database()
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, DATABASE_URL=url) as bot:
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Paris.", within=15)
        await wait_idle(fake, bot)
        await asyncio.to_thread(server.halt)
        fake.inject_message(thread, "alice", "And Germany?")
        said = await fake.wait_for_message(
            thread, lambda m: m.author.id != guild.member("alice").id and "error id" in m.content
        )
    assert said.allowed_mentions is not None and said.allowed_mentions.get("parse") == []
    # and it says what happened and what to do, not "Something went wrong"
    assert "database" in said.content and "send it again" in said.content, said.content


async def test_pg_research_that_cannot_record_its_session_leaves_no_empty_thread(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, server: PostgresServer
) -> None:
    """PostgreSQL went away after /research had opened its thread (here while the judge classifier chose
    the tier) and before the session was recorded: the member was told, but an empty thread named after
    the task stayed in the channel for good. The thread is now removed, as when its header cannot be
    posted."""
    calls: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> Reply:
        calls.append(body)
        if len(calls) == 1:  # the judge: the outage starts while it answers
            threading.Thread(target=server.halt).start()
            return text("simple", prompt_tokens=5, completion_tokens=1, delay=2.0)
        return text("Hi!")

    llm.responder = respond
    url = await server.fresh_database()
    general = guild.channel("general")
    judge = {"ROUTER_CLASSIFIER": "judge", "ROUTER_JUDGE_MODEL": "gpt-4o-mini"}
    async with running_bot(fake, llm, tmp_path, guild, DATABASE_URL=url, agent_env=judge):
        said = flat(await run(fake, guild, "research", {"task": "say hi"}, user="alice"))
        await fake.wait_for(lambda: not fake.threads(parent=general), what="the empty thread to go")
    assert "database" in said, said


async def test_pg_stopping_during_an_outage_gives_up_queued_charges_soon_instead_of_waiting_minutes(
    server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM while PostgreSQL is down and a charge is queued: the store's close waited out the 5-minute
    reconnect window before the bot could exit. Now it gives the outage CLOSING_GIVE_UP (10 s) more, then the
    charge fails (its caller and the log are told) and the store closes."""
    from bot.store import ledger, open_database
    from bot.store.ledger import ledger_for

    monkeypatch.setattr(ledger, "CLOSING_GIVE_UP", 1.0)  # the mechanism, without 10 s of the suite

    db = await open_database(await server.fresh_database())
    ledger = ledger_for(db)
    await asyncio.to_thread(server.halt)
    charge = ledger.submit("release", (1,))
    assert charge is not None
    await asyncio.sleep(0.5)  # the writer is retrying the refused connection
    assert not charge.done()  # an outage alone does not fail a queued charge
    await asyncio.wait_for(db.close(), timeout=60)  # would be about 300 s before the fix
    assert charge.done() and isinstance(charge.exception(), Exception)
