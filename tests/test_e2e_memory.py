"""End to end: per-server memory through the real bot, the fake Discord, a real Chroma PersistentClient
under the test's data directory and the real offline MiniLM embedding.

The embedding loads once per process (a few seconds), so the scenarios are grouped into few bot starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.memory.records import record_id
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild, InteractionRecord, MessageRecord
from tests.fakes.llm_server import FakeLLM, text

TASK = "How often should I feed a sourdough starter, and with what?"
ANSWER = (
    "Feed a sourdough starter once a day with equal weights of flour and water, "
    "discarding about half of it before each feeding."
)
PARAPHRASE = "What's the daily routine to keep my sourdough culture alive and bubbly?"
ANSWER_2 = "Keep it at room temperature and refresh it every day; a fridge slows it to weekly feeds."
B_ANSWER = "Server B's own answer about starters: rye flour makes them livelier."


@pytest.fixture
def guild_a() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


@pytest.fixture
def guild_b() -> FakeGuild:
    return FakeGuild.create("Other", channels=("general",), members=("carol",), admins=("boss",))


@pytest.fixture
def guilds(guild_a: FakeGuild, guild_b: FakeGuild) -> list[FakeGuild]:
    return [guild_a, guild_b]


def _reply(fake: FakeDiscord, inter: InteractionRecord) -> MessageRecord | None:
    """The command's answer once it is no longer "thinking…"."""
    if inter.original_message_id is None:
        return None
    msg = fake.message(inter.original_message_id)
    return msg if not msg.loading and (msg.content or msg.attachments) else None


async def command(
    fake: FakeDiscord, guild: FakeGuild, name: str, options: dict[str, object], user: str
) -> MessageRecord:
    inter = fake.inject_interaction(name, options, user=user, channel=guild.channel("general"))
    msg = await fake.wait_for(lambda: _reply(fake, inter), within=10, what=f"/{name}'s answer")
    assert msg.ephemeral, f"/{name} answered in public"
    assert msg.allowed_mentions is not None and msg.allowed_mentions.get("parse") == []
    return msg


def button(msg: MessageRecord, label_start: str) -> str:
    buttons = [c for row in msg.components for c in row["components"]]
    found = [b["custom_id"] for b in buttons if b["label"].startswith(label_start)]
    assert found, f"no {label_start!r} button on {msg.content!r} (buttons: {buttons})"
    return found[0]


async def click(fake: FakeDiscord, msg: MessageRecord, label_start: str, user: str) -> str:
    """Click a button on an ephemeral prompt; returns what the prompt says afterwards."""
    before = msg.content
    fake.inject_component(button(msg, label_start), message=msg, user=user)
    await fake.wait_for(lambda: fake.message(msg.id).content != before, within=10, what="the prompt's update")
    after = fake.message(msg.id)
    assert after.components == [], "the buttons stay after the answer"
    return after.content


async def research(fake: FakeDiscord, guild: FakeGuild, task: str, user: str) -> list[str]:
    general = guild.channel("general")
    known = {t.id for t in fake.threads(parent=general)}
    fake.inject_interaction("research", {"task": task}, user=user, channel=general)
    thread = await fake.wait_for(
        lambda: next((t for t in fake.threads(parent=general) if t.id not in known), None), what="a thread"
    )
    await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
    return [m.content for m in fake.messages(thread)]


