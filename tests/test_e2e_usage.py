"""/usage end to end: the real bot, the fake Discord and the scripted LLM over 127.0.0.1, a real SQLite file."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild, MessageRecord
from tests.fakes.llm_server import FakeLLM, text
from tests.test_e2e_config import flat, run

NO_PERMISSIONS = 0


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))
    researchers = g.add_role("Researchers")
    g.member("alice").role_ids.append(researchers.id)
    return g


async def research_once(fake: FakeDiscord, guild: FakeGuild, bot, answer: str) -> None:
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": "How tall is Everest?"}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general)
    await fake.wait_for_message(thread, lambda m: m.content == answer, within=15)
    await wait_idle(fake, bot)


def line(msg: MessageRecord, heading: str) -> str:
    return next(x for x in flat(msg).splitlines() if heading in x)


def reset_times(msg: MessageRecord) -> list[int]:
    return [int(t) for t in re.findall(r"<t:(\d+):R>", flat(msg))]


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_usage_me_after_research_shows_tokens_used_left_and_resets(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("About 8,849 m.", prompt_tokens=300, completion_tokens=40))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await research_once(fake, guild, bot, "About 8,849 m.")
        mine = await run(fake, guild, "usage me", user="alice")
        bobs = await run(fake, guild, "usage me", user="bob")
    assert mine.embeds[0]["title"] == "Usage · alice"
    assert "**Requests today**: 1 of 50 · 49 left · resets <t:" in line(mine, "Requests today")
    assert "**Tokens today**: 340 of 200,000 · 199,660 left · resets <t:" in line(mine, "Tokens today")
    spending, budget = line(mine, "Spending this month"), line(mine, "Server budget")
    assert "**Spending this month**: $0.0" in spending and "of $5.00" in spending  # a fraction of a cent
    assert "**Sessions running**: 0 of 2" in line(mine, "Sessions running")
    assert "of $100.00" in budget and "shared by the whole server" in budget
    now = time.time()
    day, month = reset_times(mine)[0], reset_times(mine)[2]
    assert now < day <= now + 86_400 and day % 86_400 == 0  # next midnight UTC
    assert now < month <= now + 31 * 86_400
    # Someone else's usage is theirs alone.
    assert "**Tokens today**: 0 of 200,000" in line(bobs, "Tokens today")


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_usage_server_is_for_admins_and_breaks_down_by_user_and_model(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Everest: 8,849 m.", prompt_tokens=1200, completion_tokens=80, reasoning_tokens=50))
    alice = guild.member("alice")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await research_once(fake, guild, bot, "Everest: 8,849 m.")
        (thread,) = fake.threads(guild.channel("general"))
        footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content)
        refused = await run(fake, guild, "usage server", user="bob")
        stripped = await run(fake, guild, "usage server", user="admin", permissions=NO_PERMISSIONS)
        await run(fake, guild, "config limits", {"limit": "guild_budget_per_month_usd", "value": "20"})
        report = await run(fake, guild, "usage server", user="admin")
    for msg in (refused, stripped):
        assert msg.content.startswith("⛔ You need the Manage Server permission to see this server's usage.")
        assert not msg.embeds
    shown = flat(report)
    assert "1,280 tokens" in shown and "of a $20.00 budget" in shown and "resets <t:" in shown
    top = shown.split("Top users\n", 1)[1].splitlines()[0]
    assert top.startswith(f"1. <@{alice.id}>: 1 request · 1,280 tokens · $0.0")
    models = shown.split("By provider and model\n", 1)[1].splitlines()[0]
    # The hidden thinking a reasoning model was billed for is shown apart, in the answer and per model.
    assert models.startswith("`openai/gpt-4o-mini`: 1 call · 1,200 in / 80 out (50 reasoning) tokens · $0.0")
    assert "(1,200 in, 80 out, of which 50 reasoning)" in footer.content


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_usage_me_shows_the_most_generous_role_limit(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    researchers = guild.role("Researchers")
    async with running_bot(fake, llm, tmp_path, guild):
        await run(fake, guild, "config limits", {"limit": "tokens_per_day", "value": "1000"})
        await run(
            fake, guild, "config limits", {"limit": "tokens_per_day", "value": "50000", "role": researchers}
        )
        await run(
            fake,
            guild,
            "config limits",
            {"limit": "requests_per_day", "value": "unlimited", "role": researchers},
        )
        alices = await run(fake, guild, "usage me", user="alice")
        bobs = await run(fake, guild, "usage me", user="bob")
    assert "**Tokens today**: 0 of 50,000 · 50,000 left" in line(alices, "Tokens today")
    assert "**Requests today**: 0 (unlimited)" in line(alices, "Requests today")
    assert "**Tokens today**: 0 of 1,000 · 1,000 left" in line(bobs, "Tokens today")
    assert "**Requests today**: 0 of 50 · 50 left" in line(bobs, "Requests today")


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_usage_judge_classifier_tokens_count_against_the_requester(tmp_path, monkeypatch) -> None:
    from tests.e2e.harness import running_bot, wait_idle
    from tests.fakes.discord_server import FakeDiscord, FakeGuild
    from tests.fakes.llm_server import FakeLLM, text

    monkeypatch.setenv("ROUTER_CLASSIFIER", "judge")
    monkeypatch.setenv("ROUTER_JUDGE_MODEL", "gpt-4o-mini")
    guild = FakeGuild.create("Lab", channels=("general",), members=("alice",))
    async with FakeDiscord([guild]) as fake, FakeLLM() as llm:
        llm.script(
            text("simple", prompt_tokens=50, completion_tokens=1),
            text("Hi!", prompt_tokens=100, completion_tokens=20),
        )
        async with running_bot(fake, llm, tmp_path, guild) as bot:
            general = guild.channel("general")
            fake.inject_interaction("research", {"task": "say hi"}, user="alice", channel=general)
            thread = await fake.wait_for_thread(parent=general)
            await fake.wait_for_message(thread, lambda m: m.content == "Hi!", within=15)
            await wait_idle(fake, bot)
            alice = guild.member("alice")
            report = await bot.services.quotas.usage(guild.id, alice.id)
    tokens = report.item("tokens_per_day")
    assert tokens.used == 50 + 1 + 100 + 20  # the judge's call and the run's


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_server_without_usage_is_counted_and_shown_as_estimated(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.report_usage = False  # like llama-cpp-python's OpenAI-compatible streams
    answer = "Everest is 8,849 m tall. " * 8
    llm.script(text(answer.strip()))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await research_once(fake, guild, bot, answer.strip())
        (thread,) = fake.threads(guild.channel("general"))
        footer = await fake.wait_for_message(thread, lambda m: "tokens (" in m.content)
        mine = await run(fake, guild, "usage me", user="alice")
    shown = re.search(
        r"estimated: ([\d,]+) tokens \(([\d,]+) in, ([\d,]+) out\) · estimated: \$(\S+)", footer.content
    )
    assert shown, footer.content
    total, sent, got = (int(g.replace(",", "")) for g in shown.groups()[:3])
    assert sent > 0 and got >= len(answer.strip()) // 4 and total == sent + got
    assert float(shown.group(4)) > 0  # gpt-4o-mini has a price: never $0.0000
    # The token quota charged what the footer shows.
    assert f"**Tokens today**: ~{total:,} of 200,000" in line(mine, "Tokens today")  # marked as the footer is
