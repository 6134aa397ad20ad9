"""Writes a session's progress into its thread within Discord's per-channel limit, losing nothing.

The agent produces events far faster than a channel accepts writes (about 5 per 5 s), so this keeps a
model of what the thread *should* show (an ordered list of messages made of blocks) and one writer
task that, each time the write budget allows, makes the oldest difference real: send a message that
is not there yet, or edit one whose text changed. Consequences:

* nothing is lost: a block's latest text is always eventually written; edits of one message coalesce;
* nothing is reordered: messages are sent in the order they were created, by one task;
* when the budget is short, several pending step messages are merged into one send, so the final
  answer is not starved; the live "writing…" preview is refreshed only when nothing else waits;
* a failed write (429 after discord.py's own retries, 5xx, a network error) is retried after
  ``retry_after`` or a backoff, for as long as it takes; sends carry a fixed nonce with
  ``enforce_nonce``, so a retried send never creates a second message;
* a write that finds the thread itself gone (deleted, archived and locked, access lost) stops all
  writing at once: nothing queued is retried into a thread that can no longer take it, and the
  owner's ``on_gone`` is called once so it can stop the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

log = structlog.get_logger().bind(logger="bot.streamer")

BlockKind = Literal["step", "note", "live", "final"]
MERGE_LIMIT = 1900
LIVE_REFRESH = 1.5
LIVE_DELAY = 0.8
"""A preview is first sent only after this long: most "thinking" text turns into a tool call within
milliseconds, and sending then deleting it would spend two writes on nothing."""
SETTLE = 0.15
"""How long a change after a lull (or into an unused window) waits for the rest of its burst: a tool
call and its result, a few milliseconds apart, then cost one write."""


class SinkError(Exception):
    """A write failed. ``retryable`` writes are tried again; others are given up (and logged)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
        gone: bool = False,
        thread_gone: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.gone = gone
        """The target no longer exists (message or thread deleted): stop trying."""
        self.thread_gone = thread_gone
        """The whole thread can take no more writes (deleted, archived, access lost)."""


class Sink(Protocol):
    """Where the streamer writes (a Discord thread in production, anything in tests)."""

    async def send(
        self,
        content: str,
        *,
        nonce: str,
        files: list[tuple[str, bytes]] | None = None,
        notify: int | None = None,
    ) -> tuple[int, str]:
        """Send a new message; returns its id and the content it holds. Silent unless ``notify`` names
        the one user this message may notify."""
        ...

    async def edit(self, message_id: int, content: str) -> None: ...

    async def delete(self, message_id: int) -> None: ...


@dataclass(eq=False)
class Block:
    kind: BlockKind
    text: str = ""
    changed_at: float = 0.0
    """When the text last changed and is not yet on Discord (0 = written)."""
    created: float = field(default_factory=time.monotonic)
    gap: float = 0.0
    """How long the thread was quiet (no other change) before this block last became pending."""
    message: _Message | None = None


@dataclass(eq=False)
class _Message:
    blocks: list[Block]
    nonce: str
    files: list[tuple[str, bytes]] | None = None
    notify: int | None = None
    id: int | None = None
    shown: str | None = None
    deleted: bool = False
    delete_wanted: bool = False
    failed: bool = False

    def content(self) -> str:
        return "\n".join(b.text for b in self.blocks if b.text)[:2000]


@dataclass
class WriteStats:
    """What a benchmark or test wants to know about pacing."""

    writes: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    """Seconds from a block change to the write that showed it."""
    failures: int = 0
    given_up: int = 0


