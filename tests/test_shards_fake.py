"""The fake Discord's gateway per shard, against the real discord.py: each client that identifies with
``shard [i, n]`` gets only its servers and their events, as on Discord; GET /gateway/bot says ``n``."""

from __future__ import annotations

import asyncio

import discord
import pytest

from tests.fakes.discord_server import BOT_TEST_KWARGS, FakeDiscord, shard_guild


class Recorder(discord.AutoShardedClient):
    def __init__(self, **kwargs: object) -> None:
        intents = discord.Intents(guilds=True, guild_messages=True, message_content=True)
        super().__init__(intents=intents, **BOT_TEST_KWARGS, **kwargs)  # type: ignore[arg-type]
        self.seen: list[tuple[str, int | None]] = []

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append((message.content, message.guild.id if message.guild else None))

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        self.seen.append(("interaction", interaction.guild_id))


@pytest.mark.usefixtures("fast_write_window")
async def test_each_shard_receives_only_its_own_servers_and_their_events() -> None:
    g0, g1 = shard_guild(0, 2, "Zero"), shard_guild(1, 2, "One")
    async with FakeDiscord([g0, g1], shard_count=2) as fake:
        zero, one = Recorder(shard_count=2, shard_ids=[0]), Recorder(shard_count=2, shard_ids=[1])
        async with fake.run_bot(zero), fake.run_bot(one):
            assert [g.id for g in zero.guilds] == [g0.id]
            assert [g.id for g in one.guilds] == [g1.id]
            fake.inject_message(g0.channel("general"), "alice", "hello zero")
            fake.inject_message(g1.channel("general"), "alice", "hello one")
            fake.inject_interaction("ping", {}, user="bob", channel=g1.channel("general"))
            await fake.wait_for(lambda: len(zero.seen) + len(one.seen) == 3, what="three events")
            await asyncio.sleep(0.1)  # nothing else arrives late at the wrong shard
            assert zero.seen == [("hello zero", g0.id)]
            assert one.seen == [("hello one", g1.id), ("interaction", g1.id)]

        # A client that asks GET /gateway/bot runs the recommended 2 shards and sees both servers.
        both = Recorder()
        async with fake.run_bot(both):
            assert both.shard_count == 2 and {g.id for g in both.guilds} == {g0.id, g1.id}
