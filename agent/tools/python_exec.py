"""run_python: the model's code in a separate, limited process inside the session workspace.

Isolation (namespace mode, the default where the kernel allows unprivileged user namespaces; the setup
itself is in :mod:`agent.tools.sandbox_runner`):

- **Network**: none. A new network namespace holds only a loopback interface that is down, so nothing
  is reachable, not even the host's 127.0.0.1 (``PYTHON_NETWORK=1`` skips this namespace).
- **Filesystem**: every mount is read-only; the workspace (the current directory) is the only
  writable place that outlives the run; /tmp, /var/tmp and /dev/shm are private tmpfs thrown away
  afterwards. Hidden behind empty directories: the workspace's parent (other sessions), /root, /home,
  the bot's data directory and ``.env``, plus ``PYTHON_HIDE_PATHS``; the interpreter is bound back
  read-only. Everything else stays *readable* with the sandbox user's rights.
- **User**: uid 1000 inside, mapped to the bot's uid — or to an unprivileged uid (65534) when the bot
  runs as root — with no capabilities, no_new_privs and locked securebits, so it cannot remount,
  unhide or gain privileges through setuid programs.
- **Processes**: a new PID namespace (the code sees only its own processes, not the bot's
  ``/proc/<pid>/environ``); when the run ends everything it started is killed with it.
- **Limits**: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC (per namespace, so one run's fork
  bomb cannot starve another), RLIMIT_NOFILE, no core dumps, a wall-clock timeout that kills the whole
  process group, output capped.
- **Environment**: only PATH, LANG, HOME (the workspace) and thread-count variables; ``python -I``
  ignores PYTHON* variables and the user site directory.

Not isolated: reading world-readable files outside the hidden paths; CPU and memory *pressure* on the
host within the limits; Unix sockets reachable through the filesystem (DAC still applies); the kernel
itself (a kernel bug is a sandbox escape). Without user namespaces (mode ``rlimits``) only the limits,
the stripped environment and the wall-clock timeout apply: the code can use the network and read and
write whatever the bot's user can. That is logged at start-up and said in the tool's description.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from agent.tools.files import human_size, regular_files, workspace_root, workspace_usage
from agent.tools.registry import Tool, ToolContext, ToolRefused, tool

log = logging.getLogger(__name__)

RUNNER = str(Path(__file__).with_name("sandbox_runner.py"))
SandboxMode = Literal["auto", "namespaces", "rlimits", "off"]
_MAX_CODE_BYTES = 120_000  # one argv string may hold at most 128 KiB


@dataclass(frozen=True, slots=True)
class PythonSettings:
    mode: SandboxMode = "auto"
    timeout: float = 30.0
    """Wall-clock seconds before every process of the run is killed."""
    cpu_seconds: int = 20
    memory_mb: int = 512
    file_size_mb: int = 10
    max_processes: int = 32
    """Processes and threads the code may have at once (RLIMIT_NPROC)."""
    max_output_chars: int = 10_000
    tmpfs_mb: int = 64
    network: bool = False
    sandbox_uid: int = 65534
    """The outside uid the code runs as when the bot itself runs as root."""
    sandbox_gid: int = 65534
    python: str = sys.executable
    hide: tuple[str, ...] = field(default_factory=tuple)
    quota_bytes: int = 10 * 1024 * 1024


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


@dataclass(frozen=True, slots=True)
class SandboxSupport:
    namespaces: bool
    detail: str


def _exposed(python: str) -> list[str]:
    """Directories the interpreter needs, bound back read-only if a hidden path covers them."""
    paths = {os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    if os.path.realpath(python) == os.path.realpath(sys.executable) or python == sys.executable:
        paths |= {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    return sorted(p for p in paths if p and p != "/")


def _hidden(settings: PythonSettings, workspace: Path, *, as_root: bool) -> list[str]:
    paths = [os.path.realpath(p) for p in settings.hide]
    exposed = _exposed(settings.python)
    parent = os.path.realpath(workspace.parent)
    if parent != "/" and not any(e == parent or e.startswith(parent + "/") for e in exposed):
        paths.append(parent)  # other sessions' workspaces
    if as_root:
        # The sandbox uid must reach the interpreter and the workspace: cover the first ancestor it may
        # not traverse (e.g. /root, 0700) with an empty tmpfs; those paths are then bound back inside it.
        for target in [*exposed, os.path.realpath(workspace)]:
            for ancestor in reversed(Path(target).parents[:-1]) if target != "/" else ():
                with contextlib.suppress(OSError):
                    if not ancestor.stat().st_mode & stat.S_IXOTH:
                        paths.append(str(ancestor))
                        break
    return paths


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for base, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(base, name), uid, gid)


def _env(workspace: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(workspace),
        "TMPDIR": "/tmp",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


async def _read_capped(stream: asyncio.StreamReader | None, cap: int) -> tuple[bytes, int]:
    """Keep the first ``cap`` bytes, drain and count the rest so the writer never blocks."""
    if stream is None:
        return b"", 0
    kept = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    return bytes(kept), total


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_sandboxed(
    code: str, workspace: Path, settings: PythonSettings, *, namespaced: bool
) -> SandboxRun:
    """Run ``code`` once; never raises for anything the code does (that is all in the result)."""
    root = os.geteuid() == 0
    parent_maps = namespaced and root
    if parent_maps:
        await asyncio.to_thread(_chown_tree, workspace, settings.sandbox_uid, settings.sandbox_gid)
    loop = asyncio.get_running_loop()
    status_r, status_w = os.pipe()
    cfg = {
        "status_fd": status_w,
        "namespaced": namespaced,
        "parent_maps": parent_maps,
        "network": settings.network,
        "workspace": str(workspace),
        "hide": _hidden(settings, workspace, as_root=parent_maps),
        "expose": _exposed(settings.python),
        "tmpfs_mb": settings.tmpfs_mb,
        "cpu_seconds": settings.cpu_seconds,
        "memory_bytes": settings.memory_mb * 1024 * 1024,
        "file_bytes": max(1, min(settings.file_size_mb * 1024 * 1024, settings.quota_bytes)),
        "max_processes": settings.max_processes,
        "python": settings.python,
    }
    status = asyncio.StreamReader()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-B",
            RUNNER,
            json.dumps(cfg),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(workspace),
            env=_env(workspace),
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
    lines: list[dict[str, object]] = []
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
                assert proc.stdin is not None
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
        _kill_group(proc.pid)  # also whatever a run without a PID namespace left behind
        if proc.returncode is None:
            await proc.wait()
    if not run.timed_out:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                lines += [_parse_status(x) for x in (await status.read()).splitlines()]
    transport.close()
    for msg in lines:
        if "setup_error" in msg:
            run.setup_error = str(msg["setup_error"])
        if "exit" in msg:
            run.exit_code = int(msg["exit"])  # type: ignore[call-overload]
        if "signal" in msg:
            run.signal = int(msg["signal"])  # type: ignore[call-overload]
        if "cpu_seconds" in msg:
            run.cpu_seconds = float(msg["cpu_seconds"])  # type: ignore[arg-type]
            run.max_rss_kb = int(msg.get("max_rss_kb", 0))  # type: ignore[call-overload]
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


def _probe(settings: PythonSettings) -> SandboxSupport:
    if not Path("/proc/self/ns/user").exists():
        return SandboxSupport(False, "this kernel has no user namespaces")
    tmp = Path(tempfile.mkdtemp(prefix="agentbot-probe-"))
    try:
        ws = tmp / "ws"
        ws.mkdir()
        probe = replace(settings, timeout=20.0, hide=())
        run = asyncio.run(run_sandboxed("print('ok')", ws, probe, namespaced=True))
    except OSError as e:
        return SandboxSupport(False, f"could not start the probe: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if run.setup_error:
        return SandboxSupport(False, run.setup_error)
    if run.exit_code != 0 or run.stdout.strip() != "ok":
        return SandboxSupport(False, f"the probe run failed: {(run.stderr or run.stdout).strip()[-300:]}")
    return SandboxSupport(True, "user, mount, PID and network namespaces")


@functools.cache
def probe_sandbox(settings: PythonSettings) -> SandboxSupport:
    """Whether namespace isolation works here (runs a tiny sandbox once; cached per settings).

    Synchronous so the tool description can say the truth at start-up; it runs in a worker thread
    with its own event loop and takes about a quarter of a second.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_probe, settings).result()


