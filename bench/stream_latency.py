"""Event-to-Discord latency of a streamed research session, under Discord's per-channel write limit.

    .venv/bin/python bench/stream_latency.py [--runs 3] [--latency 0.3] [--steps 10] [--no-baseline] [--timeline]

The real bot (``bot/`` as it is, discord.py unmodified) runs against the fake Discord with its
per-channel write limit on (5 writes per 5 s, 429 beyond) and the scripted LLM, both in this
process on 127.0.0.1: one process, so the fake's write times and the bot's event times share one
monotonic clock. The session: ``--steps`` calculator steps, each model call answered after
``--latency`` seconds, streamed "thinking" text in steps 1, 4 and 7 and a streamed final answer
(each SSE chunk written separately, so every fragment is its own ``TextDelta`` and moves the live
preview). One /research, exactly as a user starts it: the header is part of the thread's writes.

Measured per run:

* delay from each agent event to the first Discord write that shows it. Event times: the bench
  swaps ``bot.turn.ProgressRenderer`` for a subclass that stamps each event as it arrives and
  renders it unchanged (checked against the scripted server's reply times: "skew" at the end).
  Write times: the fake's message history (every create and edit with its time and text; a
  deleted preview counts, it was seen). An event is shown by the first version whose
  whitespace-normalised text contains its snippet: a tool call's ``expression="…"``, its result
  ``· <value>``, a step's streamed text (timed from its last fragment: one sample per step, not
  one per fragment, which would weigh bursts), the final answer's first paragraph (from
  ``FinalEvent``). p50/p95 are nearest-rank over these 25 samples (10 + 10 + 4 + 1);
* the most writes in any 5 s window of the thread, sliding, header included. (The fake's limit
  is a fixed window opened by a channel's first write, and discord.py waits on its
  ``X-RateLimit-*`` headers, so even an unpaced writer rarely meets a 429; the sliding count is
  what shows it going past 5 per 5 s);
* lost messages: every tool call, result, streamed thought, the final answer and the footer must
  appear exactly once in the thread's final text; duplicate nonces; writes refused with 429.

Baseline, same run: the same bot with ``bot.turn.ThreadStreamer`` swapped for a naive writer:
one Discord write per renderer call (send, edit or delete), straight through discord.py, in order,
no pacing or merging of its own; discord.py's rate-limit handling is its only brake. "p95/base" is
a run's p95 over the baseline's.

Exit status 1 when a streamer run misses a target (p95 <= 1.2 s, <= 5 writes per 5 s, nothing lost,
shown twice or refused), so the command can gate CI. ``--timeline`` prints every event and write.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.logs import configure_logging  # noqa: E402

# Before the bot's modules bind their loggers at import: its info lines would drown the table.
configure_logging("WARNING", "json", sys.stderr)

import bot.turn as runner_module  # noqa: E402
from agent.events import AgentEvent, FinalEvent, TextDelta, ToolCallEvent, ToolResultEvent  # noqa: E402
from bot.progress import ProgressRenderer  # noqa: E402
from bot.streamer import Sink, SinkError, ThreadStreamer, WriteBudget  # noqa: E402
from tests.e2e.harness import running_bot  # noqa: E402
from tests.fakes.discord_records import MessageRecord  # noqa: E402
from tests.fakes.discord_server import FakeChannel, FakeDiscord, FakeGuild  # noqa: E402
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call  # noqa: E402

TARGET_P95 = 1.2
WINDOW = 5.0
WINDOW_LIMIT = 5
TEXT_STEPS = (1, 4, 7)
FINAL = (
    "The sums check out: every intermediate value was computed exactly with the calculator, "
    "so no rounding crept in along the way.\n\n"
    "Step by step, the products grow quadratically, which is what the task predicted; the last "
    "step confirms the closed form.\n\n"
    "In short: the pattern holds for all ten cases tried."
)


def expression(step: int) -> str:
    return f"{step}*{step}+{7000 + step}"


def value(step: int) -> str:
    return str(step * step + 7000 + step)


def thought(step: int) -> str:
    return f"Thinking about step {step}: next I check {expression(step)} with the calculator to be sure."


def script(steps: int, latency: float) -> list[Reply]:
    """The model's answers, in order. Text arrives in ~40-character fragments, one SSE write each."""
    replies = []
    for i in range(1, steps + 1):
        kw: dict[str, Any] = {"delay": latency, "fragment": 40, "split_writes": True}
        if i in TEXT_STEPS:
            kw["text"] = thought(i)
        replies.append(tool_call("calculator", {"expression": expression(i)}, **kw))
    replies.append(text(FINAL, delay=latency, fragment=120, split_writes=True))
    return replies