async def test_e2e_memory_research_is_recalled_searchable_and_stays_in_its_server(
    fake: FakeDiscord, llm: FakeLLM, guild_a: FakeGuild, guild_b: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text(ANSWER), text(ANSWER_2), text(B_ANSWER))
    first = record_id(str(guild_a.id), ANSWER)
    async with running_bot(fake, llm, tmp_path, guild_a, MEMORY_ENABLED=True) as bot:
        assert bot.services.memory is not None, bot.services.memory_error
        assert (tmp_path / "memory").is_dir()  # a real PersistentClient under the data directory

        # A finished /research is stored; a paraphrased question recalls it in the thread and for the model.
        await research(fake, guild_a, TASK, "alice")
        await wait_idle(fake, bot)
        thread_2 = await research(fake, guild_a, PARAPHRASE, "bob")
        await wait_idle(fake, bot)
        assert any("recalled 1 memory" in c and first in c for c in thread_2), thread_2
        system = llm.requests[1]["messages"][0]
        assert system["role"] == "system"
        assert f"[memory {first}," in system["content"] and ANSWER in system["content"]
        assert "Memories from earlier work" not in llm.requests[0]["messages"][0]["content"]

        found = await command(fake, guild_a, "memory search", {"query": "feeding a sourdough starter"}, "bob")
        assert f"`{first}`" in found.content and "research" in found.content
        assert "equal weights of flour and water" in found.content

        # Server B, same bot and same store: it never sees server A's memory, by command or by recall.
        b_search = await command(
            fake, guild_b, "memory search", {"query": "feeding a sourdough starter"}, "carol"
        )
        assert "Nothing in this server's memory" in b_search.content and first not in b_search.content
        b_thread = await research(fake, guild_b, TASK, "carol")
        await wait_idle(fake, bot)
        assert not any("recalled" in c for c in b_thread), b_thread
        b_system = llm.requests[2]["messages"][0]["content"]
        assert "Memories from earlier work" not in b_system and ANSWER not in b_system
        b_forget = await command(fake, guild_b, "memory forget", {"id": first}, "boss")  # an admin of B
        assert f"no memory `{first}`" in b_forget.content and b_forget.components == []
        b_stats = await command(fake, guild_b, "memory stats", {}, "carol")
        assert "Memories: **1**" in b_stats.content  # its own research only

        stats = await command(fake, guild_a, "memory stats", {}, "bob")
        assert "Memories: **2**" in stats.content and "research 2" in stats.content
        assert "shared collection" in stats.content and "at most 1000 items" in stats.content

        # Export: a JSONL attachment of this server's memories only, for any member.
        export = await command(fake, guild_a, "memory export", {}, "bob")
        (attachment,) = export.attachments
        assert attachment.filename.endswith(".jsonl")
        rows = [json.loads(line) for line in attachment.data.decode().splitlines()]
        assert {r["text"] for r in rows} == {ANSWER, ANSWER_2}
        assert first in {r["id"] for r in rows} and {r["kind"] for r in rows} == {"research"}
        assert all(r["created"].startswith("20") and r["task"] for r in rows)

        # Clear is for Manage Server only: bob is refused and nothing is offered to click.
        refused = await command(fake, guild_a, "memory clear", {}, "bob")
        assert "Manage Server" in refused.content and refused.components == []
        assert (await bot.services.memory.stats(str(guild_a.id))).memories == 2


