"""What a thread should show, and the next write that brings Discord closer to it.

The model the streamer keeps: an ordered list of messages made of blocks (a step, a note, the live
preview, the final answer). Each block's latest text is what the thread should show; a message whose
content differs from what Discord holds needs a write. This module decides *which* write comes next
(the oldest difference, the live preview last), *when* it is due (a burst of changes costs one write),
and how pending step messages fold together when writes are scarce. It never writes: the streamer
(:mod:`bot.streamer`) does, one write at a time.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Literal

from agent.messages import well_formed
from bot.write_window import WriteBudget

BlockKind = Literal["step", "note", "live", "final"]
Op = Literal["send", "edit", "delete"]
MERGE_LIMIT = 1900
LIVE_REFRESH = 1.5
LIVE_DELAY = 0.8
"""A preview is first sent only after this long: most "thinking" text turns into a tool call within
milliseconds, and sending then deleting it would spend two writes on nothing."""
SETTLE = 0.15
"""How long a change after a lull (or into an unused window) waits for the rest of its burst: a tool
call and its result, a few milliseconds apart, then cost one write."""


@dataclass(eq=False)
class Block:
    kind: BlockKind
    text: str = ""
    changed_at: float = 0.0
    """When the text last changed and is not yet on Discord (0 = written)."""
    created: float = field(default_factory=time.monotonic)
    gap: float = 0.0
    """How long the thread was quiet (no other change) before this block last became pending."""
    message: PlannedMessage | None = None


@dataclass(eq=False)
class PlannedMessage:
    blocks: list[Block]
    nonce: str
    files: list[tuple[str, bytes]] | None = None
    notify: int | None = None
    id: int | None = None
    shown: str | None = None
    deleted: bool = False
    delete_wanted: bool = False
    failed: bool = False
    attempted: bool = False
    """A send was tried: it may have landed although it failed, so this message is only ever sent
    again under its own nonce, never folded into another (that would show its text twice)."""

    def content(self) -> str:
        # A lone UTF-16 half (an answer cut inside a split emoji) failed every write of the message.
        return well_formed("\n".join(b.text for b in self.blocks if b.text)[:2000])


class ThreadPlan:
    """The messages a thread should show, oldest first, and the live preview among them."""

    def __init__(self) -> None:
        self.messages: list[PlannedMessage] = []
        self.live: Block | None = None
        self.live_written_at = 0.0
        self.last_change = time.monotonic()  # a turn starts amid writes (the header, the question)

    # --- changes ----------------------------------------------------------------------------------
    def add(
        self, kind: BlockKind, text: str, files: list[tuple[str, bytes]] | None, notify: int | None
    ) -> Block:
        block = Block(kind, text, time.monotonic())
        self._pending(block, fresh=True)
        msg = PlannedMessage([block], nonce=str(random.getrandbits(62)), files=files, notify=notify)
        block.message = msg
        self.messages.append(msg)
        return block

    def update(self, block: Block, text: str) -> None:
        block.text = text
        fresh = not block.changed_at
        if fresh:
            block.changed_at = time.monotonic()
        self._pending(block, fresh=fresh)

    def _pending(self, block: Block, *, fresh: bool) -> None:
        """Note how long the thread was quiet before this change (the live preview has its own pace)."""
        if block.kind == "live":
            return
        now = time.monotonic()
        if fresh:
            block.gap = now - self.last_change
        self.last_change = now

    def abandon(self) -> None:
        """Nothing more reaches the thread: every write still owed is given up."""
        for msg in self.messages:
            if msg.id is None or msg.content() != msg.shown or msg.delete_wanted:
                msg.failed = True

    # --- the next write ---------------------------------------------------------------------------
    def next_op(
        self, *, force_live: bool = False, flushing: bool = False
    ) -> tuple[Op, PlannedMessage] | None:
        """The oldest difference between the plan and Discord; the live preview only when nothing else
        waits and its refresh is due (``flushing``), or even before its first delay (``force_live``)."""
        now = time.monotonic()
        live_due = force_live or flushing or now - self.live_written_at >= LIVE_REFRESH
        live_candidate: tuple[Op, PlannedMessage] | None = None
        live_delete: tuple[Op, PlannedMessage] | None = None
        for msg in self.messages:
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
                    if force_live or now - msg.blocks[0].created >= LIVE_DELAY:
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

    def due_in(self, window: WriteBudget, *, now_wanted: bool, settle_only: bool = False) -> float:
        """Seconds until the oldest pending change has waited its hold (0: write now).

        Writing whenever the window allows spends it in a burst (5 writes in 0.4 s, then 4.6 s of
        silence: events up to 4.4 s late); writing on a fixed spacing sends a tool call 2 ms before
        its result, which then waits a whole spacing, and its phase decides whether the final answer
        finds the window full (p95 from 0.97 to 1.25 s as the model latency moves by 50 ms). So a
        change amid a stream of events, with the window in use, waits until it is ``per / writes``
        old (1 s for 5 per 5 s): each write then covers at least a second of events, which keeps
        the window from running dry. A change after a lull, or into an unused window, waits only
        :data:`SETTLE`. Each write carries everything pending. A final answer, a flush or a close
        (``now_wanted``) never wait: the answer is not held back for batching. ``settle_only``: the
        bot-wide budget, not the window, is the limit (the thread's last turn waited behind others);
        the next turn is far off and brings everything changed by then, so only :data:`SETTLE` is
        held (a tool call and its result still make one write).
        """
        if now_wanted:
            return 0.0
        oldest: Block | None = None
        for msg in self.messages:
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
        spacing = window.per / window.writes
        hold = SETTLE if settle_only or oldest.gap > spacing or window.used() == 0 else spacing
        return oldest.changed_at + hold - time.monotonic()

    # --- folding pending messages together --------------------------------------------------------
    def merge_into(self, msg: PlannedMessage, *, finals: bool = False) -> None:
        """Fold the unsent step/note messages right after ``msg`` into it, within one message's room;
        with ``finals`` (writes are scarce bot-wide), the answer's unsent parts and its footer too
        (the merged message keeps the footer's one notification: one write fewer per answer)."""
        if msg.blocks[0].kind == "final":
            if finals and not msg.files and msg.notify is None:
                self._absorb(msg, ("final",), 2000)
            return
        if msg.blocks[0].kind in ("step", "note") and not msg.files and not msg.notify:
            self._absorb(msg, ("step", "note"), MERGE_LIMIT)

    def _absorb(self, msg: PlannedMessage, kinds: tuple[str, ...], limit: int) -> None:
        """Move the unsent messages of ``kinds`` that follow ``msg`` into it while they fit in ``limit``
        characters; live blocks in between are skipped, and a message that notifies ends the run (the
        footer closes the answer)."""
        i = self.messages.index(msg) + 1
        size = len(msg.content())
        while i < len(self.messages):
            nxt = self.messages[i]
            if nxt.deleted or nxt.blocks[0].kind == "live":
                i += 1
                continue
            if nxt.id is not None or nxt.files or nxt.attempted or nxt.blocks[0].kind not in kinds:
                break
            extra = len(nxt.content()) + 1
            if size + extra > limit:
                break
            for b in nxt.blocks:
                b.message = msg
            msg.blocks.extend(nxt.blocks)
            size += extra
            self.messages.pop(i)
            if nxt.notify is not None:
                msg.notify = nxt.notify
                break

    def vanished(self, msg: PlannedMessage) -> None:
        """Someone (a moderator) deleted ``msg``: nothing more goes into it (each later step joined it,
        and the edit showing it found no message), and the blocks it never showed (steps joined since
        its last write) get a message of their own."""
        msg.deleted = True
        shown = msg.shown or ""
        unseen = [
            b for b in msg.blocks if b.kind != "live" and b.text and b.text.split("\n", 1)[0] not in shown
        ]
        if unseen:
            rest = PlannedMessage(unseen, nonce=str(random.getrandbits(62)))
            for b in unseen:
                b.message = rest
            msg.blocks = [b for b in msg.blocks if b.message is msg]
            self.messages.insert(self.messages.index(msg) + 1, rest)

    def append_target(self, msg: PlannedMessage) -> PlannedMessage | None:
        """When paced, a new step joins the thread's last progress message (one edit shows both the
        previous step's result and the new step) instead of costing a send of its own."""
        if msg.blocks[0].kind not in ("step", "note") or msg.files or msg.attempted:
            return None
        i = self.messages.index(msg)
        prev = next((m for m in reversed(self.messages[:i]) if not m.deleted and not m.delete_wanted), None)
        if prev is None or prev.id is None or prev.files or prev.failed:
            return None
        if prev.blocks[0].kind not in ("step", "note"):
            return None
        if len(prev.content()) + len(msg.content()) + 1 > MERGE_LIMIT:
            return None
        for b in msg.blocks:
            b.message = prev
        prev.blocks.extend(msg.blocks)
        self.messages.remove(msg)
        self.merge_into(prev)
        return prev
