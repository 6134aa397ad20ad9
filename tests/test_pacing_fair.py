"""The bot-wide REST budget shares Discord's global limit fairly, and a write that waited for its turn
carries everything that changed meanwhile (bench/bot_load.py measures the timing; these check order)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.pacing import RestBudget
from bot.stream_sink import Grant, SinkError
from bot.streamer import ThreadStreamer


async def test_a_busy_thread_does_not_starve_the_others() -> None:
    budget = RestBudget(2000, in_flight=1)  # fast: the order is checked, not the pace
    order: list[str] = []

    async def write(lane: str, n: int) -> None:
        for _ in range(n):
            async with budget.turn(lane):
                order.append(lane)

    async with budget.turn("first"):  # every writer below has to queue
        tasks = [asyncio.create_task(write("busy", 1)) for _ in range(3)]  # three at once, first
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(write(lane, 1)) for lane in ("b", "c")]
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    # Round-robin over threads, not first come first served: b and c do not wait for all of busy's.
    assert order == ["busy", "b", "c", "busy", "busy"]


async def test_turns_stop_while_writes_hang_in_flight() -> None:
    """A slow or holding Discord (a global 429 makes discord.py hold every request) stops new turns,
    so no pile of requests fires at once when the hold ends."""
    budget = RestBudget(2000, in_flight=2)
    release = asyncio.Event()
    granted: list[int] = []

    async def write(i: int) -> None:
        async with budget.turn(i):
            granted.append(i)
            await release.wait()

    tasks = [asyncio.create_task(write(i)) for i in range(4)]
    for _ in range(50):
        await asyncio.sleep(0.001)
    assert granted == [0, 1] and budget.waiting() == 2
    release.set()
    await asyncio.gather(*tasks)
    assert granted == [0, 1, 2, 3] and budget.in_flight == 0


async def test_typing_never_jumps_the_queue() -> None:
    budget = RestBudget(2000, in_flight=1)
    async with budget.turn("a"):
        waiter = asyncio.create_task(budget.acquire("b"))
        await asyncio.sleep(0)
        assert budget.waiting() == 1
        assert budget.try_acquire() is False  # someone waits: the indicator is skipped
    await waiter


class GatedSink:
    """A thread whose turns are handed out by the test."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[str] = []
        self.notified: list[int | None] = []
        self.edits: list[str] = []

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[Grant]:
        await self.gate.wait()

        class Waited:
            waited = True

            def unused(self) -> None:
                pass

        yield Waited()

    async def send(self, content: str, *, nonce: str, files=None, notify=None) -> tuple[int, str]:
        self.sent.append(content)
        self.notified.append(notify)
        return len(self.sent), content

    async def edit(self, message_id: int, content: str) -> None:
        self.edits.append(content)

    async def delete(self, message_id: int) -> None:
        raise SinkError("not expected", retryable=False)


async def test_a_write_that_waited_for_its_turn_shows_every_step_made_meanwhile() -> None:
    sink = GatedSink()
    streamer = ThreadStreamer(sink, name="t")
    for i in range(1, 4):
        streamer.add("step", f"**Step {i}** · calculator")
        await asyncio.sleep(0.2)  # past the settle hold: the writer is waiting for a turn
    sink.gate.set()
    await streamer.close(within=10)
    # One send carries all three steps (it had waited); nothing is shown twice or lost.
    assert sink.sent == ["**Step 1** · calculator\n**Step 2** · calculator\n**Step 3** · calculator"]
    assert sink.edits == []


async def test_when_writes_are_scarce_the_answer_and_its_footer_go_out_as_one_message() -> None:
    sink = GatedSink()
    streamer = ThreadStreamer(sink, name="t")
    streamer.add("final", "The answer is 42.")
    streamer.add("final", "-# <@7> · 2 steps", notify=7)
    await asyncio.sleep(0.05)
    sink.gate.set()
    await streamer.close(within=10)
    # One write instead of two; the message still notifies the asker (and only the asker).
    assert sink.sent == ["The answer is 42.\n-# <@7> · 2 steps"] and sink.notified == [7]


async def test_a_write_that_waited_for_the_bot_wide_turn_counts_in_its_thread_from_when_it_went() -> None:
    # Discord counts a thread's 5 writes per 5 s as they arrive. A header edit counted before a 2 s
    # wait for the bot-wide turn let the thread's next writes go as if it had gone 2 s earlier.
    from bot.write_window import WriteBudget

    now = [0.0]
    window = WriteBudget(clock=lambda: now[0])

    class BotWide:
        async def acquire(self) -> None:
            now[0] += 2.0  # every other thread's writes go first

    for _ in range(4):
        window.take()  # four writes at 0 s
    await window.acquire(BotWide())  # the fifth goes at 2 s
    now[0] = 5.5
    assert window.used() == 1 and window.wait_time() == 0  # room again, the fifth still counted
    for _ in range(4):
        window.take()
    assert window.wait_time() > 0  # a sixth would land within 5 s of the fifth: it waits until 7 s
