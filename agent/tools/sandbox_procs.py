"""The run's processes from the bot's side (:mod:`agent.tools.sandbox_run`): the tasks of our uid that
RLIMIT_NPROC counts without a user namespace, and ending everything a run started (its process group,
and without a PID namespace what came back to its runner, a child subreaper)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def tasks_of_my_uid() -> int:
    """Processes and threads of our uid: what RLIMIT_NPROC counts when there is no user namespace."""
    uid, count = os.getuid(), 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields.get("Threads", "1"))
        except (OSError, KeyError, ValueError):
            continue
    return count


def end_orphans(runner: int) -> None:
    """Without a PID namespace: kill the runner's children until none is alive, before the runner itself.
    It is a subreaper, so a setsid() daemon's double fork comes back to it; killed with the runner's
    process group, such a daemon slept on after the run's wall clock (and held its stdout open)."""
    for _ in range(1000):
        try:
            kids = Path(f"/proc/{runner}/task/{runner}/children").read_text().split()
        except OSError:
            return
        alive = [int(k) for k in kids if _alive(k)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.001)


def _alive(pid: str) -> bool:
    try:  # the state follows the name, which may hold ")" itself
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
