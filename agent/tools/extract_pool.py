"""A few long-lived extraction processes (:mod:`agent.tools.extract`), each killed at its deadline.

Why not ``asyncio.to_thread``: a thread cannot be stopped, and six slow pages held every slot of the
default pool (``min(32, cores + 4)``, 6 on 2 cores) so an unrelated ``to_thread`` call waited 257 s.
Why not ``ProcessPoolExecutor``: it cannot kill one task, only break the whole pool.

Each page is handed to an idle worker by a thread of this pool's own executor; that thread only waits
on the worker's pipe (no CPU work, so no GIL held), and when the deadline passes the asyncio side kills
the worker, the pipe ends and the thread returns at once. A killed worker is replaced on the next
page (about 0.5 s to start and import trafilatura). Workers get a minimal environment (no API keys or
bot token) and leave when the bot's end of their pipe closes, so a dying bot leaves none behind.

The workers are shared fairly between servers (:class:`~agent.tools.fair_slots.FairSlots`, keyed by
the caller's server), and a page's deadline counts from when a worker takes it: measured from the
request, one server's many slow pages made another server's page fail while it was still queued.
The time a page may wait for a worker is bounded separately, with its own error.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.tools.extract import read_frame, write_frame
from agent.tools.fair_slots import FairSlots

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT")


class ExtractionFailed(Exception):
    """The worker did not answer: killed at the deadline, or it died."""


class ExtractionBusy(ExtractionFailed):
    """No worker came free within the wait bound: every one stayed busy with other pages."""


@dataclass(eq=False)
class _Job:
    header: bytes
    body: bytes
    lock: threading.Lock = field(default_factory=threading.Lock)
    proc: subprocess.Popen[bytes] | None = None
    abandoned: bool = False


def minimal_env() -> dict[str, str]:
    """All a child that parses hostile input gets of the bot's environment: never API keys or the token."""
    return {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}


def _spawn(memory_mb: int) -> subprocess.Popen[bytes]:
    env = minimal_env()
    env["PYTHONPATH"] = _PACKAGE_ROOT
    return subprocess.Popen(
        [sys.executable, "-m", "agent.tools.extract", str(memory_mb)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        close_fds=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _shutdown(idle: list[subprocess.Popen[bytes]], executor: ThreadPoolExecutor) -> None:
    while idle:
        _stop(idle.pop())
    executor.shutdown(wait=False, cancel_futures=True)


class ExtractorPool:
    """At most ``size`` pages extracted at once, each in a worker process killed at its deadline."""

    def __init__(
        self, size: int = 2, *, memory_mb: int = 1024, max_reply: int = 64 << 20, max_wait: float = 30.0
    ) -> None:
        self.size = size
        self.max_wait = max_wait
        """Seconds a page may wait for a free worker before :class:`ExtractionBusy`."""
        self.slots = FairSlots(size)
        """Who may use a worker now: as many as there are executor threads, so a page never queues there."""
        self.memory_mb = memory_mb
        """Address space per worker (RLIMIT_AS): trafilatura peaked at 200 MB on a 2 MB table."""
        self.max_reply = max_reply
        self._idle: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fetch-extract")
        self._finalizer = weakref.finalize(self, _shutdown, self._idle, self._executor)

    def close(self) -> None:
        """Stop the idle workers; a busy one is stopped when its page ends."""
        self._finalizer()

    async def extract(
        self,
        request: dict[str, Any],
        body: bytes,
        deadline: float,
        *,
        key: Hashable = "",
        soft_after: float | None = None,
    ) -> dict[str, Any]:
        """The worker's JSON reply, or :class:`ExtractionFailed` once ``deadline`` seconds have passed
        since a worker took the page (:class:`ExtractionBusy` if none came free within ``max_wait``).
        ``key``: the caller's server, for fair sharing. ``soft_after``: seconds after the start at which
        the worker returns plain text instead (``soft_deadline_at`` in the request)."""
        try:
            await self.slots.acquire(key, self.max_wait)
        except TimeoutError:
            raise ExtractionBusy(
                f"no extraction worker came free within {self.max_wait:g} s (all {self.size} were busy "
                "with other pages)"
            ) from None
        if soft_after is not None:
            request = {**request, "soft_deadline_at": time.monotonic() + soft_after}
        job = _Job(json.dumps(request).encode(), body)
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, job)
        except BaseException:
            self.slots.release(key)
            raise
        future.add_done_callback(lambda _f: self.slots.release(key))
        try:
            async with asyncio.timeout(deadline):
                return await future  # cancelling it also drops a job still waiting for a thread
        except TimeoutError:
            self._abandon(job)
            raise ExtractionFailed(f"no answer within {deadline:g} s") from None
        except BaseException:
            self._abandon(job)  # cancelled: the worker must not go on burning a core
            raise

    def _abandon(self, job: _Job) -> None:
        with job.lock:
            job.abandoned = True
            if job.proc is not None and job.proc.poll() is None:
                job.proc.kill()

    def _run(self, job: _Job) -> dict[str, Any]:
        with self._lock:
            proc = self._idle.pop() if self._idle else None
        if proc is not None and proc.poll() is not None:
            _stop(proc)
            proc = None
        proc = proc or _spawn(self.memory_mb)
        with job.lock:
            if job.abandoned:
                self._give_back(proc)
                raise ExtractionFailed("abandoned before it started")
            job.proc = proc
        try:
            assert proc.stdin is not None and proc.stdout is not None
            write_frame(proc.stdin, job.header)
            write_frame(proc.stdin, job.body)
            proc.stdin.flush()
            reply = read_frame(proc.stdout, self.max_reply)
            if reply is None:
                raise EOFError("worker ended")
            answer = json.loads(reply)
        except (OSError, EOFError, ValueError) as e:
            _stop(proc)  # killed at the deadline, or broken: reaped here, replaced next time
            raise ExtractionFailed(f"the extraction worker stopped ({type(e).__name__})") from None
        with job.lock:
            job.proc = None
            if job.abandoned:
                _stop(proc)
                raise ExtractionFailed("abandoned")
        self._give_back(proc)
        return answer

    def _give_back(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._finalizer.alive:
                self._idle.append(proc)
                return
        _stop(proc)