def _notes(run: SandboxRun, s: PythonSettings) -> list[str]:
    notes = []
    err = run.stderr
    if run.timed_out:
        notes.append(
            f"stopped: the run passed the {s.timeout:g} s wall-clock limit; all its processes were killed"
        )
    elif run.signal in (signal.SIGXCPU, signal.SIGKILL) and (run.cpu_seconds or 0) >= s.cpu_seconds - 0.5:
        notes.append(f"stopped: the CPU time limit of {s.cpu_seconds} s was reached")
    elif run.signal:
        notes.append(f"the process was killed by signal {signal.Signals(run.signal).name}")
    if "MemoryError" in err or "Cannot allocate memory" in err:
        notes.append(f"the memory limit of {s.memory_mb} MB was reached")
    if "Resource temporarily unavailable" in err or "can't start new thread" in err:
        notes.append(
            f"the process limit was reached: the code may have at most {s.max_processes} processes/threads"
        )
    if "File too large" in err:
        notes.append(f"the file size limit of {min(s.file_size_mb, s.quota_bytes >> 20)} MB was reached")
    return notes


def render_run(run: SandboxRun, s: PythonSettings, changed: list[str], usage: int) -> str:
    if run.timed_out:
        head = "did not finish"
    elif run.signal:
        head = f"killed ({signal.Signals(run.signal).name})"
    else:
        head = f"exit code {run.exit_code}"
    if run.cpu_seconds is not None:
        head += f" · CPU {run.cpu_seconds:.2f} s · peak memory {(run.max_rss_kb or 0) / 1024:.0f} MB"
    parts = [head]
    for name in ("stdout", "stderr"):
        text: str = getattr(run, name)
        total: int = getattr(run, f"{name}_bytes")
        if not text:
            continue
        if len(text) > s.max_output_chars or total > len(text.encode("utf-8", errors="replace")):
            text = text[: s.max_output_chars] + f"\n[{name} truncated: {total} bytes in all]"
        parts.append(f"{name}:\n{text.rstrip()}")
    if not run.stdout and not run.stderr:
        parts.append("(no output: print what you want to see)")
    if changed:
        parts.append("files written: " + ", ".join(changed[:20]) + (" …" if len(changed) > 20 else ""))
    parts += [f"note: {n}" for n in _notes(run, s)]
    if usage > s.quota_bytes:
        parts.append(
            f"note: the workspace now holds {human_size(usage)}, over its {human_size(s.quota_bytes)} quota; "
            "delete files before writing more"
        )
    return "\n".join(parts)


