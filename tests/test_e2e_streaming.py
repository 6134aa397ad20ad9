"""End to end: a fast session under Discord's per-channel write limit shows every step once, in order.

The agent produces events far faster than a thread accepts writes; the streamer must pace and merge
so that Discord never refuses a write and nothing is lost, doubled or reordered. Timing stays in
``bench/stream_latency.py``: how fast steps appear, and the most writes in any sliding 5 s window
(a correct streamer's writes sit within milliseconds of the window's edge, so that count depends on
the machine's load and would make a flaky assertion).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call

STEPS = 10
FINAL = "All ten sums are checked.\n\nEach value came from the calculator."


def expression(i: int) -> str:
    return f"{i}*{i}+{7000 + i}"


def value(i: int) -> str:
    return str(i * i + 7000 + i)


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",))


@pytest.fixture
async def fake(guild: FakeGuild) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord([guild], channel_write_limit=(5, 5.0)) as server:
        yield server


async def test_e2e_fast_session_under_write_limit_shows_every_step_once_in_order(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    replies = [
        tool_call(
            "calculator", {"expression": expression(i)}, text=f"Checking sum {i}." if i % 3 == 1 else ""
        )
        for i in range(1, STEPS + 1)
    ]
    llm.script(*replies, text(FINAL))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Check ten sums"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: f"{STEPS + 1} steps" in m.content, within=30)
        await wait_idle(fake, bot)
        msgs = fake.messages(thread)

    # Discord (the fake's per-channel limit) never had to refuse a write; no send was doubled.
    assert fake.rate_limit_violations == []
    assert fake.duplicates == []
    shown = "\n".join(m.content for m in msgs)
    # Every call and its result exactly once, in step order; the answer once, then the footer.
    positions = []
    for i in range(1, STEPS + 1):
        call = f'expression="{expression(i)}"'
        assert shown.count(call) == 1, f"step {i}'s call appears {shown.count(call)} times"
        results = re.findall(rf"↳ [0-9.]+s · {value(i)}\b", shown)
        assert len(results) == 1, f"step {i}'s result appears {len(results)} times"
        positions += [shown.index(call), shown.index(results[0])]
    assert positions == sorted(positions)
    for i in (1, 4, 7, 10):
        assert shown.count(f"💭 Checking sum {i}.") == 1
    contents = [m.content for m in msgs]
    assert contents.count(FINAL) == 1
    assert contents.index(FINAL) == len(contents) - 2 and f"{STEPS + 1} steps" in contents[-1]
    assert positions[-1] < shown.index(FINAL)
