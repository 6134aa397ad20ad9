"""Issue 20.5-20.6 end to end: clear refusals without debris, and bot-wide manners.

The real discord.py bot against the fake Discord (thread-creation permissions, a per-bot global rate
limit, recorded IDENTIFY intents and command payloads) and the scripted LLM, all over 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import discord
import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


async def answer_of(fake: FakeDiscord, inter) -> str:
    await fake.wait_for(
        lambda: (
            inter.followup_ids
            or (inter.original_message_id and not fake.message(inter.original_message_id).loading)
        ),
        what="the interaction's answer",
    )
    ids = inter.followup_ids or [inter.original_message_id]
    message = fake.message(ids[-1])
    return message.content or "\n".join(str(e) for e in message.embeds)


# --- 20.5 clear refusals, no debris ------------------------------------------------------------------


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_missing_thread_permissions_are_named_before_anything_is_made(
    llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    perms = discord.Permissions(view_channel=True, send_messages=True, read_message_history=True).value
    guild.roles[0].permissions = perms
    async with FakeDiscord([guild], bot_permissions=perms) as fake:
        general = guild.channel("general")
        async with running_bot(fake, llm, tmp_path, guild):
            inter = fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
            refusal = await answer_of(fake, inter)
        assert "**Create Public Threads**" in refusal and "**Send Messages in Threads**" in refusal
        assert fake.threads(parent=general) == [] and not fake.calls(
            "POST", f"/channels/{general.id}/threads"
        )
    assert llm.requests == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_thread_whose_header_cannot_be_posted_is_deleted(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild):
        fake.inject_error("POST", "/channels/*/messages", status=403, code=50013, count=1)
        inter = fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        refusal = await answer_of(fake, inter)
        made = fake.calls("POST", f"/channels/{general.id}/threads")
    assert len(made) == 1 and fake.threads(parent=general) == []  # opened, then removed
    assert fake.calls("DELETE", f"/channels/{made[0].response['id']}")
    assert "removed it" in refusal and "**Send Messages in Threads**" in refusal
    assert llm.requests == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_long_multi_line_task_keeps_the_header_within_2000_characters(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    task = "\n".join(f"- point {i}" for i in range(170))[:1497]  # ~1,500 chars in 170 short lines
    assert len(task) == 1497
    llm.script(text("Covered."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": task}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Covered.", within=15)
        await wait_idle(fake, bot)
        header = fake.messages(thread)[0]
    assert header.contents and all(len(c) <= 2000 for c in header.contents)
    assert "> \\- point 0" in header.content and "…" in header.content and "✅ done" in header.content
    assert len(header.contents) >= 2  # posted, then finished: both fit


async def test_e2e_an_error_in_a_button_handler_answers_with_an_error_id(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm.script(text("Done.", delay=1.5))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:

        async def broken(*_: object) -> None:
            raise RuntimeError("database is locked")

        monkeypatch.setattr(bot.control, "stop", broken)
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        header = await fake.wait_for_message(thread)
        custom_id = header.components[0]["components"][0]["custom_id"]
        click = fake.inject_component(custom_id, message=header, user="alice")
        answer = await answer_of(fake, click)
        await wait_idle(fake, bot)
    assert "error id `" in answer and "database" not in answer
    assert fake.message((click.followup_ids or [click.original_message_id])[-1]).ephemeral


# --- 20.6 bot-wide manners --------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_runs_over_the_bot_wide_cap_wait_and_say_so(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("First answer.", delay=1.0), text("Second answer."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, BOT_MAX_CONCURRENT_RUNS=1) as bot:
        fake.inject_interaction("research", {"task": "one"}, user="alice", channel=general)
        first = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first run's model call")
        queued = fake.inject_interaction("research", {"task": "two"}, user="bob", channel=general)
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 2, what="the second thread")
        reply = await answer_of(fake, queued)
        second = next(t for t in fake.threads(parent=general) if t.id != first.id)
        await fake.wait_for_message(second, lambda m: m.content == "Second answer.", within=15)
        await wait_idle(fake, bot)
        first_footer = next(m for m in fake.messages(first) if "tokens" in m.content)
        header = fake.messages(second)[0]
    states = [
        "waiting" if "waiting for a free slot" in c else "running" if "⏳ running" in c else "done"
        for c in header.contents
    ]
    assert states == ["running", "waiting", "running", "done"]
    assert reply.startswith("Queued in") and "maximum of 1 research runs" in reply
    # The second run's model call came only after the first run had answered.
    assert llm.requests[1]["messages"][-1]["content"] == "two"
    assert first_footer.t < fake.messages(second)[1].t


async def test_e2e_all_sessions_share_one_rest_budget_under_the_global_limit(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # The scripted server answers in order, whichever run asks: the runs interleave their steps.
    steps = [tool_call("calculator", {"expression": f"{i}+{i}"}, delay=0.3) for i in range(9)]
    llm.script(*steps, text("A."), text("B."), text("C."))
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild, BOT_REST_WRITES_PER_SECOND=4) as bot:
        limit = fake.enable_global_limit(6, 1.0)
        for user, task in (("alice", "sum one"), ("bob", "sum two"), ("admin", "sum three")):
            fake.inject_interaction("research", {"task": task}, user=user, channel=general)
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 3, what="three threads")
        await fake.wait_for(
            lambda: all(
                any("tokens" in m.content for m in fake.messages(t)) for t in fake.threads(parent=general)
            ),
            within=40,
            what="three answers",
        )
        await wait_idle(fake, bot, within=30)
    # Every bot-token request (messages, edits, typing, reactions, threads) counts for the fake's limit.
    assert limit.violations == []
    assert fake.duplicates == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_usage_and_config_defer_before_touching_the_database(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild):
        usage = fake.inject_interaction("usage me", {}, user="alice", channel=general)
        config = fake.inject_interaction("config show", {}, user="admin", channel=general)
        usage_text = await answer_of(fake, usage)
        await answer_of(fake, config)
    assert usage.response_type == 5 and config.response_type == 5  # deferred, ephemeral "thinking…"
    assert usage.responses[0]["data"]["flags"] & 64 and "alice" in str(usage_text)


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_guild_only_commands_minimal_intents(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    async with running_bot(fake, llm, tmp_path, guild):
        commands = fake.commands(guild)
        intents = [s.intents for s in fake.gateway.sessions.values()]
    assert commands and all(c.get("contexts") == [0] for c in commands)
    assert all(c.get("integration_types") == [0] for c in commands)
    wanted = discord.Intents(guilds=True, guild_messages=True, message_content=True).value
    assert intents == [wanted]
