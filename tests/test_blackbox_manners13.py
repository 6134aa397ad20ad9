"""Thread manners end to end (session 13): the real discord.py bot against the fake Discord and the
scripted LLM, over 127.0.0.1. What a member or a server admin would notice in a session thread: what the
bot claims it did, how long answers are cut into messages, what it writes in the bot's own voice.
"""

from __future__ import annotations

from pathlib import Path

import discord
import pytest

from agent import StepStarted, TextDelta
from bot.cogs.research import thread_name
from bot.progress import ProgressRenderer
from bot.splitting import split_message
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_models import BOT_PERMISSIONS
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.discord_thread_life import close_thread
from tests.fakes.llm_server import FakeLLM, Reply, text
from tests.test_e2e_thread_manners import answer_of

INVITED = BOT_PERMISSIONS & ~discord.Permissions(manage_threads=True, manage_messages=True).value
"""What README's invite asks for: no Manage Threads, so the bot cannot delete a thread."""


@pytest.fixture
def guild() -> FakeGuild:
    lab = FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))
    lab.add_voice_channel("lounge")
    return lab


@pytest.mark.usefixtures("fast_write_window")
async def test_a_thread_the_bot_could_not_delete_is_not_said_removed(
    llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Invited as README says (no Manage Threads), the bot whose header Discord refused said "so I removed
    it" of a thread that stayed, empty, in the channel: a moderator had no reason to look for it."""
    async with FakeDiscord([guild], bot_permissions=INVITED) as fake:
        general = guild.channel("general")
        async with running_bot(fake, llm, tmp_path, guild):
            fake.inject_error("POST", "/channels/*/messages", status=403, code=50013, count=1)
            inter = fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
            refusal = await answer_of(fake, inter)
            fake.inject_error("POST", "/channels/*/messages", status=403, code=50013, count=1)
            said = fake.inject_message(general, "alice", f"<@{fake.bot_user.id}> and the moon?")
            reply = await fake.wait_for_message(general, lambda m: m.reference_id == said.id)
            left = fake.threads(parent=general)
            fake.inject_error("POST", "/channels/*/messages", status=403, code=50013, count=1)
            fake.inject_error("DELETE", "/channels/*", status=404, code=10003, count=1)  # deleted meanwhile
            inter = fake.inject_interaction("research", {"task": "waves"}, user="bob", channel=general)
            gone = await answer_of(fake, inter)
    assert len(left) == 2 and fake.calls("DELETE", f"/channels/{left[0].id}")  # tried, refused: they stay
    assert "so I removed it" in gone, gone
    for words in (refusal, reply.content):
        assert "removed it" not in words and "**Manage Threads**" in words, words
        assert "**Send Messages in Threads**" in words, words
    assert llm.requests == []


def _fence_open_at_end(part: str) -> bool:
    """CommonMark's reading: a block opened by N backticks is closed only by N or more."""
    opened = ""
    for line in part.split("\n"):
        run = len(line) - len(line.lstrip("`"))
        if run < 3 or "`" in line[run:]:
            continue
        if not opened:
            opened = line[:run]
        elif run >= len(opened) and not line[run:].strip():
            opened = ""
    return bool(opened)


async def test_a_long_answer_renders_in_each_message_and_a_stop_while_it_is_posted_stops_nothing(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The thread's name showed the task's Markdown as typed (asterisks, backticks, a link's address,
    mentions as <@&1>). A one-line ```code``` at a line's start was read as a block that never ends:
    every later message began with that line again as a code block and ended with a stray fence. A block
    fenced with four backticks (how models nest Markdown) was closed with three, which does not close it,
    and the part was 2,001 characters, silently clipped to Discord's 2,000.

    The header keeps its Stop button while a long answer goes out at 5 writes per 5 s. Stop pressed then
    said "Stopping…", stopped nothing (the footer said done), and cut the turn's saving short: the turn
    stayed open and its member's session slot held, so with QUOTA_CONCURRENT_SESSIONS=1 their next
    /research was refused "you have 1 running" until the bot restarted."""
    prose = "\n\n".join(("Tide tables are read twice a day. " * 40).strip() for _ in range(2))
    nested = "\n".join(["````markdown", "A" * 2500, "````"])
    answer = f"```bash pip install tidal```\n\n{prose}\n\n{nested}\n\nThat is all."
    assert len(answer) < 6000  # sent as messages, not as a file
    llm.script(text(answer))
    general = guild.channel("general")
    one_at_a_time = {"QUOTA_CONCURRENT_SESSIONS": 1, "BOT_SHUTDOWN_GRACE_SECONDS": 0.2}
    async with running_bot(fake, llm, tmp_path, guild, **one_at_a_time) as bot:
        task = "**Tides** of `2026` in [Brest](https://tides.example/brest) for <@&1> <#2>?\nMore."
        fake.inject_interaction("research", {"task": task}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content.startswith("```bash"), within=20)
        header = fake.messages(thread)[0]  # its Stop button is still there: the footer is not out yet
        stop = header.components[0]["components"][0]["custom_id"]
        said = await answer_of(fake, fake.inject_component(stop, message=header, user="alice"))
        footer = await fake.wait_for_message(thread, lambda m: "1 step" in m.content, within=20)
        await wait_idle(fake, bot)
        turn = await bot.services.sessions.latest_turn((await bot.services.sessions.by_thread(thread.id)).id)
        parts = [m.content for m in fake.messages(thread, include_ephemeral=False)][1:-1]
        again = await answer_of(
            fake, fake.inject_interaction("research", {"task": "waves"}, user="alice", channel=general)
        )
    # Discord renders no Markdown in a thread's name (nor in its notice in the channel): it read
    # "🔎 **Tides** of `2026` in [Brest](https://tides.example/brest) for <@&1> <#2>?"
    assert thread.name == "🔎 Tides of 2026 in Brest for ?", thread.name
    assert parts[0].startswith("```bash pip install tidal```") and parts[-1].endswith("That is all.")
    assert all(len(p) <= 2000 for p in parts)
    assert not any(p.startswith("```bash") for p in parts[1:]), [p[:40] for p in parts]
    assert not any(_fence_open_at_end(p) for p in parts), [p[-12:] for p in parts]
    assert sum(p.count("A") for p in parts) == 2500 and sum(p.count("Tide tables") for p in parts) == 80
    assert "Stopping" not in said and "already finished" in said, said
    assert "stopped" not in footer.content and turn.status == "completed", (footer.content, turn.status)
    assert again.startswith("Started in"), again


@pytest.mark.parametrize(
    ("line", "unit"),
    [
        ("e\u0301" * 2500, "e\u0301"),  # an accent as its own code point (decomposed text)
        ("👍🏽" * 1500, "👍🏽"),  # a skin tone
        ("🇫🇷" * 1500, "🇫🇷"),  # a flag: two letters
        ("👩\u200d💻" * 800, "👩\u200d💻"),  # joined by ZWJ
    ],
)
def test_a_line_with_no_space_is_never_cut_inside_a_character(line: str, unit: str) -> None:
    """A cut at exactly 2,000 code points put an accent, a skin tone, half a flag or half a ZWJ emoji at
    the start of the next message, where it shows as a lone mark or the wrong emoji."""
    parts = split_message("Here\n" + line)  # 5 + 1,991: the cut of old fell inside a character
    assert len(parts) > 1 and all(len(p) <= 2000 for p in parts)
    for part in parts[1:]:
        assert part.startswith(unit) and part.count(unit) * len(unit) == len(part), part[:4]


def test_cjk_text_is_cut_at_a_sentence_end() -> None:
    """Chinese or Japanese prose has no spaces: a paragraph was cut mid-word at 2,000 characters."""
    sentence = "潮汐表每天读两次，每次都要核对。"  # 16 characters, the last a full stop
    parts = split_message(sentence * 200)
    assert len(parts) > 1 and all(p.endswith("。") for p in parts)


@pytest.mark.parametrize(
    ("task", "name"),
    [
        ("```\nprint(2**32)\n```", "🔎 print(2**32)"),  # the first line with words, not "🔎 ```"
        ("# Tides\n> *why* two a day?", "🔎 Tides"),
        ("x" * 91 + "👩\u200d🔬" * 3, "🔎 " + "x" * 91),  # 95 characters fell inside the emoji: "x…x👩\u200d"
    ],
)
def test_a_thread_name_is_the_tasks_words_as_they_read(task: str, name: str) -> None:
    assert thread_name(task) == name


@pytest.mark.usefixtures("fast_write_window")
async def test_a_follow_up_queued_where_the_bot_cannot_react_is_told_when_it_is_answered(
    llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Without Add Reactions the ⏳ mark is refused and the bot says so in words instead: it said "after
    the current step finishes", while a queued follow-up waits for the whole running turn (12 steps)."""
    no_react = discord.Permissions(add_reactions=True).value
    guild.everyone.permissions &= ~no_react
    llm.script(text("Two a day.", delay=1.0))
    async with FakeDiscord([guild], bot_permissions=BOT_PERMISSIONS & ~no_react) as fake:
        general = guild.channel("general")
        async with running_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0.2):
            fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
            thread = await fake.wait_for_thread(parent=general)
            await fake.wait_for(lambda: llm.requests, what="the first turn's model call")
            asked = fake.inject_message(thread, "alice", "and why?")
            told = await fake.wait_for_message(thread, lambda m: m.reference_id == asked.id)
    assert fake.calls("PUT", f"/channels/{thread.id}/messages/{asked.id}/reactions/*")  # tried, refused
    assert "step" not in told.content and "current turn" in told.content, told.content


@pytest.mark.usefixtures("fast_write_window")
async def test_a_mention_in_a_voice_channels_chat_is_told_where_to_ask(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Discord opens no thread in a voice channel's text chat: a member mentioning the bot there with a
    question got nothing at all (a mention in a thread that is no session is told where to ask)."""
    lounge = guild.channel("lounge")
    async with running_bot(fake, llm, tmp_path, guild):
        me = f"<@{fake.bot_user.id}>"
        first = fake.inject_message(lounge, "alice", f"{me} why are there two tides a day?")
        told = await fake.wait_for_message(lounge, lambda m: m.reference_id == first.id)
    assert "/research" in told.content and "text channel" in told.content, told.content
    assert told.allowed_mentions == {"parse": []} and told.flags & 4096  # silent, pings nobody
    assert llm.requests == [] and fake.threads() == []


def test_a_fence_too_long_to_reopen_still_gives_parts_within_the_limit() -> None:
    """A fence of 40 backticks left no room to close and reopen it in a part of 60 characters: the part
    came out longer than the limit (Discord refuses it; the streamer clipped it, losing its end)."""
    text = "`" * 40 + "\n" + "word " * 60 + "\n" + "`" * 40
    parts = split_message(text, 60)
    assert all(len(p) <= 60 for p in parts) and "".join(parts).count("word") == 60


class _Preview:
    """The live previews a renderer hands the thread's streamer, as the streamer shows them."""

    def __init__(self) -> None:
        self.shown: list[str] = []

    def live(self, text: str) -> None:
        self.shown.append(text[-1900:])  # ThreadStreamer.live keeps the last 1,900 characters

    def end_live(self) -> str:
        return ""


def test_the_live_preview_of_a_code_block_renders_as_a_code_block() -> None:
    """Discord renders no code block without its closing fence: while the model wrote one, the preview
    showed "```python" and the code as prose (``__init__`` bold, ``*args`` italic); once the block was
    longer than the preview, it began inside the block and the closing fence opened a new one."""
    preview = _Preview()
    renderer = ProgressRenderer(preview)  # type: ignore[arg-type]
    renderer.feed(StepStarted(step=1, model="m"))
    words = "Here:\n\n```python\n" + "def __init__(self, *args): pass\n" * 120 + "```\n\nThat is all."
    for i in range(0, len(words), 7):
        renderer.feed(TextDelta(step=1, text=words[i : i + 7]))
    writing = next(s for s in preview.shown if "__init__" in s)  # the block had begun, short
    cut = [s for s in preview.shown if "```\n\n" not in s][-1]  # twice the preview's length, still open
    after = preview.shown[-1]  # the block closed
    for shown in (writing, cut, after):
        assert all(len(s) <= 1900 for s in preview.shown)
        assert not _fence_open_at_end(shown.removeprefix("✍️ ")), shown[-40:]
    assert cut.startswith("✍️ ```python\ndef __init__"), cut[:40]
    assert after.endswith("```\n\nThat is all.") and after.count("```") == 2, after[:40]


@pytest.mark.usefixtures("fast_write_window")
async def test_a_thread_reopened_after_its_run_was_stopped_by_closing_says_it_is_not_running(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Archiving (or locking) a thread stops its run, but the header cannot be edited while the thread is
    archived: reopened (a member posts there) or unlocked, it still said "⏳ running…" with a Stop button,
    which answered "Nothing is running in this session"."""
    llm.script(Reply(hang=True), Reply(hang=True))
    general = guild.channel("general")
    headers = []
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        for user, task, locked in (("alice", "tides", False), ("bob", "waves", True)):
            fake.inject_interaction("research", {"task": task}, user=user, channel=general)
            thread = await fake.wait_for_thread(parent=general, name=f"🔎 {task}")
            await fake.wait_for(lambda n=len(headers): len(llm.requests) > n, what="the run's model call")
            close_thread(fake.state, thread, archived=not locked, locked=locked)
            await wait_idle(fake, bot)
            close_thread(fake.state, thread, archived=False)  # reopened (Discord does when one posts there)
            first = fake.messages(thread)[0].id
            reopened = lambda m, first=first: m.id == first and "⏳" not in m.content  # noqa: E731
            headers.append(await fake.wait_for_message(thread, reopened))
    for header in headers:
        assert "⏹️ stopped" in header.content and not header.components, header.content[-60:]