# --- instrumentation: event times -----------------------------------------------------------------
STAMPS: list[tuple[float, AgentEvent]] = []


class StampedRenderer(ProgressRenderer):
    """The bot's renderer, unchanged, noting when each event reached it."""

    def feed(self, ev: AgentEvent) -> None:
        STAMPS.append((time.monotonic(), ev))
        super().feed(ev)


# --- the baseline: one write per renderer call, unpaced ---------------------------------------------
@dataclass(eq=False)
class _NaiveBlock:
    kind: str
    text: str
    message_id: int | None = None


class NaiveStreamer:
    """What a bot without a streamer does: every change becomes a Discord write at once, in order.

    One queue and one task keep the order (so the comparison is about pacing, not reordering);
    discord.py's own rate-limit handling is the only brake.
    """

    def __init__(self, sink: Sink, **_: Any) -> None:
        self.sink = sink
        self.budget = WriteBudget()  # counted like the real streamer's, never consulted: no pacing here
        self._ops: asyncio.Queue[tuple[str, _NaiveBlock, str]] = asyncio.Queue()
        self._live: _NaiveBlock | None = None
        self._task = asyncio.create_task(self._run())

    def add(
        self, kind: str, text: str, files: list[tuple[str, bytes]] | None = None, *, notify: int | None = None
    ) -> _NaiveBlock:
        # ``files`` (an answer over 6,000 characters) never occurs in this session; ``notify`` (the
        # footer's ping) changes no timing.
        block = _NaiveBlock(kind, text)
        self._ops.put_nowait(("send", block, text))
        return block

    def update(self, block: _NaiveBlock, text: str) -> None:
        if text != block.text:
            block.text = text
            self._ops.put_nowait(("edit", block, text))

    def live(self, text: str) -> None:
        if self._live is None:
            self._live = self.add("live", text[-1900:])
        else:
            self.update(self._live, text[-1900:])

    def end_live(self) -> str:
        block, self._live = self._live, None
        if block is None:
            return ""
        self._ops.put_nowait(("delete", block, ""))
        return block.text

    async def flush(self, within: float | None = None) -> bool:
        try:
            async with asyncio.timeout(within):
                await self._ops.join()
        except TimeoutError:
            return False
        return True

    async def close(self, within: float | None = 600) -> None:
        await self.flush(within)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        nonce = 0
        while True:
            op, block, content = await self._ops.get()
            try:
                if op == "send":
                    nonce += 1
                    block.message_id, _ = await self.sink.send(
                        content or "\u200b", nonce=f"naive-{id(self)}-{nonce}"
                    )
                elif block.message_id is not None and op == "edit":
                    await self.sink.edit(block.message_id, content)
                elif block.message_id is not None:
                    await self.sink.delete(block.message_id)
            except SinkError:
                pass  # given up after discord.py's own retries: the lost-message check shows it
            finally:
                self._ops.task_done()


@contextlib.contextmanager
def variant(streamer_cls: type) -> Iterator[None]:
    """Run the bot with the stamping renderer and the given streamer class (restored afterwards)."""
    saved = runner_module.ProgressRenderer, runner_module.ThreadStreamer
    runner_module.ProgressRenderer = StampedRenderer  # type: ignore[misc]
    runner_module.ThreadStreamer = streamer_cls  # type: ignore[misc]
    try:
        yield
    finally:
        runner_module.ProgressRenderer, runner_module.ThreadStreamer = saved  # type: ignore[misc]


# --- analysis -------------------------------------------------------------------------------------
def norm(s: str) -> str:
    return " ".join(s.split())


@dataclass
class Sample:
    kind: str
    step: int
    delay: float | None
    """None: never shown."""


