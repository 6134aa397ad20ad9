"""Members and admins of Discord servers at the edges nobody walked before (stopping another member's
turn, two servers' settings, hostile /config values, long answers): the real discord.py bot on the fake
Discord, the scripted model on 127.0.0.1 (found by the third black-box QA pass of the bot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, error, text, tool_call, tool_calls
from tests.fakes.web_server import FakeWeb
from tests.test_e2e_attachments import CSV, user_text
from tests.test_e2e_config import flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create(
        "Lab", channels=("general",), members=("alice", "bob", "carol"), admins=("admin",)
    )


@pytest.fixture
def other() -> FakeGuild:
    return FakeGuild.create("Other", channels=("general",), members=("dave",), admins=("boss",))


@pytest.fixture
def guilds(guild: FakeGuild, other: FakeGuild) -> list[FakeGuild]:
    return [guild, other]


@pytest.mark.usefixtures("fast_write_window")
async def test_the_member_who_asked_the_running_follow_up_can_stop_it_and_a_bystander_cannot(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Bob's follow-up in alice's thread runs charged to bob, but only alice or a moderator could stop
    it: bob watched his own paid turn run on with no way to end it."""
    llm.script(text("Tides follow the moon."), Reply(text="Nobody reads this.", delay=3))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Tides follow" in m.content, within=10)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "bob", f"<@{bot.user.id}> And waves?")
        await fake.wait_for(lambda: len(llm.requests) == 2, what="bob's turn's model call")
        header = fake.messages(thread)[0]
        (stop,) = [c["custom_id"] for row in header.components for c in row["components"]]
        by_carol = fake.inject_component(stop, message=header, user="carol")
        await fake.wait_for(lambda: by_carol.responses, what="carol's click answered")
        by_bob = fake.inject_component(stop, message=header, user="bob")
        stopped = await fake.wait_for_message(
            thread, lambda m: m.content.startswith("Stopped by bob"), within=10
        )
        await wait_idle(fake, bot)
    assert "can stop it" in by_carol.responses[0]["data"]["content"]
    assert by_bob.responses[0]["data"]["content"] == "Stopping…"
    assert "Nobody reads this." not in [m.content for m in fake.messages(thread)], stopped.content
    assert "⏹️ stopped" in fake.messages(thread)[0].content


async def test_a_long_answer_with_code_and_long_source_urls_keeps_fences_links_and_the_footer_whole(
    fake: FakeDiscord, llm: FakeLLM, web: FakeWeb, guild: FakeGuild, tmp_path: Path
) -> None:
    """Pages read at long URLs (tracking queries) made the footer's source list pass 2,000 characters:
    it was cut there, mid-link, and with it the usage line and the requester's ping (the one
    notification of the answer)."""
    urls = [web.url(f"/plain?ref={i}&utm=" + "x" * 700) for i in range(3)]
    code = "\n".join(f"    print('line {i}', {'y' * 40!r})" for i in range(40))
    words = "Tides rise and fall twice a day. " * 40
    answer = f"{words}\n\n```python\ndef tides():\n{code}\n```\n\n{words}\n\nThat is all."
    llm.script(tool_calls(*[("fetch_url", {"url": u}) for u in urls]), text(answer))
    async with running_bot(fake, llm, tmp_path, guild, agent_env={"FETCH_ALLOW_LOOPBACK": True}) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        footer = await fake.wait_for_message(thread, lambda m: "**Sources**" in m.content, within=20)
        await wait_idle(fake, bot)
    parts = [m.content for m in fake.messages(thread) if "Tides rise" in m.content or "print(" in m.content]
    assert all(len(m.content) <= 2000 for m in fake.messages(thread))
    assert len(parts) >= 3 and all(p.count("```") % 2 == 0 for p in parts), [p[-80:] for p in parts]
    assert parts[-1].endswith("That is all.")
    alice = guild.member("alice").user.id
    assert f"<@{alice}>" in footer.content and " tokens (" in footer.content, footer.content[-300:]
    assert footer.allowed_mentions == {"users": [alice], "parse": []}, footer.allowed_mentions
    listed = [line for line in footer.content.splitlines() if line[:1].isdigit()]
    assert listed and all(line.endswith(">") and "<http" in line for line in listed), listed
    assert footer.content.count("…and ") == (len(listed) < 3)


