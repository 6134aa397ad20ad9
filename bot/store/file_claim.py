"""One ``agentbot run`` per SQLite store file (the embedded store's counterpart of
:mod:`bot.store.shard_claim`, apart so that a SQLite bot never imports asyncpg)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from agent.config import ConfigError

__all__ = ["FileClaim"]


class FileClaim:
    """The same rule for the embedded SQLite store: one ``agentbot run`` per store file. A second one on
    the same ``DATA_DIR`` started, recovered the first one's live runs as interrupted (dropping their
    quota reservations and concurrency slots, resuming them a second time) and answered everything
    twice. An exclusive ``flock`` on a file beside the store, held for as long as the process runs (the
    kernel drops it with the process); ``agentbot sync`` and ``doctor`` take none."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def take(cls, store: Path) -> FileClaim:
        fd = os.open(f"{store}.run-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"DATA_DIR: another agentbot run already serves {store}, and two bots on one store "
                "answer everything twice and take each other's runs for interrupted ones: stop the other "
                "one, or give this one its own DATA_DIR (several processes share a DATABASE_URL instead; "
                "README: Scaling)"
            ) from None
        return cls(fd)

    def watch(self, on_lost: Callable[[str], object]) -> None:
        """Nothing to watch: the lock lasts as long as the process."""

    async def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