class WriteBudget:
    """A sliding window: at most ``writes`` in any ``per`` seconds (Discord: 5 per 5 s per channel)."""

    def __init__(
        self, writes: int = 5, per: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.writes, self.per, self.clock = writes, per, clock
        self._stamps: deque[float] = deque()

    def wait_time(self) -> float:
        """Seconds until the window has room for one more write."""
        now = self.clock()
        while self._stamps and now - self._stamps[0] >= self.per:
            self._stamps.popleft()
        if len(self._stamps) < self.writes:
            return 0.0
        return self._stamps[0] + self.per - now + 0.01

    def used(self) -> int:
        """Writes in the current window."""
        self.wait_time()
        return len(self._stamps)

    def short(self) -> bool:
        """True while writes are being paced: merge pending changes rather than spend a write on each."""
        self.wait_time()
        return len(self._stamps) * 2 >= self.writes or (
            bool(self._stamps) and self.clock() - self._stamps[-1] < 2 * self.per / self.writes
        )

    async def acquire(self) -> None:
        """Wait for room, then count one write (for writers other than the streamer, e.g. the header)."""
        for _ in range(self.writes):  # another writer may take the room first: look again
            wait = self.wait_time()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self.take()

    def take(self, at: float | None = None) -> None:
        """Count a write (``at`` for one made elsewhere in the same channel, e.g. the session header)."""
        self._stamps.append(self.clock() if at is None else at)


class ThreadStreamer:
    def __init__(
        self,
        sink: Sink,
        *,
        writes: int = 5,
        per: float = 5.0,
        name: str = "",
        stats: WriteStats | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        on_gone: Callable[[str], Any] | None = None,
        budget: WriteBudget | None = None,
    ) -> None:
        """``budget``: the thread's own, shared by every turn and note in it (else a fresh one)."""
        self.sink = sink
        self.on_gone = on_gone
        """Called once (with the reason) when a write finds the thread gone."""
        self.gone: str | None = None
        self.budget = budget or WriteBudget(writes, per)
        """The channel's write window: pass the thread's own to share it with other writers there."""
        self.stats = stats or WriteStats()
        self._messages: list[_Message] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sleep = sleep
        self._closed = False
        self._flushing = 0
        self._live: Block | None = None
        self._live_written_at = 0.0
        self._last_change = time.monotonic()  # a turn starts amid writes (the header, the question)
        self._task = asyncio.create_task(self._writer(), name=f"streamer:{name}")

    # --- what the session wants shown -----------------------------------------------------------
    def add(
        self,
        kind: BlockKind,
        text: str,
        files: list[tuple[str, bytes]] | None = None,
        *,
        notify: int | None = None,
    ) -> Block:
        """A new block in a new message (it may be merged with its neighbours when the budget is short).
        ``notify``: the one user this message notifies (the final answer); every other is silent."""
        block = Block(kind, text, time.monotonic())
        if self.gone is not None:
            return block  # the thread is gone: nothing more is shown
        self._pending(block, fresh=True)
        msg = _Message([block], nonce=str(random.getrandbits(62)), files=files, notify=notify)
        block.message = msg
        self._messages.append(msg)
        self._poke()
        return block

    def update(self, block: Block, text: str) -> None:
        if text == block.text or self.gone is not None:
            return
        block.text = text
        fresh = not block.changed_at
        if fresh:
            block.changed_at = time.monotonic()
        self._pending(block, fresh=fresh)
        self._poke()

    def _pending(self, block: Block, *, fresh: bool) -> None:
        """Note how long the thread was quiet before this change (the live preview has its own pace)."""
        if block.kind == "live":
            return
        now = time.monotonic()
        if fresh:
            block.gap = now - self._last_change
        self._last_change = now

    def live(self, text: str) -> None:
        """The model's words as it writes them: one message, refreshed when the budget allows."""
        text = text[-1900:]
        if self._live is None or (self._live.message and self._live.message.delete_wanted):
            self._live = self.add("live", text)
        else:
            self.update(self._live, text)

    def end_live(self) -> str:
        """Remove the live preview (its text is about to be shown another way); returns its text."""
        block, self._live = self._live, None
        if block is None or block.message is None:
            return ""
        block.message.delete_wanted = True
        self._poke()
        return block.text

    async def flush(self, within: float | None = None) -> bool:
        """Wait until everything shown is on Discord. False on timeout (the writer keeps going)."""
        self._flushing += 1
        try:
            async with asyncio.timeout(within):
                while not self._done():
                    self._idle.clear()
                    self._poke()
                    await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1
        return True

    async def close(self, within: float | None = 600) -> None:
        """Flush, then stop the writer task."""
        await self.flush(within)
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def abandon(self, reason: str) -> None:
        """The thread is gone (deleted, archived, locked): drop every pending write, show nothing more."""
        if self.gone is not None:
            return
        self.gone = reason
        for msg in self._messages:
            if msg.id is None or msg.content() != msg.shown or msg.delete_wanted:
                msg.failed = True
        self._poke()
        if self.on_gone is not None:
            try:
                self.on_gone(reason)
            except Exception:
                log.warning("on_gone_failed", exc_info=True)

    # --- the writer --------------------------------------------------------------------------------
    def _poke(self) -> None:
        self._wake.set()

    def _done(self) -> bool:
        return self._next(force_live=True) is None

    def _next(self, force_live: bool = False) -> tuple[str, _Message] | None:
        live_due = (
            force_live or self._flushing > 0 or time.monotonic() - self._live_written_at >= LIVE_REFRESH
        )
        live_candidate = None
        live_delete: tuple[str, _Message] | None = None
        for msg in self._messages:
            if msg.failed or msg.deleted:
                continue
            if msg.delete_wanted:
                if msg.id is None:
                    msg.deleted = True  # never sent: nothing to remove
                else:
                    # Removing a stale preview waits for everything that shows something new.
                    live_delete = live_delete or ("delete", msg)
                continue
            is_live = msg.blocks[0].kind == "live"
            if msg.id is None:
                if is_live:
                    if force_live or time.monotonic() - msg.blocks[0].created >= LIVE_DELAY:
                        live_candidate = live_candidate or ("send", msg)
                    continue
                return "send", msg
            if msg.content() != msg.shown:
                if is_live:
                    live_candidate = live_candidate or ("edit", msg)
                    continue
                return "edit", msg
        if live_delete:
            return live_delete
        if live_candidate and live_due:
            return live_candidate
        return None

    def _merge_into(self, msg: _Message) -> None:
        """Fold the unsent step/note messages right after ``msg`` into it, within one message's room."""
        if msg.blocks[0].kind not in ("step", "note") or msg.files or msg.notify:
            return
        i = self._messages.index(msg) + 1
        size = len(msg.content())
        while i < len(self._messages):
            nxt = self._messages[i]
            if nxt.deleted or (nxt.blocks[0].kind == "live"):
                i += 1
                continue
            if nxt.id is not None or nxt.files or nxt.blocks[0].kind not in ("step", "note"):
                break
            extra = len(nxt.content()) + 1
            if size + extra > MERGE_LIMIT:
                break
            for b in nxt.blocks:
                b.message = msg
            msg.blocks.extend(nxt.blocks)
            size += extra
            self._messages.pop(i)

    def _due_in(self) -> float:
        """Seconds until the oldest pending change has waited its hold (0: write now).

        Writing whenever the window allows spends it in a burst (5 writes in 0.4 s, then 4.6 s of
        silence: events up to 4.4 s late); writing on a fixed spacing sends a tool call 2 ms before
        its result, which then waits a whole spacing, and its phase decides whether the final answer
        finds the window full (p95 from 0.97 to 1.25 s as the model latency moves by 50 ms). So a
        change amid a stream of events, with the window in use, waits until it is ``per / writes``
        old (1 s for 5 per 5 s): each write then covers at least a second of events, which keeps
        the window from running dry. A change after a lull, or into an unused window, waits only
        :data:`SETTLE`. Each write carries everything pending. A final answer, a flush or a close
        never wait: the answer is not held back for batching.
        """
        if self._flushing or self._closed:
            return 0.0
        oldest: Block | None = None
        for msg in self._messages:
            if msg.failed or msg.deleted:
                continue
            for b in msg.blocks:
                if b.changed_at and b.kind != "live":
                    if b.kind == "final":
                        return 0.0
                    if oldest is None or b.changed_at < oldest.changed_at:
                        oldest = b
        if oldest is None:
            return 0.0
        spacing = self.budget.per / self.budget.writes
        hold = SETTLE if oldest.gap > spacing or self.budget.used() == 0 else spacing
        return oldest.changed_at + hold - time.monotonic()

    def _append_target(self, msg: _Message) -> _Message | None:
        """When paced, a new step joins the thread's last progress message (one edit shows both the
        previous step's result and the new step) instead of costing a send of its own."""
        if msg.blocks[0].kind not in ("step", "note") or msg.files:
            return None
        i = self._messages.index(msg)
        prev = next((m for m in reversed(self._messages[:i]) if not m.deleted and not m.delete_wanted), None)
        if prev is None or prev.id is None or prev.files or prev.failed:
            return None
        if prev.blocks[0].kind not in ("step", "note"):
            return None
        if len(prev.content()) + len(msg.content()) + 1 > MERGE_LIMIT:
            return None
        for b in msg.blocks:
            b.message = prev
        prev.blocks.extend(msg.blocks)
        self._messages.remove(msg)
        self._merge_into(prev)
        return prev

    async def _writer(self) -> None:
        while True:
            op = self._next()
            if op is None:
                self._idle.set()
                self._wake.clear()
                # Wake on new work, or when a live refresh becomes due.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25 if self._live is not None else None):
                        await self._wake.wait()
                continue
            due = self._due_in()
            if due > 0:  # let more changes join this write; new work (a final answer) re-checks sooner
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due):
                        await self._wake.wait()
                continue
            wait = self.budget.wait_time()
            if wait > 0:
                await self._sleep(wait)
                continue  # the best next write may have changed while waiting
            kind, msg = op
            if self.budget.short() and kind in ("send", "edit"):
                target = self._append_target(msg) if kind == "send" else None
                if target is not None:
                    kind, msg = "edit", target
                else:
                    self._merge_into(msg)  # the steps waiting behind it ride along
            await self._write(kind, msg)

    async def _write(self, kind: str, msg: _Message) -> None:
        content = msg.content()
        pending = [b for b in msg.blocks if b.changed_at]
        delay = 1.0
        while True:
            self.budget.take()
            try:
                if kind == "send":
                    msg.id, msg.shown = await self.sink.send(
                        content or "\u200b", nonce=msg.nonce, files=msg.files, notify=msg.notify
                    )
                elif kind == "edit":
                    await self.sink.edit(msg.id or 0, content)
                    msg.shown = content
                else:
                    await self.sink.delete(msg.id or 0)
                    msg.deleted = True
                break
            except SinkError as e:
                self.stats.failures += 1
                if e.thread_gone:
                    log.warning("stream_thread_gone", op=kind, status=e.status, error=str(e))
                    self.stats.given_up += 1
                    msg.failed = True
                    self.abandon(str(e))
                    return
                if e.gone or not e.retryable:
                    log.warning("stream_write_given_up", op=kind, status=e.status, error=str(e))
                    self.stats.given_up += 1
                    if kind == "delete" or (kind == "edit" and e.gone):
                        msg.deleted = kind == "delete"
                        msg.shown = content
                    else:
                        msg.failed = True
                    return
                wait = e.retry_after if e.retry_after is not None else delay
                delay = min(delay * 2, 60.0)
                log.info("stream_write_retry", op=kind, status=e.status, wait=round(wait, 2))
                await self._sleep(wait)
        now = time.monotonic()
        self.stats.writes.append(now)
        if msg.blocks and msg.blocks[0].kind == "live":
            self._live_written_at = now
        for b in pending:
            if b.changed_at:
                self.stats.latencies.append(now - b.changed_at)
                b.changed_at = 0.0 if msg.content() == msg.shown or kind == "delete" else now
