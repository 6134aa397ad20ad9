"""Many servers on one bot, as their admins and members meet it: the real discord.py bot on the fake
Discord with two servers, the scripted LLM on 127.0.0.1, a real SQLite store (found by the session-13
servers engineer). One server's settings, input and usage never reach another's, and what an admin is
told is what the bot then does."""

from __future__ import annotations

import time
from pathlib import Path

import discord
import pytest

from bot.limits import GUILD_BUDGET
from tests.e2e.harness import running_bot
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, error, text, tool_call
from tests.fakes.mcp_server import HttpMcpServer
from tests.test_e2e_config import answer, autocomplete, choices, flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create(
        "Lab", channels=("general", "c1", "c2", "c3"), members=("alice",), admins=("admin", "ada")
    )


@pytest.fixture
def other() -> FakeGuild:
    return FakeGuild.create("Club", channels=("general",), members=("dave",), admins=("boss",))


@pytest.fixture
def guilds(guild: FakeGuild, other: FakeGuild) -> list[FakeGuild]:
    return [guild, other]


@pytest.mark.usefixtures("fast_write_window")
async def test_an_mcp_servers_key_in_its_url_query_is_never_shown_back(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Hosted MCP servers take their key in the query (``?api_key=``), and /config show hid it, but only
    once a turn had connected to the server (which registers it as a secret): the change's own reply
    and ``/config mcp``'s listing, and after a restart /config show too, wrote the key out whole to
    every admin who looked."""
    url = "https://93.184.216.34/mcp?api_key=sk-live-SEKRET123"  # an address: no name to look up
    async with running_bot(fake, llm, tmp_path, guild):
        added = flat(await run(fake, guild, "config mcp", {"name": "wiki", "url": url}))
        listed = flat(await run(fake, guild, "config mcp"))
        shown = flat(await run(fake, guild, "config show"))
    for said in (added, listed, shown):
        assert "SEKRET123" not in said, said
        assert "93.184.216.34/mcp" in said, said


@pytest.mark.usefixtures("fast_write_window")
async def test_admins_adding_channels_at_the_same_moment_keep_every_channel(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, other: FakeGuild, tmp_path: Path
) -> None:
    """``/config channels add`` reads the list and writes it back with one more: three admins adding a
    channel at once were each told ✅, and the bot then answered in one of the three channels only."""
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        asked = [
            fake.inject_interaction(
                "config channels", {"action": "add", "channel": guild.channel(c)}, user=u, channel=general
            )
            for u, c in (("admin", "c1"), ("ada", "c2"), ("admin", "c3"))
        ]
        said = [flat(await answer(fake, inter)) for inter in asked]
        shown = flat(await run(fake, guild, "config show"))
        elsewhere = await bot.services.guild_settings.get(other.id)
    assert all(s.startswith("✅") for s in said), said
    for c in ("c1", "c2", "c3"):
        assert f"<#{guild.channel(c).id}>" in shown.split("Recent changes")[0], shown
    assert elsewhere.channels == ()


@pytest.mark.usefixtures("fast_write_window")
async def test_a_decimal_comma_in_a_limit_is_refused_instead_of_read_as_a_hundred_times_more(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Commas were dropped wherever they stood, as thousands separators: an admin writing a monthly limit
    of 2,99 (a decimal comma, as much of Europe writes $2.99) got $299.00, and 0,50 got $50.00; a
    spending cap 100 times the one meant. Thousands separators still work."""
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        cents = flat(
            await run(fake, guild, "config limits", {"limit": "cost_per_month_usd", "value": "2,99"})
        )
        half = flat(await run(fake, guild, "config limits", {"limit": GUILD_BUDGET, "value": "0,50"}))
        items = flat(await run(fake, guild, "config memory", {"max_items": "1,5"}))
        refused = (await bot.services.guild_settings.get(guild.id)).overrides
        grouped = flat(
            await run(fake, guild, "config limits", {"limit": "tokens_per_day", "value": "1,500,000"})
        )
    for said, key in ((cents, "cost_per_month_usd"), (half, GUILD_BUDGET), (items, "memory.max_items")):
        assert said.startswith("⚠️") and key in said, said
    assert "2.99" in cents, cents
    assert refused == {}
    assert grouped == "✅ tokens per day: 200,000 → 1,500,000", grouped


async def test_usage_me_counts_the_request_of_a_research_waiting_for_a_free_slot(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A /research waiting in line for a run slot holds its request against the daily limit (a second
    one is refused), but /usage me left it out: it said "0 of 1 · 1 left" while /research answered
    "Daily request limit reached: you've made 1 of 1 requests today"."""
    general = guild.channel("general")
    llm.script(text("never finished", hang=True))
    async with running_bot(
        fake, llm, tmp_path, guild, BOT_MAX_CONCURRENT_RUNS=1, BOT_SHUTDOWN_GRACE_SECONDS=0
    ):
        await run(fake, guild, "config limits", {"limit": "requests_per_day", "value": "1"})
        fake.inject_interaction("research", {"task": "long one"}, user="admin", channel=general)
        await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first run's model call")
        fake.inject_interaction("research", {"task": "mine"}, user="alice", channel=general)
        await fake.wait_for(lambda: len(fake.threads(parent=general)) == 2, what="alice's thread")
        usage = flat(await run(fake, guild, "usage me", user="alice"))
        again = flat(
            await answer(
                fake, fake.inject_interaction("research", {"task": "more"}, user="alice", channel=general)
            )
        )
        # Left as they are: the bot stops at once (no grace), alice's run stored for the next start.
    assert "Daily request limit reached" in again, again
    assert "**Requests today**: 1 of 1 · none left" in usage, usage


async def test_a_model_one_server_chose_that_keeps_failing_does_not_stop_another_servers_runs(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, other: FakeGuild, tmp_path: Path
) -> None:
    """Every server's runs share the provider's circuit breaker. Lab's admins put their tiers on a model
    the gateway answered 503 for (overloaded), and the 503 cooled down the whole provider: Club's next
    research, on a model that worked, failed at once ("every model this run may use is cooling down after
    errors; openai is cooling down"), for 60 s, doubling with each of Lab's tries up to 15 minutes. Only
    the failing model cools down now."""
    llm.responder = lambda body: (
        error(503, "model overloaded") if body["model"] == "gpt-4.1-mini" else text("Yes.")
    )
    async with running_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0):
        for tier in ("simple", "medium", "complex"):
            await run(fake, guild, "config tier", {"tier": tier, "models": "gpt-4.1-mini"})
        for where, who in ((guild, "alice"), (other, "dave")):
            fake.inject_interaction(
                "research", {"task": "Is it up?"}, user=who, channel=where.channel("general")
            )
            thread = await fake.wait_for_thread(parent=where.channel("general"))
            # Lab's turn has failed (its breaker opened) once it says so; Club's answers, or fails at once.
            await fake.wait_for_message(
                thread,
                lambda m: any(w in m.content for w in ("still failing", "Yes.", "cooling down")),
                within=20,
            )
    lab, club = (
        [m.content for m in fake.messages(fake.threads(parent=g.channel("general"))[0])]
        for g in (guild, other)
    )
    assert any("HTTP 503" in m for m in lab), lab
    assert "Yes." in club, club
    assert not any("cooling down" in m for m in club), club


@pytest.mark.usefixtures("fast_write_window")
async def test_an_admin_may_set_max_steps_up_to_the_bots_own_default(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """With AGENT_MAX_STEPS=80 (1-100 allowed), /config show said "Max steps: 80", yet /config max-steps
    refused 80, and 60, as "must be a whole number from 1 to 50": an admin could lower it but never pin it,
    nor set it back short of resetting it."""
    async with running_bot(fake, llm, tmp_path, guild, agent_env={"AGENT_MAX_STEPS": 80}):
        shown = flat(await run(fake, guild, "config show"))
        lower = flat(await run(fake, guild, "config max-steps", {"steps": 60}))
        back = flat(await run(fake, guild, "config max-steps", {"steps": 80}))
        past = flat(await run(fake, guild, "config max-steps", {"steps": 81}))
    assert "Max steps: **80**" in shown, shown
    assert lower == "✅ `max_steps`: 80 → 60", lower
    assert back == "✅ `max_steps`: 60 → 80", back
    assert past == "⚠️ max_steps must be a whole number from 1 to 80; got 81.", past


@pytest.mark.usefixtures("fast_write_window")
async def test_an_unknown_model_is_answered_with_models_this_bot_can_call(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A mistyped model name was answered with the first 25 of every model the price package knows: all
    ``anthropic:`` models on a bot without ANTHROPIC_API_KEY, each of which /config tier then refused as
    unusable; the autocomplete offered them first too."""
    async with running_bot(fake, llm, tmp_path, guild):
        typo = flat(await run(fake, guild, "config tier", {"tier": "simple", "models": "gpt-4o-mni"}))
        offered = await choices(
            fake, autocomplete(fake, guild, "config tier", {"tier": "simple", "models": ""}, "models")
        )
        claude = await choices(
            fake, autocomplete(fake, guild, "config tier", {"tier": "simple", "models": "claude"}, "models")
        )
    assert typo.startswith("⚠️ Unknown model 'gpt-4o-mni'. Models: ") and "gpt-4o-mini" in typo, typo
    assert "anthropic:" not in typo and "gemini" not in typo, typo
    assert offered and not any(c["value"].startswith(("anthropic:", "gemini")) for c in offered), offered
    assert claude == []


async def test_a_turn_keeps_its_servers_mcp_tools_when_an_admin_changes_the_mcp_list_meanwhile(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A server's MCP connections were closed as soon as its list changed and anything asked for its
    tools again (another turn starting, /config tools): a turn running meanwhile had its call under way
    cut and every later call refused ("the inv MCP server is unavailable (closed)"), though nothing was
    wrong with the server it was using."""
    llm.script(tool_call("inv__slow", {"seconds": 2}), text("Slow done."))
    general = guild.channel("general")
    with HttpMcpServer() as server:
        async with running_bot(
            fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0, agent_env={"FETCH_ALLOW_LOOPBACK": True}
        ):
            await run(fake, guild, "config mcp", {"name": "inv", "url": server.url})
            fake.inject_interaction("research", {"task": "Take your time"}, user="alice", channel=general)
            thread = await fake.wait_for_thread(parent=general)
            await fake.wait_for_message(thread, lambda m: "inv__slow" in m.content, within=15)
            await run(fake, guild, "config mcp", {"name": "spare", "url": "http://127.0.0.1:9/mcp"})
            await run(fake, guild, "config tools", {"tool": "inv__add", "enabled": True})
            # The call's result is in the model's next request; the turn's last writes need not wait.
            await fake.wait_for(lambda: len(llm.requests) == 2, within=15, what="the call's result")
    observed = llm.requests[1]["messages"][-1]["content"]
    assert observed == "done", observed


@pytest.mark.usefixtures("fast_write_window")
async def test_an_admin_adding_a_channel_the_bot_cannot_work_in_is_told_so(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """/config channels add answered ✅ for a channel where the bot lacks what a session needs: the
    server's research was then limited to a channel where every /research and mention is refused."""
    for role in (guild.everyone, next(r for r in guild.roles if r.managed)):  # the bot's own role in Lab
        role.permissions &= ~discord.Permissions(create_public_threads=True).value
    async with running_bot(fake, llm, tmp_path, guild):
        said = flat(
            await run(fake, guild, "config channels", {"action": "add", "channel": guild.channel("c1")})
        )
    first, _, warning = said.partition("\n")
    assert first.startswith("✅"), said
    assert warning.startswith("⚠️") and "Create Public Threads" in warning, said


@pytest.mark.usefixtures("fast_write_window")
async def test_an_admin_lowering_memory_limits_is_told_how_many_memories_they_forget(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """/config memory max_items:1 (a typo for 100, say) answered "✅ memory.max_items: 1,000 → 1", and
    the next use of memory forgot every memory but the newest, for good: nothing said any would go.
    The reply now says how many, while setting it back still keeps them."""
    ns, day = str(guild.id), 86400.0
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=True) as bot:
        memory = bot.services.memory
        assert memory is not None, bot.services.memory_error
        for age, note in (
            (100, "Raids were on Tuesday."),
            (2, "Raids moved to Friday."),
            (1, "They start at 21:00."),
        ):
            await memory.store(ns, note, kind="fact", created=time.time() - age * day)
        by_age = flat(await run(fake, guild, "config memory", {"max_age_days": "30"}))
        by_count = flat(
            await run(fake, guild, "config memory", {"max_items": "1", "max_age_days": "unlimited"})
        )
        kept = flat(await run(fake, guild, "config memory", {"max_items": "unlimited"}))
        stats = await memory.stats(ns)
    assert by_age.startswith("✅") and "⚠️ 1 of this server's 3 memories" in by_age, by_age
    assert "⚠️ 2 of this server's 3 memories" in by_count, by_count
    assert "⚠️" not in kept, kept
    assert stats.memories == 3  # nothing is forgotten before memory is next used
