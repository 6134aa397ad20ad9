"""Writes a session's progress into its thread within Discord's per-channel limit, losing nothing.

The agent produces events far faster than a channel accepts writes (about 5 per 5 s), so this keeps a
model of what the thread *should* show (:class:`bot.stream_plan.ThreadPlan`: an ordered list of
messages made of blocks) and one writer task that, each time the write budget allows, makes the oldest
difference real: send a message that is not there yet, or edit one whose text changed. Consequences:

* nothing is lost: a block's latest text is always eventually written; edits of one message coalesce;
* nothing is reordered: messages are sent in the order they were created, by one task;
* when the budget is short, several pending step messages are merged into one send, so the final
  answer is not starved; the live "writing…" preview is refreshed only when nothing else waits;
* a failed write (429 after discord.py's own retries, 5xx, a network error) is retried, for as long
  as it takes, after the wait of the one retry policy (:data:`WRITE_RETRY`); sends carry a fixed nonce with
  ``enforce_nonce``, so a retried send never creates a second message;
* a write that finds the thread itself gone (deleted, archived and locked, access lost) stops all
  writing at once: nothing queued is retried into a thread that can no longer take it, and the
  owner's ``on_gone`` is called once so it can stop the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from agent.retry import RetryPolicy
from bot.stream_plan import Block, BlockKind, Op, PlannedMessage, ThreadPlan
from bot.stream_sink import Sink, SinkError
from bot.write_window import WriteBudget

__all__ = ["Block", "BlockKind", "Sink", "SinkError", "ThreadStreamer", "WriteBudget"]

log = structlog.get_logger("bot.streamer")

WRITE_RETRY = RetryPolicy(initial=1.0, maximum=60.0)
"""For a failed write that named no wait: 1 s doubling to a minute; its jitter keeps threads that
failed together (a Discord outage) from all retrying at the same moment. Never given up: the writer
stops only when the write is refused for good or the thread is gone."""


class ThreadStreamer:
    def __init__(
        self,
        sink: Sink,
        *,
        writes: int = 5,
        per: float = 5.0,
        name: str = "",
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
        self._plan = ThreadPlan()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sleep = sleep
        self._closed = False
        self._flushing = 0
        self._contended = False
        """The last turn waited for other threads' writes (the bot-wide budget is the limit)."""
        self._failures = 0
        """Writes failed in a row (the retry policy's attempt number)."""
        self.refused: str | None = None
        """Why a send was refused for a missing permission, once one was: the turn stops at its next step
        boundary (nothing it writes can be shown, and each step is charged)."""
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
        if self.gone is not None:
            return Block(kind, text, time.monotonic())  # the thread is gone: nothing more is shown
        block = self._plan.add(kind, text, files, notify)
        self._poke()
        return block

    def update(self, block: Block, text: str) -> None:
        if text == block.text or self.gone is not None:
            return
        self._plan.update(block, text)
        self._poke()

    def live(self, text: str) -> None:
        """The model's words as it writes them: one message, refreshed when the budget allows."""
        text = text[-1900:]
        live = self._plan.live
        if live is None or (live.message and live.message.delete_wanted):
            self._plan.live = self.add("live", text)
        else:
            self.update(live, text)

    def end_live(self) -> str:
        """Remove the live preview (its text is about to be shown another way); returns its text."""
        block, self._plan.live = self._plan.live, None
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
        self._plan.abandon()
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
        return self._plan.next_op(force_live=True) is None

    def _next(self) -> tuple[Op, PlannedMessage] | None:
        return self._plan.next_op(flushing=self._flushing > 0)

    async def _writer(self) -> None:
        plan = self._plan
        while True:
            op = self._next()
            if op is None:
                self._idle.set()
                self._wake.clear()
                # Wake on new work, or when a live refresh becomes due.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25 if plan.live is not None else None):
                        await self._wake.wait()
                continue
            now_wanted = bool(self._flushing or self._closed)
            due = plan.due_in(self.budget, now_wanted=now_wanted, settle_only=self._contended)
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
            retry_in = 0.0
            async with self.sink.turn() as grant:
                # The thread's turn among all the bot's writers, which can take seconds under load:
                # what to write is decided only now, so the write carries every change made while
                # it waited instead of showing a stale one and queueing again for the rest.
                op = self._next()
                if op is None or self.gone is not None or self.budget.wait_time() > 0:
                    grant.unused()
                    continue
                self._contended = grant.waited
                kind, msg = op
                # Scarce writes (this thread's window, or every thread's turn) carry all they can.
                if (self.budget.short() or grant.waited) and kind in ("send", "edit"):
                    target = plan.append_target(msg) if kind == "send" else None
                    if target is not None:
                        kind, msg = "edit", target
                    else:
                        plan.merge_into(msg, finals=grant.waited)  # what waits behind it rides along
                retry_in = await self._write(kind, msg)
            if retry_in:
                await self._sleep(retry_in)

    async def _write(self, kind: Op, msg: PlannedMessage) -> float:
        """One attempt; returns how long to wait before the writer tries again (0: done or given up).
        A retry is a new turn: the writer picks the oldest difference again, which a failed send
        still is (under its nonce, so a send that did land is not made twice)."""
        content = msg.content()
        pending = [b for b in msg.blocks if b.changed_at]
        at = self.budget.take()
        try:
            if kind == "send":
                msg.attempted = True
                msg.id, msg.shown = await self.sink.send(
                    content or "\u200b", nonce=msg.nonce, files=msg.files, notify=msg.notify
                )
            elif kind == "edit":
                await self.sink.edit(msg.id or 0, content)
                msg.shown = content
            else:
                await self.sink.delete(msg.id or 0)
                msg.deleted = True
        except SinkError as e:
            if e.thread_gone:
                log.warning("stream_thread_gone", op=kind, status=e.status, error=str(e))
                msg.failed = True
                self.abandon(str(e))
                return 0.0
            if e.gone or not e.retryable:
                log.warning("stream_write_given_up", op=kind, status=e.status, error=str(e))
                if e.forbidden and kind == "send":
                    self.refused = self.refused or "a missing permission to post here"
                if kind == "edit" and e.gone and not e.forbidden:
                    self._plan.vanished(msg)  # deleted by someone (a moderator)
                elif kind == "delete" or (kind == "edit" and e.gone):
                    msg.deleted = kind == "delete"
                    msg.shown = content
                else:
                    msg.failed = True
                return 0.0
            self._failures += 1
            # Discord's 429 names the exact moment its bucket refills: waiting longer only delays the
            # thread (the pacing already spreads writes), so a named wait is taken as is.
            wait = e.retry_after if e.retry_after is not None else WRITE_RETRY.wait(self._failures, e)
            log.info("stream_write_retry", op=kind, status=e.status, wait=round(wait, 2))
            return max(wait, 0.001)
        finally:  # counted from when it ended: it may have waited in discord.py's own rate limiter
            self.budget.retime(at)
        self._failures = 0
        now = time.monotonic()
        if msg.blocks and msg.blocks[0].kind == "live":
            self._plan.live_written_at = now
        settled = kind == "delete" or msg.content() == msg.shown
        for b in pending:
            if b.changed_at:
                b.changed_at = 0.0 if settled else now
        return 0.0
