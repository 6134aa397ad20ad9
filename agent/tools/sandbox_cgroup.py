"""One control group per run_python run, so memory and process limits hold for the run as a whole.

RLIMIT_AS and RLIMIT_NPROC are per process: 8 processes of 420 MB each passed a 512 MB limit. A
cgroup counts every process of the run together (the supervisor, the code, its children, its threads
and what it keeps in the private /tmp, which is tmpfs memory). Two layouts are used, whichever the
host offers and the bot may write:

- cgroup v2 (``/sys/fs/cgroup/cgroup.controllers``): a child of the bot's own cgroup, which must have
  ``memory`` and ``pids`` in its ``cgroup.subtree_control`` (a delegated cgroup; see README);
- cgroup v1: children of the bot's cgroups in the ``memory`` and ``pids`` hierarchies.

The bot creates the group, the run's supervisor joins it as its first act (so everything it starts is
inside), and the bot removes it afterwards, killing anything still listed. Without either layout the
caller falls back to per-process limits chosen so their product stays within the memory limit.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "agentbot-run-"


@dataclass(frozen=True, slots=True)
class RunCgroup:
    version: int
    dirs: tuple[Path, ...]

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for passing the memory limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.dirs[0] / name).read_text()
        except OSError:
            return False
        fields = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
        return int(fields.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        """Kill whatever is left of the run and delete the group (blocking, about a second at most)."""
        for _ in range(100):
            pids = set()
            for f in self.procs_files:
                with contextlib.suppress(OSError, ValueError):
                    pids |= {int(p) for p in Path(f).read_text().split()}
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if not pids and all(_rmdir(d) for d in self.dirs):
                return
            time.sleep(0.01)


def _rmdir(d: Path) -> bool:
    try:
        d.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _own_paths() -> dict[str, str]:
    """The bot's cgroup per hierarchy: ``{"": path}`` for v2, ``{"memory": path, "pids": path}`` for v1."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _parents() -> tuple[int, dict[str, Path]] | None:
    own = _own_paths()
    if (ROOT / "cgroup.controllers").exists() and "" in own:
        base = ROOT / own[""].lstrip("/")
        with contextlib.suppress(OSError):
            if {"memory", "pids"} <= set((base / "cgroup.subtree_control").read_text().split()):
                return 2, {"": base}
        return None
    v1 = (ROOT / "memory" / "memory.limit_in_bytes").exists() and (ROOT / "pids").is_dir()
    if v1 and "memory" in own and "pids" in own:
        return 1, {c: ROOT / c / own[c].lstrip("/") for c in ("memory", "pids")}
    return None


def create(memory_bytes: int, max_tasks: int) -> RunCgroup | None:
    """A fresh group with these limits, or None when this host or user cannot have one."""
    found = _parents()
    if found is None:
        return None
    version, parents = found
    name = PREFIX + uuid.uuid4().hex[:12]
    made: list[Path] = []
    try:
        for controller, parent in parents.items():
            d = parent / name
            d.mkdir(mode=0o755)
            made.append(d)
            if version == 2:
                (d / "memory.max").write_text(str(memory_bytes))
                if (d / "memory.swap.max").exists():
                    (d / "memory.swap.max").write_text("0")
                (d / "pids.max").write_text(str(max_tasks))
            elif controller == "memory":
                (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
                if (d / "memory.memsw.limit_in_bytes").exists():
                    (d / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            else:
                (d / "pids.max").write_text(str(max_tasks))
    except OSError:
        for d in made:
            _rmdir(d)
        return None
    return RunCgroup(version, tuple(made))


@functools.cache
def available() -> str | None:
    """What per-run groups this host gives (for the doctor and the README's table), or None."""
    group = create(64 * 1024 * 1024, 8)
    if group is None:
        return None
    group.remove()
    return f"cgroup v{group.version} (memory and pids limits per run)"