@dataclass
class Outcome:
    name: str
    samples: list[Sample]
    max_in_window: int
    writes: int
    violations: int
    duplicates: int
    lost: list[str]
    extra: list[str]
    session_seconds: float
    stamp_skew_ms: float
    timeline: list[str] = field(default_factory=list)

    def delays(self, kind: str | None = None) -> list[float]:
        return [s.delay for s in self.samples if s.delay is not None and kind in (None, s.kind)]

    def pct(self, q: float, kind: str | None = None) -> float:
        d = sorted(self.delays(kind))
        if not d:
            return float("nan")
        return d[min(len(d) - 1, max(0, round(q * len(d) + 0.5) - 1))]  # nearest rank

    @property
    def unseen(self) -> int:
        return sum(1 for s in self.samples if s.delay is None)


def first_shown(msgs: list[MessageRecord], snippet: str, after: float) -> float | None:
    """When the thread first showed ``snippet`` (a create or edit at or after ``after``)."""
    want = norm(snippet)
    times = [v.t for m in msgs for v in m.history if v.t >= after - 0.001 and want in norm(v.content)]
    return min(times) if times else None


def expected_once(steps: int) -> dict[str, str]:
    """What the final thread must show exactly once: a name for the report, and the snippet."""
    want = {}
    for i in range(1, steps + 1):
        want[f"call {i}"] = f'expression="{expression(i)}"'
        want[f"result {i}"] = f"· {value(i)}"
        if i in TEXT_STEPS:
            want[f"thought {i}"] = thought(i)
    want["final answer"] = norm(FINAL)
    want["footer"] = f"{steps + 1} steps ·"
    return want


def _sample(kind: str, step: int, msgs: list[MessageRecord], snippet: str, t: float) -> Sample:
    shown = first_shown(msgs, snippet, t)
    return Sample(kind, step, None if shown is None else shown - t)


def analyse(
    name: str,
    fake: FakeDiscord,
    thread: FakeChannel,
    llm: FakeLLM,
    steps: int,
    latency: float,
    started: float,
    ended: float,
) -> Outcome:
    msgs = fake.messages(thread, include_deleted=True)
    samples: list[Sample] = []
    texts: dict[int, float] = {}
    for t, ev in STAMPS:
        if isinstance(ev, TextDelta):
            texts[ev.step] = t  # the last fragment: from here the whole text is known
        elif isinstance(ev, ToolCallEvent):
            expr = (ev.arguments or {}).get("expression", ev.raw_arguments)
            samples.append(_sample("tool call", ev.step, msgs, f'expression="{expr}"', t))
        elif isinstance(ev, ToolResultEvent):
            samples.append(_sample("tool result", ev.step, msgs, f"· {ev.output}", t))
        elif isinstance(ev, FinalEvent):
            samples.append(_sample("final answer", ev.step, msgs, ev.result.text.split("\n\n")[0], t))
    for step, t in texts.items():
        snippet = thought(step) if step <= steps else FINAL.split("\n\n")[0]
        samples.append(_sample("streamed text", step, msgs, snippet, t))

    final_text = "\n".join(norm(m.content) for m in msgs if not m.deleted)
    lost, extra = [], []
    for label, snippet in expected_once(steps).items():
        n = final_text.count(norm(snippet))
        if n == 0:
            lost.append(label)
        elif n > 1:
            extra.append(f"{label} x{n}")
    # The stamps against the scripted server's clock: each tool call should reach the renderer just
    # after its reply was sent (request time + latency). A large skew would mean misleading stamps.
    calls = [t for t, ev in STAMPS if isinstance(ev, ToolCallEvent)]
    replies = [t + latency for t in llm.request_times[: len(calls)]]
    skew = max((abs(c - r) for c, r in zip(calls, replies, strict=True)), default=0.0)
    return Outcome(
        name=name,
        samples=samples,
        max_in_window=fake.max_writes_in_window(thread, WINDOW),
        writes=len(fake.writes(thread)),
        violations=len([v for v in fake.rate_limit_violations if v.channel_id == thread.id]),
        duplicates=len(fake.duplicates),
        lost=lost,
        extra=extra,
        session_seconds=ended - started,
        stamp_skew_ms=skew * 1000,
        timeline=timeline(fake, thread, msgs, started),
    )


