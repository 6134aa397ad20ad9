"""Limits and costs a member or a server could slip past, and what ``/usage`` says of them (issue 19,
points 3-4): the real discord.py bot on the fake Discord and the scripted model on 127.0.0.1, the
quota store on real SQLite (and on PostgreSQL where the store itself is the subject). Each test failed
before the fix its docstring names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_records import MessageRecord
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply
from tests.test_e2e_config import flat, run


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",), admins=("admin",))


async def _stop(fake: FakeDiscord, thread: Any, user: str) -> MessageRecord:
    header = fake.messages(thread)[0]
    stop = header.components[0]["components"][0]["custom_id"]
    fake.inject_component(stop, message=header, user=user)
    return await fake.wait_for_message(thread, lambda m: "stopped by" in m.content, within=15)


def _tokens_today(usage: str) -> int:
    found = re.search(r"\*\*Tokens today\*\*: ~?([\d,]+)", usage)
    assert found, usage
    return int(found.group(1).replace(",", ""))


async def test_a_stop_mid_call_is_charged_by_estimate_and_usage_says_so(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Alice pressed Stop while her run's model call streamed: the provider billed the prompt, yet her
    quota and the server's budget were charged nothing ("/usage me": 0 tokens, $0.00), so Stop after
    Stop spent the server's money bounded only by requests a day. Now the cut call is charged its
    estimated prompt (and the words streamed so far) at gpt-4o-mini's price, and the footer, /usage me
    and /usage server all say it is an estimate."""
    general = guild.channel("general")
    llm.script(Reply(text="The tide " * 40, hang=True))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "tides"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, name="🔎 tides")
        await fake.wait_for(lambda: llm.requests, what="the model call")
        footer = await _stop(fake, thread, "alice")
        await wait_idle(fake, bot)
        mine = flat(await run(fake, guild, "usage me", user="alice"))
        server = flat(await run(fake, guild, "usage server"))
    assert "estimated: " in footer.content and "counted by estimate" in footer.content, footer.content
    spent = re.search(
        r"estimated: \d[\d,]* tokens \([\d,]+ in, [\d,]+ out\) · estimated: \$([\d.]+)", footer.content
    )
    assert spent and float(spent.group(1)) > 0, footer.content
    assert _tokens_today(mine) > 0, mine
    spent = re.search(r"\*\*Spending this month\*\*: ~?\$([\d.]+)", mine)
    assert spent and float(spent.group(1)) > 0, mine
    assert re.search(r"`openai/gpt-4o-mini`: 1 call · [\d,]+ in", server), server
