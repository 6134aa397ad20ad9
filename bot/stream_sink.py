"""Where a thread's stream is written: the :class:`Sink` contract and the :class:`SinkError` it raises.

A Discord thread in production (:mod:`bot.discord_sink`), anything in tests and benchmarks.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol


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
        forbidden: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.gone = gone
        """The target no longer exists (message or thread deleted): stop trying."""
        self.thread_gone = thread_gone
        """The whole thread can take no more writes (deleted, archived, access lost)."""
        self.forbidden = forbidden
        """Discord refused it for a missing permission (403): a send there will not land until it is given."""


class Grant(Protocol):
    """A turn to write (:class:`bot.pacing.Turn` for Discord)."""

    waited: bool
    """Other writers went first: writes are scarce, so this one should carry all it can."""

    def unused(self) -> None:
        """Nothing was written in it: it goes to the next writer at once."""
        ...


class FreeTurn:
    """A turn from no shared budget (a sink of its own, in tests)."""

    waited = False

    def unused(self) -> None:
        pass


class Sink(Protocol):
    """Where the streamer writes (a Discord thread in production, anything in tests).

    Every write is made inside :meth:`turn`, which waits for this thread's turn among all the bot's
    writers; the streamer decides *what* to write only once it has the turn, so a write that waited
    carries every change made meanwhile."""

    def turn(self) -> AbstractAsyncContextManager[Grant]:
        """Wait for a turn to write; the write is made inside the block."""
        ...

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