def timeline(fake: FakeDiscord, thread: FakeChannel, msgs: list[MessageRecord], started: float) -> list[str]:
    """Every event and every write in the thread, in time order (``--timeline``): where time went."""
    lines = [
        f"{t - started:7.3f}  event  step {ev.step:>2} {type(ev).__name__}"
        for t, ev in STAMPS
        if isinstance(ev, TextDelta | ToolCallEvent | ToolResultEvent | FinalEvent)
    ]
    by_id = {m.id: m for m in msgs}
    versions: dict[int, int] = {}
    for w in fake.writes(thread):
        m = by_id.get(w.message_id)
        what = ""
        if m is not None and w.kind != "delete":
            k = versions[w.message_id] = versions.get(w.message_id, -1) + 1  # k-th create/edit: version k
            what = norm(m.history[k].content)[:100] if k < len(m.history) else ""
        lines.append(f"{w.t - started:7.3f}  WRITE  {w.kind:<6} msg …{str(w.message_id)[-4:]} {what}")
    return sorted(lines)


def pooled(runs: list[Outcome]) -> Outcome:
    """All streamer runs as one sample set (worst window, summed failures)."""
    return Outcome(
        name=f"streamer, {len(runs)} runs",
        samples=[s for r in runs for s in r.samples],
        max_in_window=max(r.max_in_window for r in runs),
        writes=round(statistics.mean(r.writes for r in runs)),
        violations=sum(r.violations for r in runs),
        duplicates=sum(r.duplicates for r in runs),
        lost=[x for r in runs for x in r.lost],
        extra=[x for r in runs for x in r.extra],
        session_seconds=statistics.mean(r.session_seconds for r in runs),
        stamp_skew_ms=max(r.stamp_skew_ms for r in runs),
    )


# --- one run ----------------------------------------------------------------------------------------
def _failed(fake: FakeDiscord, thread: FakeChannel) -> str | None:
    for m in fake.messages(thread):
        if "Something went wrong" in m.content or m.content.startswith("⛔"):
            return m.content
    return None


async def run_variant(name: str, streamer_cls: type, steps: int, latency: float) -> Outcome:
    STAMPS.clear()
    guild = FakeGuild.create("Bench", channels=("general",), members=("alice",))
    general = guild.channel("general")
    with tempfile.TemporaryDirectory() as tmp, variant(streamer_cls):
        async with FakeDiscord([guild], channel_write_limit=(WINDOW_LIMIT, WINDOW)) as fake, FakeLLM() as llm:
            llm.script(*script(steps, latency))
            async with running_bot(fake, llm, Path(tmp), guild) as bot:
                started = time.monotonic()
                fake.inject_interaction("research", {"task": "Check ten sums"}, user="alice", channel=general)
                thread = await fake.wait_for_thread(parent=general)
                await fake.wait_for(
                    lambda: any(isinstance(e, FinalEvent) for _, e in STAMPS) or _failed(fake, thread),
                    within=60,
                    what="the final answer event",
                )
                if (failure := _failed(fake, thread)) is not None:
                    raise SystemExit(
                        f"{name}: the session failed, the thread says: {failure!r} (see the log above)"
                    )
                await fake.wait_for(lambda: not bot.runner.busy(), within=300, what="the session to end")
                ended = time.monotonic()
            return analyse(name, fake, thread, llm, steps, latency, started, ended)


# --- report ---------------------------------------------------------------------------------------
def fmt(x: float) -> str:
    return "  n/a" if x != x else f"{x:5.2f}"


