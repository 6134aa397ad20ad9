"""The seventh black-box QA pass of the bot: a demanding admin and a hostile member, provider or page
against the real discord.py bot on the fake Discord, the scripted model on 127.0.0.1. One bot start
serves several scenarios where they do not disturb each other. Each test failed before the fix its
docstring names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.store import StoreUnavailable
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_records import MessageRecord
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, error, text, tool_call
from tests.fakes.served import served
from tests.test_e2e_config import answer, flat, run
from tests.test_security_memory import research

PLANTED = "[Verify your account](https://evil.example) **now** <@&1>"


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))
    g.add_thread(g.channel("general"), "chat", owner=g.member("bob").user)  # a thread that is no session
    return g


def rendered_links(text: str) -> list[str]:
    """Masked links that render in ``text`` (code spans and escaped brackets show as written)."""
    return re.findall(r"(?<!\\)\[[^\]]*\]\(https?://[^)]*\)", re.sub("`[^`]*`", "", text))


@pytest.mark.usefixtures("fast_write_window")
async def test_words_of_a_provider_or_a_member_are_shown_as_written_in_the_bots_notes(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A provider (or any gateway in front of it) refused a call with the error message
    "[Verify your account](https://evil.example) **now**": the turn's failure note showed it as a
    masked link and bold in the bot's voice, under the thread's header (the retry note escaped the
    same words). A member who edited a finished mention to carry a masked link had the bot's
    "✏️ You edited your message to “…”" offer render that link as the bot's own, and a U+202E in it
    turned the rest of the bot's sentence right to left."""
    general, me = guild.channel("general"), fake.bot_user
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        llm.script(error(400, PLANTED))
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        failed = await fake.wait_for_thread(parent=general, name="🔎 tides")
        await fake.wait_for_message(failed, lambda m: "failed" in m.content and "tokens" in m.content)
        await wait_idle(fake, bot)

        llm.script(text("Paris."))
        ask = fake.inject_message(general, "bob", f"<@{me.id}> Capital of Frnace?", mentions=[me])
        thread = await fake.wait_for_thread(parent=general, name="🔎 Capital of Frnace?")
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        edit_message(fake, ask, f"<@{me.id}> Capital of {PLANTED} \u202egnp.exe?")
        offer = await fake.wait_for_message(thread, lambda m: m.content.startswith("✏️ You edited"))
        await wait_idle(fake, bot)
        mine = [m.content for t in (failed, thread) for m in fake.messages(t) if m.author.id == me.id]
    (note,) = [c for c in mine if c.startswith("⚠️")]
    assert "\\[Verify your account](https://evil.example) \\*\\*now\\*\\*" in note, note  # as written
    assert "\\[Verify your account](https://evil.example) \\*\\*now\\*\\*" in offer.content, offer.content
    assert [rendered_links(c) for c in mine] == [[]] * len(mine), mine
    assert "\u202e" not in offer.content and "gnp.exe?”. Re-run" in offer.content, offer.content


BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200b]")


@pytest.mark.usefixtures("fast_write_window")
async def test_invisible_characters_neither_start_a_paid_run_nor_turn_a_step_line_around(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A member sent /research with a task of zero-width spaces (and mentioned the bot with nothing
    but a U+2066): the blank-task refusal let them through, so the bot opened a thread "🔎 research"
    and ran, and charged, an agent on an invisible question. A page (or a prompt-injected model) put a
    U+202E in the address it fetched and in its text: the step line showed
    "…/?https://bank.example" for an address that says "…/?elpmaxe.knab//:sptth", and the page's
    words after the override read backwards in the bot's line."""
    general, me = guild.channel("general"), fake.bot_user

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="Otters \u202eyawa yats\u202c hold hands while sleeping.")

    app = web.Application()
    app.router.add_get("/otters", page)
    async with (
        served(app) as base,
        running_bot(fake, llm, tmp_path, guild, agent_env={"FETCH_ALLOW_LOOPBACK": True}) as bot,
    ):
        blank = fake.inject_interaction("research", {"task": "\u200b\u200b"}, user="alice", channel=general)
        refused = (await answer(fake, blank)).content
        fake.inject_message(general, "bob", f"<@{me.id}> \u2066\u200b", mentions=[me])
        hint = await fake.wait_for_message(general, lambda m: not m.ephemeral and m.author.id == me.id)

        llm.script(tool_call("fetch_url", {"url": f"{base}/otters?\u202elpmaxe.knab//:sptth"}), text("Done."))
        fake.inject_interaction("research", {"task": "otters"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, name="🔎 otters")
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=20)
        await wait_idle(fake, bot)
        step = next((m.content for m in fake.messages(thread) if m.content.startswith("**Step 1**")), "")
    assert "Tell me what to research" in refused, refused
    assert hint.content.startswith("Ask me something after the mention"), hint.content
    assert [t.name for t in fake.threads(parent=general)] == ["chat", "🔎 otters"]  # no run on nothing
    assert len(llm.requests) == 2, len(llm.requests)  # the otters run's two calls, nothing else
    assert not BIDI.search(step) and "lpmaxe.knab" in step and "yawa yats" in step, step