def _snapshot(ws: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p, size in regular_files(ws):
        with contextlib.suppress(OSError):
            out[str(p.relative_to(ws))] = (size, p.stat().st_mtime_ns)
    return out


def describe(settings: PythonSettings, support: SandboxSupport) -> str:
    limits = (
        f"Limits: {settings.cpu_seconds} s CPU, {settings.timeout:g} s wall-clock, {settings.memory_mb} MB "
        f"memory, {settings.max_processes} processes, {settings.file_size_mb} MB per file; output is cut at "
        f"{settings.max_output_chars} characters."
    )
    base = (
        "Run Python 3 code (standard library plus the packages installed for the bot) and return its "
        "stdout, stderr and exit code. The current directory is this session's workspace: files written "
        "there persist, can be read with read_file and attached to the conversation. Print what you need to see. "
    )
    if support.namespaces:
        net = "Network access is allowed. " if settings.network else "There is no network access. "
        return base + net + "The rest of the filesystem is read-only. " + limits
    return (
        base + limits + " WARNING: this host cannot isolate the code (" + support.detail + "): it runs with "
        "the bot's own rights and network; use it only for computation."
    )


def python_tools(settings: PythonSettings) -> list[Tool]:
    if settings.mode == "off":
        return []
    if settings.mode == "rlimits":
        support = SandboxSupport(False, "PYTHON_SANDBOX=rlimits")
    else:
        support = probe_sandbox(settings)
        if not support.namespaces:
            if settings.mode == "namespaces":
                raise RuntimeError(
                    f"PYTHON_SANDBOX=namespaces but namespaces do not work here: {support.detail}"
                )
            log.warning(
                "run_python: no namespace isolation (%s); code runs with only resource limits", support.detail
            )
    if support.namespaces:
        log.info("run_python: sandbox uses %s", support.detail)
    namespaced = support.namespaces

    @tool(
        description=describe(settings, support),
        timeout=settings.timeout + 15,
        max_attempts=1,
        max_output=settings.max_output_chars * 2 + 2000,
    )
    async def run_python(code: str, ctx: ToolContext) -> str:
        """Run Python code.

        Args:
            code: A complete Python program. Use print() for anything you want back.
        """
        if len(code.encode("utf-8")) > _MAX_CODE_BYTES:
            raise ToolRefused(
                f"the code is longer than {_MAX_CODE_BYTES // 1000} KB; write it to a file with write_file and "
                "run a short program that exec()s it"
            )
        ws = await asyncio.to_thread(workspace_root, ctx)
        before = await asyncio.to_thread(_snapshot, ws)
        run = await run_sandboxed(code, ws, settings, namespaced=namespaced)
        if run.setup_error:
            raise ToolRefused(f"the sandbox could not start: {run.setup_error}")
        after = await asyncio.to_thread(_snapshot, ws)
        changed = [f"{p} ({human_size(v[0])})" for p, v in sorted(after.items()) if before.get(p) != v]
        usage = await asyncio.to_thread(workspace_usage, ws)
        return render_run(run, settings, changed, usage)

    return [run_python]