def table(rows: list[Outcome], base: Outcome | None) -> str:
    head = (
        f"{'variant':<20} {'p50 s':>6} {'p95 s':>6} {'max s':>6} {'p95/base':>8} {'max/5s':>6} "
        f"{'writes':>6} {'429s':>5} {'dup':>4} {'lost':>4} {'twice':>5} {'session s':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r.pct(0.95) / base.pct(0.95) if base is not None else float("nan")
        lines.append(
            f"{r.name:<20} {fmt(r.pct(0.5)):>6} {fmt(r.pct(0.95)):>6} {fmt(max(r.delays(), default=float('nan'))):>6} "
            f"{fmt(ratio):>8} {r.max_in_window:>6} {r.writes:>6} {r.violations:>5} {r.duplicates:>4} "
            f"{len(r.lost) + r.unseen:>4} {len(r.extra):>5} {r.session_seconds:9.1f}"
        )
    return "\n".join(lines)


def by_kind(r: Outcome) -> str:
    parts = [
        f"{k} {fmt(r.pct(0.5, k)).strip()} / {fmt(r.pct(0.95, k)).strip()} (n={len(r.delays(k))})"
        for k in ("tool call", "tool result", "streamed text", "final answer")
    ]
    return f"  {r.name:<20} " + "; ".join(parts)


def verdict(r: Outcome) -> tuple[bool, str]:
    checks = [
        (f"p95 {r.pct(0.95):.2f} s <= {TARGET_P95} s", r.pct(0.95) <= TARGET_P95),
        (
            f"at most {r.max_in_window} writes in any {WINDOW:.0f} s (<= {WINDOW_LIMIT})",
            r.max_in_window <= WINDOW_LIMIT,
        ),
        (
            f"{len(r.lost) + r.unseen} lost, {len(r.extra)} shown twice, {r.duplicates} duplicate nonces",
            not (r.lost or r.unseen or r.extra or r.duplicates),
        ),
        (f"{r.violations} writes refused (429)", r.violations == 0),
    ]
    text = "; ".join(f"{'PASS' if ok else 'FAIL'} {what}" for what, ok in checks)
    return all(ok for _, ok in checks), text


async def main(runs: int, steps: int, latency: float, baseline: bool, show_timeline: bool) -> int:
    results = [
        await run_variant(f"streamer run {i + 1}", ThreadStreamer, steps, latency) for i in range(runs)
    ]
    base = await run_variant("naive (baseline)", NaiveStreamer, steps, latency) if baseline else None
    rows = [*results, *([pooled(results)] if runs > 1 else []), *([base] if base else [])]
    if show_timeline:
        for r in [*results, *([base] if base else [])]:
            print(f"\n--- {r.name}: seconds from /research\n" + "\n".join(r.timeline))
    print(
        f"\n{steps} calculator steps + final answer, model latency {latency * 1000:.0f} ms, streamed text "
        f"in steps {', '.join(str(s) for s in TEXT_STEPS if s <= steps)} and the answer; fake Discord limit "
        f"{WINDOW_LIMIT} writes / {WINDOW:.0f} s per channel.\nDelay = agent event -> first Discord write "
        f"showing it; max/5s = most writes in any {WINDOW:.0f} s window (sliding, header included).\n"
    )
    print(table(rows, base))
    print("\ndelay p50 / p95 in s by event kind:")
    for r in rows:
        print(by_kind(r))
    print("\ntargets:")
    ok = True
    for r in rows[: runs + (runs > 1)]:
        passed, text = verdict(r)
        ok = ok and passed
        print(f"  {r.name:<20} {text}")
        late = sorted(
            (s for s in r.samples if s.delay is not None and s.delay > TARGET_P95),
            key=lambda s: -(s.delay or 0),
        )
        if late and r in results:
            print(
                f"  {'':<20} over {TARGET_P95} s: "
                + ", ".join(f"{s.kind} {s.step} {s.delay:.2f}s" for s in late[:6])
                + (" …" if len(late) > 6 else "")
            )
        if r.lost or r.extra:
            print(f"  {'':<20} lost: {r.lost}; shown twice: {r.extra}")
    print(
        f"\nevent stamps vs the scripted server's reply times: max skew {max(r.stamp_skew_ms for r in results):.0f} ms"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="streamer runs (the baseline runs once); default 3")
    ap.add_argument("--steps", type=int, default=10, help="tool steps, 1 to 11 (the agent stops at 12)")
    ap.add_argument("--latency", type=float, default=0.3, help="seconds per model call; default 0.3")
    ap.add_argument("--no-baseline", action="store_true", help="skip the naive writer (about 35 s)")
    ap.add_argument("--timeline", action="store_true", help="print every event and write, from /research")
    ns = ap.parse_args()
    if not 1 <= ns.runs <= 20 or not 1 <= ns.steps <= 11 or not 0 <= ns.latency <= 5:
        ap.error("--runs must be 1 to 20, --steps 1 to 11 (AGENT_MAX_STEPS is 12), --latency 0 to 5 s")
    sys.exit(asyncio.run(main(ns.runs, ns.steps, ns.latency, not ns.no_baseline, ns.timeline)))
