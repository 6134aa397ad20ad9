"""What a step's checkpoint costs as a run grows: the whole history saved again (before migration 7) or
only the step's own messages (now), through the real SessionStore on a SQLite file.

    .venv/bin/python bench/checkpoint_cost.py [--steps 40] [--result-kb 4] [--runs 3]

Each step adds an assistant message with a tool call and a tool result of ``--result-kb`` KB (a web
page's extract is up to ~16 KB). Per mode: CPU milliseconds of the process (event loop and SQLite's
thread) per checkpoint at the first and last 5 steps, and in all; the figure that grows with the run
is the one that was quadratic in its length.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.loop import RunState  # noqa: E402
from agent.messages import Message, ToolCall  # noqa: E402
from bot.checkpoint import checkpoint_meta, convert  # noqa: E402
from bot.store import SessionRecord, SessionStore, open_database  # noqa: E402
from tests.checkpoints import checkpoint_of  # noqa: E402


async def one_run(path: Path, steps: int, result_kb: int, whole: bool) -> list[float]:
    """CPU seconds of each step's checkpoint."""
    async with await open_database(path) as db:
        store = SessionStore(db)
        sid = f"s{time.monotonic_ns()}"
        await store.create(
            SessionRecord(id=sid, guild_id=1, channel_id=2, user_id=3, task="t", tier="medium", model="m")
        )
        turn = await store.start_turn(sid, "t", 3)
        state = RunState(task="t")
        state.messages.append(Message("user", "research this"))
        seen: list[tuple[Message, dict]] = []
        stored, costs = 0, []
        page = ("lorem ipsum dolor sit amet " * 40 * result_kb)[: result_kb * 1024]
        for i in range(steps):
            call = ToolCall(f"c{i}", "fetch_page", f'{{"url": "https://example.com/{i}"}}')
            state.messages += [
                Message("assistant", "", tool_calls=[call]),
                Message("tool", page, tool_call_id=f"c{i}", name="fetch_page"),
            ]
            state.steps = i + 1
            t = time.process_time()
            if whole:
                await store.checkpoint(turn, checkpoint_of(state, seen))
            else:
                start = min(stored, convert(state.messages, seen))
                await store.checkpoint(
                    turn, checkpoint_meta(state), messages=[d for _, d in seen[start:]], start=start
                )
                stored = len(seen)
            costs.append(time.process_time() - t)
        return costs


async def main(ns: argparse.Namespace) -> None:
    print(
        f"checkpoint cost: {ns.steps} steps, a {ns.result_kb} KB tool result each, best of {ns.runs} runs; "
        "CPU ms per checkpoint (event loop + SQLite thread)\n"
    )
    head = f"{'mode':<24} | {'steps 1-5':>9} | {'last 5':>9} | {'whole run':>9}"
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        for name, whole in (("whole history (before)", True), ("new messages (now)", False)):
            best: list[float] | None = None
            for r in range(ns.runs):
                costs = await one_run(Path(tmp) / f"{name[:5]}{r}.sqlite3", ns.steps, ns.result_kb, whole)
                best = costs if best is None or sum(costs) < sum(best) else best
            assert best is not None
            ms = [c * 1000 for c in best]
            print(f"{name:<24} | {sum(ms[:5]) / 5:>9.2f} | {sum(ms[-5:]) / 5:>9.2f} | {sum(ms):>9.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--result-kb", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    asyncio.run(main(ap.parse_args()))