async def test_e2e_memory_forget_and_clear_confirm_check_permissions_and_survive_a_restart(
    fake: FakeDiscord, llm: FakeLLM, guild_a: FakeGuild, guild_b: FakeGuild, tmp_path: Path
) -> None:
    a, b = str(guild_a.id), str(guild_b.id)
    alice, bob = guild_a.member("alice").id, guild_a.member("bob").id
    book = "The book club meets on Thursdays at 8 pm UTC in the library voice channel."
    raid = "Our raid team needs two healers and one tank for the weekly dungeon."
    founded = "This server was founded in 2019 by three friends from university."
    async with running_bot(fake, llm, tmp_path, guild_a, MEMORY_ENABLED=True) as bot:
        memory = bot.services.memory
        assert memory is not None, bot.services.memory_error
        book_id = (await memory.store(a, book, author=str(alice))).ids[0]
        raid_id = (await memory.store(a, raid, author=str(bob))).ids[0]
        founded_id = (await memory.store(a, founded)).ids[0]  # no author (as an import leaves it)
        await memory.store(b, book, author="1")  # the same text in server B is B's own memory

        # Only the author (or Manage Server) may forget: bob is told so and gets no button.
        refused = await command(fake, guild_a, "memory forget", {"id": book_id}, "bob")
        assert "Not yours to forget" in refused.content and refused.components == []
        nobody = await command(
            fake, guild_a, "memory forget", {"query": "when was this server founded"}, "bob"
        )
        assert f"`{founded_id}`" in nobody.content and "Not yours" in nobody.content and not nobody.components

        # alice cancels once, then asks by meaning; the prompt shows what would go, and only that.
        prompt = await command(fake, guild_a, "memory forget", {"id": f"`{book_id}`"}, "alice")
        assert book_id in prompt.content and "book club" in prompt.content
        assert "Cancelled" in await click(fake, prompt, "Cancel", "alice")
        prompt = await command(
            fake, guild_a, "memory forget", {"query": "what day is the book club"}, "alice"
        )
        assert f"`{book_id}`" in prompt.content and raid_id not in prompt.content
        assert await memory.get(a, [book_id])  # nothing is forgotten before the click
        kept_prompt = prompt

    # A new process: the confirmation still works, re-checked against the store.
    async with running_bot(fake, llm, tmp_path, guild_a, MEMORY_ENABLED=True) as bot:
        memory = bot.services.memory
        done = await click(fake, kept_prompt, "Forget 1 memory", "alice")
        assert done.startswith("🧠 Forgot 1 memory") and book_id in done
        assert await memory.get(a, [book_id]) == []
        after = await command(fake, guild_a, "memory search", {"query": "what day is the book club"}, "alice")
        assert book_id not in after.content
        assert await memory.get(b, [record_id(b, book)])  # server B's copy is untouched

        # An admin may forget anyone's memory; an old confirmation only says it expired.
        cog = bot.get_cog("MemoryCog")  # loaded as an extension: its own module object, so no isinstance
        assert cog is not None and cog.confirm_ttl == 600.0
        cog.confirm_ttl = -1.0  # a confirmation clicked after it expired
        prompt = await command(fake, guild_a, "memory forget", {"id": raid_id}, "admin")
        assert "expired" in await click(fake, prompt, "Forget", "admin")
        assert await memory.get(a, [raid_id])
        cog.confirm_ttl = 600.0

        # Clear: refused for a member, confirmed by an admin, and only this server's memory goes.
        refused = await command(fake, guild_a, "memory clear", {}, "bob")
        assert "Manage Server" in refused.content and refused.components == []
        prompt = await command(fake, guild_a, "memory clear", {}, "admin")
        assert "all 2 memories" in prompt.content
        assert "Cleared this server's memory: 2 items deleted" in await click(fake, prompt, "Delete", "admin")
        empty = await command(fake, guild_a, "memory stats", {}, "admin")
        assert "Memories: **0**" in empty.content
        b_stats = await command(fake, guild_b, "memory stats", {}, "carol")
        assert "Memories: **1**" in b_stats.content
        nothing = await command(fake, guild_a, "memory export", {}, "admin")
        assert "no memories to export" in nothing.content and not nothing.attachments


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_memory_commands_say_when_memory_is_off_or_broken(
    fake: FakeDiscord, llm: FakeLLM, guild_a: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_bot(fake, llm, tmp_path / "off", guild_a, MEMORY_ENABLED=False):
        for name, options in (("memory search", {"query": "x"}), ("memory stats", {}), ("memory clear", {})):
            msg = await command(fake, guild_a, name, options, "admin")
            assert "turned off" in msg.content and "MEMORY_ENABLED" in msg.content
    # The embedding cannot load: every command gives the start-up error, with secrets masked.
    monkeypatch.setenv("MEMORY_EMBEDDING", "openai")
    monkeypatch.setenv("MEMORY_EMBEDDING_URL", "")
    async with running_bot(fake, llm, tmp_path / "broken", guild_a, MEMORY_ENABLED=True) as bot:
        assert bot.services.memory is None
        for name, options in (
            ("memory search", {"query": "x"}),
            ("memory forget", {"query": "x"}),
            ("memory stats", {}),
            ("memory export", {}),
            ("memory clear", {}),
        ):
            msg = await command(fake, guild_a, name, options, "alice")
            assert "unavailable" in msg.content and "MEMORY_EMBEDDING_URL" in msg.content, msg.content
            assert msg.components == [] and not msg.attachments
