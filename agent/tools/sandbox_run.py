"""The parent side of :mod:`agent.tools.sandbox_runner`: one run's cgroup (else per-process limits whose
product stays within the memory limit), a root bot's uid map, the workspace quota watched during the
run, the wall clock, and everything the run started killed when it ends or is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.tools import sandbox_cgroup
from agent.tools.sandbox_procs import end_orphans, kill_group, tasks_of_my_uid
from agent.tools.sandbox_seccomp import memfd_filter, unfiltered
from agent.tools.workspace import workspace_usage

RUNNER = Path(__file__).with_name("sandbox_runner.py")
_RUNNER_SOURCE: list[str] = []
SandboxMode = Literal["auto", "namespaces", "rlimits", "off"]
QUOTA_POLL = 0.05
"""Seconds between quota checks during a run: a walk of at most quota_files entries takes ~2 ms."""
_SUPERVISOR_TASKS = 2  # the runner and PID 1 are in the run's cgroup too
_MIN_PROCESS_MB = 128  # without a cgroup, no process gets less address space than this
INODES_PER_MB = 256
"""Files and folders the private /tmp and /dev/shm may hold per MB of their size: an empty file costs no
bytes of a tmpfs but ~1 KB of kernel memory that no RLIMIT_AS counts (one process made 358,000 in
/tmp in 2.4 CPU seconds, 354 MB of slab, in a run limited to 256 MB)."""
_STATUS = frozenset({"setup_error", "exit_code", "signal", "cpu_seconds", "max_rss_kb", "notice"})


@dataclass(frozen=True, slots=True)
class PythonSettings:
    mode: SandboxMode = "auto"
    timeout: float = 30.0
    """Wall-clock seconds before every process of the run is killed."""
    cpu_seconds: int = 20
    memory_mb: int = 512
    """Memory of the whole run (all its processes and its /tmp) where a cgroup holds it."""
    file_size_mb: int = 10
    max_processes: int = 32
    """Processes and threads the run may have at once."""
    max_output_chars: int = 10_000
    tmpfs_mb: int = 64
    sandbox_uid: int = 65534
    """The outside uid the code runs as when the bot itself runs as root."""
    sandbox_gid: int = 65534
    python: str = sys.executable
    hide: tuple[str, ...] = field(default_factory=tuple)
    quota_bytes: int = 10 * 1024 * 1024
    quota_files: int = 1000


@dataclass(frozen=True, slots=True)
class RunLimits:
    """What one run gets: with a cgroup the run as a whole, else per process (product within memory)."""

    memory_bytes: int
    """RLIMIT_AS of each process."""
    processes: int
    """RLIMIT_NPROC (and pids.max less the supervisors)."""
    file_bytes: int
    cgroup: bool


def plan_limits(s: PythonSettings, *, cgroup: bool, quota_left: int) -> RunLimits:
    file_bytes = max(1, min(s.file_size_mb * 1024 * 1024, quota_left))
    memory = s.memory_mb * 1024 * 1024
    if cgroup:
        return RunLimits(memory, s.max_processes, file_bytes, True)
    processes = max(1, min(s.max_processes, s.memory_mb // _MIN_PROCESS_MB))
    return RunLimits(memory // processes, processes, file_bytes, False)


@dataclass(slots=True)
class SandboxRun:
    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    cpu_seconds: float | None = None
    max_rss_kb: int | None = None
    setup_error: str | None = None
    over_quota: str | None = None
    """Why the workspace passed its quota during the run (the run was stopped), or None."""
    oom_killed: bool = False
    limits: RunLimits | None = None
    notice: str | None = None
    """A protection this host could not give the run (it ran without it), in words for the operator."""


def exposed_paths(python: str) -> list[str]:
    """The interpreter's prefixes: bound read-only into the sandbox's new root."""
    paths = {os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    if os.path.realpath(python) == os.path.realpath(sys.executable) or python == sys.executable:
        paths |= {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    return sorted(p for p in paths if p and p != "/")


def _hidden(settings: PythonSettings, workspace: Path, inside: str) -> list[str]:
    """PYTHON_HIDE_PATHS inside what is exposed, never what must stay (the interpreter, the OS's folders,
    ``inside``: the workspace is mounted there by descriptor, its host path may go); an ancestor of those
    (the bot's directory under /usr with its venv in it) is hidden entry by entry around them."""
    exposed = exposed_paths(settings.python)
    keep = [*exposed, *SYSTEM_DIRS, inside]
    todo, out = [os.path.realpath(p) for p in settings.hide], []
    while todo:  # only what is in there (a bot run from /tmp hid the sandbox's own /tmp)
        p = todo.pop()
        if p in keep or not any(_nested(p, e) for e in (*SYSTEM_DIRS, *exposed)):
            continue
        if not any(_nested(k, p) for k in keep):
            out.append(p)
        else:
            with contextlib.suppress(OSError):
                todo += [os.path.join(p, name) for name in os.listdir(p)]
    return sorted(out)


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # the runner binds whole
INSIDE = ("/workspace", "/sandbox/workspace")
"""Where the code sees its workspace (its HOME and current directory) in namespace mode: a neutral path,
so nothing in the sandbox (``HOME``, ``os.getcwd()``, /proc/self/mountinfo's mount points) names the
host's layout (the data directory's path). The second is for an interpreter installed under /workspace."""


def inside_path(settings: PythonSettings, workspace: Path, namespaced: bool) -> str:
    """The workspace's path as the code sees it: :data:`INSIDE` unless the interpreter lives there (it is
    bound first, the workspace would cover it); without namespaces nothing can move it, so the host's."""
    if not namespaced:
        return str(workspace)
    exposed = exposed_paths(settings.python)
    clear = (p for p in INSIDE if not any(_nested(p, e) or _nested(e, p) for e in exposed))
    return next(clear, str(workspace))


def _nested(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def rlimits(s: PythonSettings, limits: RunLimits, counted: int) -> dict[str, tuple[int, int]]:
    """The supervisor's limits before it forks the code; ``counted``: tasks RLIMIT_NPROC counts, not its."""
    return {
        "RLIMIT_CPU": (s.cpu_seconds, s.cpu_seconds + 1),
        "RLIMIT_AS": (limits.memory_bytes, limits.memory_bytes),
        "RLIMIT_FSIZE": (limits.file_bytes, limits.file_bytes),
        "RLIMIT_NOFILE": (256, 256),
        "RLIMIT_CORE": (0, 0),
        "RLIMIT_NPROC": (limits.processes + counted, limits.processes + counted),
    }


def sysctls(tmpfs_mb: int) -> dict[str, str]:
    """Limits PID 1 sets in the sandbox's own user and IPC namespaces (the host's stay as they are), on
    what no per-process limit counts and only a cgroup, where the host gives one, would."""
    return {
        # In a user namespace of its own the code was root again and mounted a tmpfs of any size (400 MB
        # filled in a run limited to 256 MB).
        "/proc/sys/user/max_user_namespaces": "0",
        # System V shared memory outlives its attachments: 8 segments of 50 MB held 400 MB at 256 MB. Now
        # as much as /dev/shm holds.
        "/proc/sys/kernel/shmmax": str(tmpfs_mb << 20),
        "/proc/sys/kernel/shmall": str((tmpfs_mb << 20) // os.sysconf("SC_PAGE_SIZE")),
        # Message queues are kernel memory, 16 KB each at most: 20,000 held 320 MB (32,000 allowed).
        "/proc/sys/kernel/msgmni": "64",
    }


def _env(home: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": "/tmp",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # glibc reserves a 64 MB malloc arena per thread out of RLIMIT_AS: 15 of 32 threads could start.
        "MALLOC_ARENA_MAX": "2",
    }


async def _read_capped(stream: asyncio.StreamReader | None, cap: int) -> tuple[bytes, int]:
    """The first ``cap`` bytes and the total; the rest is drained so the writer never blocks."""
    if stream is None:
        return b"", 0
    kept = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    return bytes(kept), total


async def _watch_quota(ws: Path, s: PythonSettings, pid: int, run: SandboxRun) -> None:
    while True:
        await asyncio.sleep(QUOTA_POLL)
        usage = await asyncio.to_thread(workspace_usage, ws, s.quota_files + 1)
        if why := usage.over(s.quota_bytes, s.quota_files):
            run.over_quota = why
            await asyncio.to_thread(end_orphans, pid)  # a detached writer too (or PID 1 and its namespace)
            kill_group(pid)
            return


async def run_sandboxed(
    code: str, workspace: Path, settings: PythonSettings, *, namespaced: bool, quota_left: int | None = None
) -> SandboxRun:
    """Run ``code`` once; never raises for anything the code does (that is all in the result)."""
    parent_maps = namespaced and os.geteuid() == 0
    group = await asyncio.to_thread(
        sandbox_cgroup.create, settings.memory_mb * 1024 * 1024, settings.max_processes + _SUPERVISOR_TASKS
    )
    limits = plan_limits(
        settings,
        cgroup=group is not None,
        quota_left=settings.quota_bytes if quota_left is None else quota_left,
    )
    work = await asyncio.to_thread(_overlay_work, workspace) if namespaced else None
    try:
        run = await _run(code, workspace, settings, namespaced, parent_maps, limits, group, work)
    finally:
        if work is not None:
            await asyncio.to_thread(_remove_tree, work)
        if group is not None:
            oom = await asyncio.to_thread(group.oom_killed)
            await asyncio.to_thread(group.remove)
    if group is not None:
        run.oom_killed = oom
        if oom and run.exit_code is None and run.signal is None:  # its supervisor was the one killed
            run.signal = signal.SIGKILL
    run.limits = limits
    run.notice = "; ".join(n for n in (run.notice, unfiltered()) if n) or None
    return run


def _overlay_work(workspace: Path) -> str | None:
    """An empty directory beside the workspace (overlayfs needs its work directory on the same
    filesystem as the writable layer, outside it); None if none can be made there (the run says so)."""
    prefix = f".{workspace.name}.overlay-"
    for stale in workspace.parent.glob(glob.escape(prefix) + "*"):  # left by a bot killed mid-run
        _remove_tree(str(stale))  # runs in one workspace take turns: none of these is in use
    try:
        return tempfile.mkdtemp(prefix=prefix, dir=workspace.parent)
    except OSError:
        return None


def _remove_tree(path: str) -> None:
    """Remove an overlay work directory: overlayfs leaves a mode-000 ``work`` inside it."""
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, d), 0o700, follow_symlinks=False)
    shutil.rmtree(path, ignore_errors=True)


def _runner_source() -> str:
    if not _RUNNER_SOURCE:
        _RUNNER_SOURCE.append(RUNNER.read_text(encoding="utf-8"))
    return _RUNNER_SOURCE[0]


async def _run(
    code: str,
    workspace: Path,
    settings: PythonSettings,
    namespaced: bool,
    parent_maps: bool,
    limits: RunLimits,
    group: sandbox_cgroup.RunCgroup | None,
    overlay_work: str | None,
) -> SandboxRun:
    loop = asyncio.get_running_loop()
    status_r, status_w = os.pipe()
    inside = inside_path(settings, workspace, namespaced)
    # RLIMIT_NPROC counts PID 1 (or the runner) and, without a user namespace, every task of our uid.
    counted = 1 + (0 if namespaced else await asyncio.to_thread(tasks_of_my_uid))
    # On the runner's stdin, never its command line: the code can read /proc/1/cmdline.
    cfg = {
        "overlay_work": overlay_work,
        "namespaced": namespaced,
        "parent_maps": parent_maps,
        "workspace": str(workspace),
        "inside": inside,
        "hide": _hidden(settings, workspace, inside),
        "expose": exposed_paths(settings.python),
        "tmpfs_mb": settings.tmpfs_mb,
        "tmpfs_inodes": settings.tmpfs_mb * INODES_PER_MB,
        "sysctls": sysctls(settings.tmpfs_mb),
        "seccomp": memfd_filter(),
        "rlimits": rlimits(settings, limits, counted),
        "python": settings.python,
        "cgroup_procs": group.procs_files if group else [],
    }
    status = asyncio.StreamReader()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-B",
            "-c",
            _runner_source(),  # not its path: that names where the bot is installed
            str(status_w),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(workspace),
            env=_env(inside),
            pass_fds=(status_w,),
            start_new_session=True,
        )
    finally:
        os.close(status_w)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(status), os.fdopen(status_r, "rb", 0)
    )
    cap = settings.max_output_chars * 2
    out_task = asyncio.create_task(_read_capped(proc.stdout, cap))
    err_task = asyncio.create_task(_read_capped(proc.stderr, cap))
    run = SandboxRun()
    watch = asyncio.create_task(_watch_quota(workspace, settings, proc.pid, run))
    lines: list[dict[str, object]] = []
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(cfg).encode() + b"\n")  # the runner reads it first; the code follows
    try:
        async with asyncio.timeout(settings.timeout):
            if parent_maps:
                first = await status.readline()
                msg = _parse_status(first)
                if msg.get("need_map"):
                    _write_maps(proc.pid, settings)
                else:
                    lines.append(msg)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(code.encode("utf-8"))
                await proc.stdin.drain()
                proc.stdin.close()
            await proc.wait()
    except TimeoutError:
        run.timed_out = True
    except BaseException:  # cancelled (the Stop button): kill everything, then let it propagate
        out_task.cancel()
        err_task.cancel()
        transport.close()
        raise
    finally:
        watch.cancel()
        if not namespaced and proc.returncode is None:
            await asyncio.to_thread(end_orphans, proc.pid)
        kill_group(proc.pid)  # also whatever a run without a PID namespace left behind
        if proc.returncode is None:
            await proc.wait()
    if not run.timed_out:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                lines += [_parse_status(x) for x in (await status.read()).splitlines()]
    transport.close()
    for msg in lines:  # the runner names SandboxRun's fields (its status fd is closed to the code)
        for key in _STATUS.intersection(msg):
            more = key == "notice" and run.notice  # notices add up: each a protection this run went without
            setattr(run, key, f"{run.notice}; {msg[key]}" if more else msg[key])
    for task, attr in ((out_task, "stdout"), (err_task, "stderr")):
        try:
            async with asyncio.timeout(2):
                data, total = await task
        except TimeoutError:
            task.cancel()
            data, total = b"", 0
        setattr(run, attr, data.decode("utf-8", errors="replace"))
        setattr(run, f"{attr}_bytes", total)
    return run


def _parse_status(line: bytes) -> dict[str, object]:
    try:
        msg = json.loads(line) if line.strip() else {}
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}


def _write_maps(pid: int, settings: PythonSettings) -> None:
    """Map uid 1000 inside to the unprivileged sandbox uid (and root to root, for the setup only)."""
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"0 0 1\n1000 {settings.sandbox_uid} 1")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"0 0 1\n1000 {settings.sandbox_gid} 1")