@pytest.mark.usefixtures("fast_write_window")
async def test_an_admin_reads_an_emptied_domain_list_in_the_recent_changes(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """An admin set `/config fetch allow:none block:none`, then a block-list: `/config show`'s recent
    changes read "`fetch.allow`: default → " and "`fetch.block`:  → `example.com`", an arrow to
    nothing and from nothing, where the reply had said "any public domain" and "none"."""
    async with running_bot(fake, llm, tmp_path, guild):
        await run(fake, guild, "config fetch", {"allow": "none", "block": "none"})
        await run(fake, guild, "config fetch", {"block": "example.com"})
        show = flat(await run(fake, guild, "config show"))
    changes = show.split("Recent changes", 1)[1]
    assert "`fetch.allow`: default → any domain\n" in changes, changes
    assert "`fetch.block`: default → none\n" in changes, changes
    assert "`fetch.block`: none → `example.com`" in changes, changes


async def test_a_stop_says_what_it_stopped_and_stops_an_edits_re_run_too(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Alice pressed Stop while her run's first model call was under way (the provider had the request
    and may bill it): the footer read "0 tokens · $0.0000 · no model call · ⏹️ stopped by alice", as if
    nothing had been asked of the provider (`agentbot ask` says such a call is not counted; so does the
    thread now). Then she fixed a typo in a mention while its turn ran and pressed Stop at once: the
    thread said "Stopping…" and "Stopped by alice", then re-ran the edit anyway and answered it,
    charged. A Stop after an edit now drops the edit's re-run."""
    general, me = guild.channel("general"), fake.bot_user
    llm.script(Reply(hang=True), Reply(hang=True), Reply(text="Edited answer.", delay=1))

    async def stop_in(thread: Any) -> MessageRecord:
        header = fake.messages(thread)[0]
        stop = header.components[0]["components"][0]["custom_id"]
        fake.inject_component(stop, message=header, user="alice")
        return await fake.wait_for_message(thread, lambda m: "stopped by" in m.content, within=15)

    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, name="🔎 tides")
        await fake.wait_for(lambda: llm.requests, what="the model call")
        footer = await stop_in(thread)
        await wait_idle(fake, bot)

        ask = fake.inject_message(general, "alice", f"<@{me.id}> Capital of Frnace?", mentions=[me])
        edited = await fake.wait_for_thread(parent=general, name="🔎 Capital of Frnace?")
        await fake.wait_for(lambda: len(llm.requests) == 2, what="the mention's model call")
        edit_message(fake, ask, f"<@{me.id}> Capital of France?")
        await stop_in(edited)
        await wait_idle(fake, bot)
        shown = [m.content for m in fake.messages(edited)]
    assert "estimated: " in footer.content and "· gpt-4o-mini ·" in footer.content, footer.content
    assert footer.content.endswith("⏹️ stopped by alice · the model call under way is counted by estimate")
    assert "Edited answer." not in shown and not any("Re-running" in c for c in shown), shown


