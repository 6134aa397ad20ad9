"""The fake Discord against the real discord.py 2.7: a bot connects, answers a slash command, works in a
thread, keeps its buttons across a restart, survives 429s and a dropped gateway — as it would on Discord.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord_server import (
    BOT_TEST_KWARGS,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeUser,
    InteractionBuildError,
    InteractionRecord,
    MessageRecord,
)

STOP_ID = "agentbot:stop"


class StopView(discord.ui.View):
    """Persistent (no timeout, fixed custom_id): registered again at start-up so old buttons keep working."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Stop", style=discord.ButtonStyle.danger, custom_id=STOP_ID)
    async def stop_button(
        self, interaction: discord.Interaction, button: discord.ui.Button[StopView]
    ) -> None:
        await interaction.response.edit_message(content=f"Stopped by {interaction.user.name}", view=None)


@app_commands.command(name="research", description="Research a topic in a new thread")
@app_commands.describe(topic="What to research", depth="How deep to go")
async def research(
    interaction: discord.Interaction, topic: str, depth: app_commands.Range[int, 1, 3] = 1
) -> None:
    await interaction.response.defer(thinking=True)
    assert isinstance(interaction.channel, discord.TextChannel)
    thread = await interaction.channel.create_thread(
        name=f"Research: {topic}",
        type=discord.ChannelType.public_thread,
        reason=f"research by {interaction.user}",
    )
    await thread.send(
        f"Researching **{topic}** at depth {depth}",
        view=StopView(),
        allowed_mentions=discord.AllowedMentions.none(),
    )
    await interaction.followup.send(f"Started in {thread.mention}")


agent_group = app_commands.Group(name="agent", description="Agent settings")
config_group = app_commands.Group(name="config", description="Configuration", parent=agent_group)


@config_group.command(name="set", description="Set a configuration value")
async def config_set(interaction: discord.Interaction, key: str, value: str) -> None:
    await interaction.response.send_message(f"{key} = {value}", ephemeral=True)


class ProbeBot(commands.Bot):
    """A small bot shaped like ours: guild slash commands, a persistent view, replies inside threads."""

    def __init__(self, guild_id: int) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents, **BOT_TEST_KWARGS)
        self.guild_id = guild_id
        self.seen: list[tuple[str, type]] = []

    async def setup_hook(self) -> None:
        self.add_view(StopView())
        guild = discord.Object(self.guild_id)
        self.tree.add_command(research, guild=guild)
        self.tree.add_command(agent_group, guild=guild)
        await self.tree.sync(guild=guild)

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append((message.author.name, type(message.channel)))
        if message.author.bot or not isinstance(message.channel, discord.Thread):
            return
        if message.content.startswith("burst "):
            for index in range(int(message.content.split()[1])):
                await message.channel.send(f"part {index}")
        elif message.attachments:
            text = (await message.attachments[0].read()).decode()
            await message.channel.send(file=discord.File(io.BytesIO(text.upper().encode()), "upper.txt"))
        else:
            await message.channel.send(
                f"echo: {message.content}", allowed_mentions=discord.AllowedMentions.none()
            )


@pytest.fixture
def guild() -> FakeGuild:
    guild = FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))
    guild.add_member(FakeUser("otherbot", bot=True))
    return guild


@pytest.fixture
async def bot(fake: FakeDiscord, guild: FakeGuild) -> AsyncIterator[ProbeBot]:
    probe = ProbeBot(guild.id)
    async with fake.run_bot(probe):
        yield probe


async def start_research(
    fake: FakeDiscord, guild: FakeGuild, topic: str = "tides"
) -> tuple[InteractionRecord, FakeChannel, MessageRecord]:
    """Run /research as alice in #general; return the interaction, the new thread and its first message."""
    general = guild.channel("general")
    interaction = fake.inject_interaction(
        "research", {"topic": topic, "depth": 2}, user="alice", channel=general
    )
    thread = await fake.wait_for_thread(parent=general)
    header = await fake.wait_for_message(thread)
    await fake.wait_for(
        lambda: interaction.original_message_id and fake.message(interaction.original_message_id).content,
        what="the followup to replace the deferred response",
    )
    return interaction, thread, header


