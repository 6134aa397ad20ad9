"""Turn boundaries end to end (real discord.py, fake Discord, scripted LLM, real SQLite): the header names
the model that runs, a run that cannot afford one step is refused before it is charged, and a thread's
writes stay within 5 per 5 s across turns."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.test_e2e_config import flat, run

TIERS = {"simple": ("gpt-4.1-nano",), "medium": ("gpt-4.1-mini",), "complex": ("gpt-5",)}


async def test_e2e_the_header_names_the_model_an_auto_routed_session_runs(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Hello."))
    # AGENT_MODEL (gpt-4o-mini) is in no tier: an auto-routed session never calls it.
    async with running_bot(fake, llm, tmp_path, guild, tiers_table=TIERS) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Say hello"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
    header = fake.messages(thread)[0].content
    called = llm.requests[0]["model"]
    assert f"model {called} ·" in header and "gpt-4o-mini" not in header
    assert "(auto)" in header


async def test_e2e_a_run_that_cannot_afford_one_step_is_refused_once_before_it_is_charged(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Paris.", prompt_tokens=19_700, completion_tokens=0))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await bot.services.guild_settings.set(guild.id, 1, "limit.tokens_per_day", "20000")
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        # 300 tokens left: a follow-up cannot take one step.
        fake.inject_message(thread, "alice", "And of Spain?")
        await fake.wait_for_message(thread, lambda m: m.content.startswith("⛔"), within=15)
        await wait_idle(fake, bot)
        # Nor can a new /research: refused in private, no thread opened.
        inter = fake.inject_interaction(
            "research", {"task": "Capital of Peru?"}, user="alice", channel=general
        )
        await fake.wait_for(
            lambda: inter.original_message_id and fake.message(inter.original_message_id).content,
            what="the refusal",
        )
        refusal = fake.message(inter.original_message_id)
        usage = await run(fake, guild, "usage me", user="alice")
    msgs = fake.messages(thread)
    limit = [m for m in msgs if "Not enough of the daily token limit is left" in m.content]
    assert len(limit) == 1 and "<t:" in limit[0].content  # the limit and its reset, once
    assert not any(c.get("components") for m in msgs[1:] for c in m.components)  # no Retry (nor Stop)
    assert refusal.ephemeral and "Not enough of the daily token limit is left" in refusal.content
    assert len(fake.threads(parent=general)) == 1
    assert len(llm.requests) == 1
    assert "**Requests today**: 1 of" in flat(usage)  # the refused ones were not charged


async def test_e2e_writes_stay_within_five_per_five_seconds_across_a_turn_boundary(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "1+1"}, delay=0.3),
        tool_call("calculator", {"expression": "2+2"}),
        text("Two and four."),
        tool_call("calculator", {"expression": "3+3"}),
        text("Six."),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Add things"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        fake.inject_message(thread, "alice", "And 3+3?")  # queued: it starts the moment turn 1 ends
        await fake.wait_for_message(thread, lambda m: m.content == "Six.", within=30)
        await wait_idle(fake, bot, within=30)
    contents = [m.content for m in fake.messages(thread)]
    assert contents.index("Two and four.") < contents.index("Six.")
    # 4.9 s: the fake stamps a write when it arrives, a few ms after the bot's budget let it go.
    assert fake.max_writes_in_window(thread, 4.9) <= 5
    assert fake.duplicates == []