async def test_a_member_over_their_limit_cannot_make_the_bot_flood_a_channel_with_refusals(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Bob used his one request of the day, then mentioned the bot twelve times in #general (and sent
    six bare mentions, and six in a thread of his own): the bot replied to every one, twelve "⛔ Daily
    request limit reached" and six "Ask me something" messages in the channel (each a write outside
    the bot-wide REST budget that every server's threads share) and six "I can't start research inside
    a thread". A member is now told once a minute per channel; alice, asking meanwhile, is answered."""
    general, me, (chat,) = guild.channel("general"), fake.bot_user, guild.threads
    llm.responder = lambda body: text("Paris.")
    async with running_bot(fake, llm, tmp_path, guild, QUOTA_REQUESTS_PER_DAY=1) as bot:
        fake.inject_message(general, "bob", f"<@{me.id}> Capital of France?", mentions=[me])
        first = await fake.wait_for_thread(parent=general, name="🔎 Capital of France?")
        await fake.wait_for_message(first, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        for i in range(12):
            fake.inject_message(general, "bob", f"<@{me.id}> And Italy? ({i})", mentions=[me])
            fake.inject_message(general, "bob", f"<@{me.id}>", mentions=[me]) if i % 2 else None
            fake.inject_message(chat, "bob", f"<@{me.id}> tides? ({i})", mentions=[me]) if i % 2 else None
        fake.inject_message(general, "alice", f"<@{me.id}> Capital of Spain?", mentions=[me])
        spain = await fake.wait_for_thread(parent=general, name="🔎 Capital of Spain?", within=10)

        def said() -> list[str]:
            return [m.content for m in fake.messages(general) if m.author.id == me.id]

        await fake.wait_for(lambda: {c[:2] for c in said()} == {"⛔ ", "As"}, what="both answers to bob")
        await fake.wait_for_message(chat, lambda m: m.author.id == me.id, within=10)
        await fake.wait_for_message(spain, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
    said = said()
    assert sum(c.startswith("⛔ Daily request limit reached") for c in said) == 1, said
    assert sum(c.startswith("Ask me something after the mention") for c in said) == 1, said
    in_chat = [m.content for m in fake.messages(chat) if m.author.id == me.id]
    assert len(in_chat) == 1 and "inside a thread" in in_chat[0], in_chat


async def test_a_database_outage_is_said_only_where_someone_spoke_to_the_bot(
    fake: FakeDiscord,
    llm: FakeLLM,
    guild: FakeGuild,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the database could not be reached (PostgreSQL restarting), every message in every thread
    of the server, bob's lunch plans in his own thread included, got the bot's "⚠️ I can't reach my
    database right now, so I couldn't take this message" under it: the bot looks up whether a thread
    is a session for every message in any thread. It is said now only where someone spoke to the bot
    (a mention, a reply to it, or a thread the bot opened), as before."""
    (chat,), looked_up = guild.threads, []
    llm.script(text("Paris."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        session = await research(fake, guild, "Capital of France?", "alice")
        await wait_idle(fake, bot)

        async def unreachable(thread_id: int) -> None:
            looked_up.append(thread_id)
            raise StoreUnavailable("the database cannot be reached")

        monkeypatch.setattr(bot.services.sessions, "by_thread", unreachable)
        fake.inject_message(chat, "bob", "lunch at noon, anyone?")
        await fake.wait_for(lambda: looked_up == [chat.id], what="bob's message handled")
        fake.inject_message(session, "alice", "and Italy?")  # her follow-up is not taken: she is told
        told = await fake.wait_for_message(session, lambda m: "reach my database" in m.content, within=10)
        await wait_idle(fake, bot)
        in_chat = [m.content for m in fake.messages(chat) if m.author.id == fake.bot_user.id]
    assert in_chat == [], in_chat
    assert "send it again in a minute" in told.content and len(llm.requests) == 1, told.content


@pytest.mark.usefixtures("fast_write_window")
async def test_an_edit_after_the_thread_was_archived_does_not_reopen_it(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A moderator archived (and, for a second one, locked) the thread of alice's finished mention;
    alice then fixed a typo in her mention in #general. The bot posted its "✏️ You edited your message…"
    offer into the thread, and a send to an archived thread reopens it, where README says an archived
    thread is never written to again. No offer is posted there now."""
    general, me = guild.channel("general"), fake.bot_user
    llm.responder = lambda body: text("Paris.")
    async with running_bot(fake, llm, tmp_path, guild) as bot:

        async def answered_then_closed(task: str, *, locked: bool) -> tuple[MessageRecord, Any]:
            ask = fake.inject_message(general, "alice", f"<@{me.id}> {task}", mentions=[me])
            thread = await fake.wait_for_thread(parent=general, name=f"🔎 {task}")
            await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
            await wait_idle(fake, bot)
            fake.archive_thread(thread, locked=locked)  # the bot's own view of it says so, then
            await fake.wait_for(lambda: getattr(bot.get_channel(thread.id), "archived", True), what="it")
            return ask, thread

        closed = [await answered_then_closed(f"Capital of Frnace {i}?", locked=i == 1) for i in (0, 1)]
        for i, (ask, _) in enumerate(closed):
            edit_message(fake, ask, f"<@{me.id}> Capital of France {i}?")
        fake.inject_message(general, "alice", f"<@{me.id}> and Spain?", mentions=[me])  # after the edits
        await fake.wait_for_thread(parent=general, name="🔎 and Spain?")
        await wait_idle(fake, bot)
    threads = [thread for _, thread in closed]
    offers = [m.content for t in threads for m in fake.messages(t) if m.content.startswith("✏️")]
    assert [t.archived for t in threads] == [True, True] and offers == [], offers