async def test_fake_discord_bot_connects_and_registers_its_guild_commands(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    assert bot.is_ready() and bot.user is not None and bot.user.id == fake.bot_user.id
    cached = bot.get_guild(guild.id)
    assert cached is not None and [c.name for c in cached.text_channels] == ["general"]
    assert cached.me is not None and cached.me.guild_permissions.create_public_threads
    assert {c["name"] for c in fake.commands(guild)} == {"research", "agent"}
    assert fake.commands() == []
    assert fake.unknown_calls == []


async def test_fake_discord_slash_command_defers_creates_thread_and_posts_in_order(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    general = guild.channel("general")
    interaction, thread, header = await start_research(fake, guild)

    assert interaction.response_type == 5
    assert (thread.type, thread.name, thread.parent_id) == (11, "Research: tides", general.id)
    await fake.wait_for(lambda: isinstance(bot.get_channel(thread.id), discord.Thread), what="THREAD_CREATE")
    assert [m.content for m in fake.messages(thread)] == ["Researching **tides** at depth 2"]
    assert header.allowed_mentions is not None and header.allowed_mentions["parse"] == []
    assert header.components[0]["components"][0]["custom_id"] == STOP_ID
    response = fake.message(interaction.original_message_id)
    assert response.contents == ["", f"Started in <#{thread.id}>"] and not response.loading
    order = [c.route for c in fake.calls() if c.seq > interaction_call_floor(fake)]
    assert (
        order.index("POST /interactions/{interaction_id}/{token}/callback")
        < order.index("POST /channels/{channel_id}/threads")
        < order.index("POST /channels/{channel_id}/messages")
        < order.index("POST /webhooks/{application_id}/{token}")
    )
    thread_call = fake.calls("POST", f"/channels/{general.id}/threads")[0]
    assert thread_call.audit_log_reason == "research by alice"
    assert [m.type for m in fake.messages(general)] == [20, 18], "deferred response, then the thread notice"


def interaction_call_floor(fake: FakeDiscord) -> int:
    """The seq of the last call before any interaction traffic (command sync at start-up)."""
    return max(c.seq for c in fake.calls() if c.route and "commands" in c.route)


async def test_fake_discord_subcommand_group_reaches_nested_command(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    general = guild.channel("general")
    interaction = fake.inject_interaction(
        "agent config set", {"key": "model", "value": "small"}, user="bob", channel=general
    )
    reply = await fake.wait_for_message(general, lambda m: m.interaction_id == interaction.id)
    assert (reply.content, reply.ephemeral, interaction.response_type) == ("model = small", True, 4)
    assert fake.messages(general, include_ephemeral=False) == []
    with pytest.raises(InteractionBuildError, match="no option 'colour'"):
        fake.inject_interaction(
            "agent config set", {"key": "a", "value": "b", "colour": "red"}, user="bob", channel=general
        )
    with pytest.raises(InteractionBuildError, match="within"):
        fake.inject_interaction("research", {"topic": "x", "depth": 9}, user="bob", channel=general)


async def test_fake_discord_persistent_view_button_works_after_restart(
    fake: FakeDiscord, guild: FakeGuild
) -> None:
    first = ProbeBot(guild.id)
    async with fake.run_bot(first):
        _, _, header = await start_research(fake, guild)
    second = ProbeBot(guild.id)
    async with fake.run_bot(second):
        click = fake.inject_component(STOP_ID, message=header, user="bob")
        await fake.wait_for(lambda: header.content.startswith("Stopped"), what="the Stop button callback")
    assert header.contents == ["Researching **tides** at depth 2", "Stopped by bob"]
    assert header.components == [] and click.response_type == 7
    assert fake.identify_count == 2


async def test_fake_discord_thread_message_arrives_with_thread_channel(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    _, thread, _ = await start_research(fake, guild)
    alice = guild.member("alice")
    fake.inject_message(thread, "otherbot", "beep from another bot")
    asked = fake.inject_message(thread, alice, f"hello {alice.user.mention}")
    echo = await fake.wait_for_message(thread, lambda m: m.content.startswith("echo:"))

    assert ("alice", discord.Thread) in bot.seen and ("otherbot", discord.Thread) in bot.seen
    assert [m.content for m in fake.messages(thread)] == [
        "Researching **tides** at depth 2",
        "beep from another bot",
        f"hello {alice.user.mention}",
        f"echo: hello {alice.user.mention}",
    ]
    assert asked.pinged_user_ids == [alice.id], "a user's mention pings"
    assert echo.pinged_user_ids == [] and echo.allowed_mentions == {"parse": []}, (
        "the bot's echo pings nobody"
    )


async def test_fake_discord_429_burst_delays_but_does_not_lose_a_message(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    _, thread, _ = await start_research(fake, guild)
    fault = fake.inject_429("POST", f"/channels/{thread.id}/messages", count=2, retry_after=0.05)
    fake.inject_message(thread, "alice", "ping")
    await fake.wait_for_message(thread, lambda m: m.content == "echo: ping")

    assert fault.hits == 2
    statuses = [c.status for c in fake.calls("POST", f"/channels/{thread.id}/messages")]
    assert statuses[-3:] == [429, 429, 200]
    assert [m.content for m in fake.messages(thread)].count("echo: ping") == 1
    assert fake.duplicates == []


async def test_fake_discord_server_error_is_retried(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    general = guild.channel("general")
    fault = fake.inject_error("POST", f"/channels/{general.id}/messages", status=502)
    channel = bot.get_channel(general.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("after a 502")
    assert fault.hits == 1 and fake.message(sent.id).content == "after a 502"


async def test_fake_discord_channel_write_limit_paces_discord_py(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    _, thread, _ = await start_research(fake, guild)
    fake.enable_channel_write_limit(limit=3, per=0.4)

    # A client that ignores the headers is refused and counted, so the limit is really enforced...
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as session:
        statuses = []
        for index in range(4):
            url = f"{fake.api_url}/channels/{guild.channel('general').id}/messages"
            async with session.post(url, json={"content": f"raw {index}"}, headers=headers) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["Via"] and (await response.json())["retry_after"] > 0
    assert statuses == [200, 200, 200, 429] and len(fake.rate_limit_violations) == 1

    # ...while discord.py reads X-RateLimit-* and waits before each window runs out.
    fake.inject_message(thread, "alice", "burst 7")
    await fake.wait_for(
        lambda: sum(m.content.startswith("part") for m in fake.messages(thread)) == 7, what="7 parts"
    )
    assert [m.content for m in fake.messages(thread) if m.content.startswith("part")] == [
        f"part {i}" for i in range(7)
    ]
    assert len(fake.rate_limit_violations) == 1


async def test_fake_discord_resume_replays_events_missed_while_disconnected(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    _, thread, _ = await start_research(fake, guild)
    await fake.drop_connection(hold=True)
    fake.inject_message(thread, "alice", "sent while the bot was away")
    fake.release_gateway()
    await fake.wait_for_message(thread, lambda m: m.content == "echo: sent while the bot was away")
    assert (fake.identify_count, fake.resume_count) == (1, 1)


async def test_fake_discord_attachments_round_trip(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    _, thread, _ = await start_research(fake, guild)
    fake.inject_message(thread, "alice", attachments=[("notes.txt", b"hello")])
    reply = await fake.wait_for_message(thread, lambda m: bool(m.attachments) and m.author.bot)
    assert [(a.filename, a.data) for a in reply.attachments] == [("upper.txt", b"HELLO")]
    upload = fake.calls("POST", f"/channels/{thread.id}/messages")[-1]
    assert [(f.field, f.filename) for f in upload.files] == [("files[0]", "upper.txt")]


async def test_fake_discord_refuses_what_discord_refuses(
    fake: FakeDiscord, bot: ProbeBot, guild: FakeGuild
) -> None:
    general = bot.get_channel(guild.channel("general").id)
    assert isinstance(general, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as too_long:
        await general.send("x" * 2001)
    assert (too_long.value.status, too_long.value.code) == (400, 50035)

    first = await general.send("once", nonce=42)
    again = await general.send("once", nonce=42)
    assert first.id == again.id and [d.nonce for d in fake.duplicates] == ["42"]

    fake.interaction_ack_deadline = 0.0
    late = fake.inject_interaction(
        "research", {"topic": "slow"}, user="alice", channel=guild.channel("general")
    )
    await fake.wait_for(lambda: late.late_callbacks, what="the late callback")
    assert late.response_type is None and fake.threads() == []

    async with aiohttp.ClientSession() as session, session.get(f"{fake.api_url}/nope") as response:
        assert response.status == 404 and response.headers["Content-Type"] == "application/json"
    assert [c.path for c in fake.unknown_calls] == ["/nope"]


async def test_fake_discord_rejects_a_wrong_token(fake: FakeDiscord, guild: FakeGuild) -> None:
    probe = ProbeBot(guild.id)
    with pytest.raises(RuntimeError, match="Improper token"):
        await fake.start_bot(probe, token="not-the-token")
    assert fake.calls()[-1].status == 401


async def test_fake_discord_sharded_bot_without_message_content_intent_sees_blank_text(
    fake: FakeDiscord, guild: FakeGuild
) -> None:
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.default(), **BOT_TEST_KWARGS)
    contents: list[str] = []

    async def record(message: discord.Message) -> None:
        contents.append(message.content)

    bot.add_listener(record, "on_message")
    async with fake.run_bot(bot):
        cached = bot.get_guild(guild.id)
        assert cached is not None and cached.shard_id == 0 and fake.calls("GET", "/gateway/bot")
        assert [m.name for m in cached.members] == ["agentbot"], "no member list without the members intent"
        general = guild.channel("general")
        fake.inject_message(general, "alice", "a secret plan")
        fake.inject_message(general, "alice", f"{fake.bot_user.mention} can you read this?")
        await fake.wait_for(lambda: len(contents) == 2, what="both messages")
    assert contents == ["", f"{fake.bot_user.mention} can you read this?"]