@pytest.mark.usefixtures("fast_write_window")
async def test_a_mention_with_only_a_file_starts_a_session_and_renaming_its_thread_starts_no_turn(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A mention carrying only a CSV was told "Ask me something after the mention" (a follow-up with only
    a file was taken). Discord announces a rename with a system message by the renamer whose text is the
    new name: when the requester renamed their thread, the bot took the name for a question and ran a
    paid turn on it."""
    llm.script(text("Tides follow the moon."), text("Waves follow the wind."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_message(general, "alice", f"<@{bot.user.id}>", attachments=[("data.csv", CSV)])
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Tides follow" in m.content, within=10)
        await wait_idle(fake, bot)
        alice = fake.state.user(guild.member("alice").user.id)
        fake.state.create_message(thread, alice, {"content": "Tide notes"}, via="injected", message_type=4)
        fake.inject_message(thread, "alice", "And waves?")
        await fake.wait_for_message(thread, lambda m: "Waves follow" in m.content, within=10)
        await wait_idle(fake, bot)
    first, *rest = (user_text(r) for r in llm.requests)
    assert first.startswith("(attachments: data.csv)") and "read it with read_file" in first, first
    assert rest == ["And waves?"], rest


@pytest.mark.usefixtures("fast_write_window")
async def test_a_retried_request_keeps_its_file_and_its_edit_re_runs_the_retry(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A question with a CSV failed and was retried: the retry ran on its text alone (the model never
    heard of the file), and editing the message afterwards offered a re-run that always refused ("only
    the latest turn"), since the retry was not tied to the message; a re-run also dropped the file."""
    llm.script(error(400, "bad request"), text("42 units."), text("Jan: 12."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        mention = f"<@{bot.user.id}> "
        asked = fake.inject_message(
            general, "alice", mention + "Sum the units", attachments=[("data.csv", CSV)]
        )
        thread = await fake.wait_for_thread(parent=general)
        offer = await fake.wait_for_message(thread, lambda m: "try it again" in m.content, within=10)
        await wait_idle(fake, bot)
        fake.inject_component(offer.components[0]["components"][0]["custom_id"], message=offer, user="alice")
        await fake.wait_for_message(thread, lambda m: m.content == "42 units.", within=10)
        await wait_idle(fake, bot)
        edit_message(fake, asked, mention + "Units in January?")
        offer = await fake.wait_for_message(thread, lambda m: m.content.startswith("✏️ You edited"), within=10)
        rerun = fake.inject_component(
            offer.components[0]["components"][0]["custom_id"], message=offer, user="alice"
        )
        await fake.wait_for(lambda: rerun.responses, what="the re-run's answer")
        assert rerun.responses[0]["data"]["content"] == "Re-running with your edit…", rerun.responses
        await fake.wait_for_message(thread, lambda m: m.content == "Jan: 12.", within=10)
        await wait_idle(fake, bot)
    retried, edited = (user_text(r) for r in llm.requests[1:])
    assert retried.startswith("Sum the units") and ".csv" in retried, retried
    assert edited.startswith("Units in January?") and ".csv" in edited, edited


@pytest.mark.usefixtures("fast_write_window")
async def test_an_admin_goes_back_to_auto_routing_and_half_an_mcp_server_is_refused_on_one_server_only(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, other: FakeGuild, tmp_path: Path
) -> None:
    """`/config show` calls the unset default tier "auto (chosen per task)", but `default-tier tier:auto`
    was refused as an unknown tier; `/config mcp name:docs` without a url answered with the (empty)
    list, as if the server had been added."""
    async with running_bot(fake, llm, tmp_path, guild):
        replies = [
            flat(await run(fake, guild, command, options))
            for command, options in [
                ("config default-tier", {"tier": "medium"}),
                ("config default-tier", {"tier": "auto"}),
                ("config default-tier", {"tier": "Auto"}),
                ("config mcp", {"name": "docs"}),
            ]
        ]
        await run(fake, other, "config default-tier", {"tier": "complex"}, user="boss")
        shown = {
            g.name: flat(await run(fake, g, "config show", user=u))
            for g, u in [(guild, "admin"), (other, "boss")]
        }
    assert replies[1] == "✅ Default tier: auto (chosen per task).", replies
    assert replies[2].startswith("No change"), replies
    assert "Give both `name` and `url`" in replies[3], replies
    assert "Default tier: auto (chosen per task)" in shown["Lab"]
    assert "`default_tier`: `medium` → default" in shown["Lab"], shown["Lab"]
    assert "Default tier: `complex` *(set here)*" in shown["Other"], shown["Other"]


async def test_steps_after_a_moderator_deletes_a_progress_message_still_show(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A moderator deleted the message showing step 1: every later step joined that message, each edit
    found it gone, and steps 2 and 3 never showed (only the answer did)."""
    llm.script(
        tool_call("calculator", {"expression": "6*7"}),
        tool_call("calculator", {"expression": "1+1"}, delay=1.5),
        tool_call("calculator", {"expression": "2+2"}, delay=1.5),
        text("The answer."),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "sums"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        step = await fake.wait_for_message(thread, lambda m: "**Step 1**" in m.content, within=10)
        fake.state.delete_message(step, via="injected")
        await fake.wait_for_message(thread, lambda m: m.content == "The answer.", within=15)
        await wait_idle(fake, bot)
    shown = "\n".join(m.content for m in fake.messages(thread))
    assert "**Step 2**" in shown and '`expression="2+2"`\n↳' in shown, shown
    assert "**Step 1**" not in shown  # what the moderator deleted is not posted again
