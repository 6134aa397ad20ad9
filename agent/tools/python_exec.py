"""run_python: the model's code in a separate, limited process inside the session workspace.

Modes (``PYTHON_SANDBOX``):

- ``auto`` (default): the namespace sandbox when a probe run shows it works here; otherwise run_python
  is *off* and the model is told it is unavailable. It never degrades to weaker isolation by itself.
- ``namespaces``: the namespace sandbox or a start-up error.
- ``rlimits``: only when an operator sets it: resource limits and a stripped environment, no
  isolation at all (the code reads and writes what the bot's user can and uses its network).
- ``off``: no run_python.

The namespace sandbox (:mod:`agent.tools.sandbox_runner` builds it, :mod:`agent.tools.sandbox_run`
starts and bounds it) gives the code an allow-listed root in which only the workspace is writable and
outlives the run, no network at all (not even the host's 127.0.0.1; there is no setting to give it
one: the agent reads the web with fetch_url), no capabilities, and limits on the run as a whole. A run
does not start over the workspace quota; one that passes it is stopped within ``QUOTA_POLL`` seconds.

Runs in one workspace take turns (a per-workspace lock): the workspace is handed to the sandbox user
(by descriptor, :func:`agent.tools.workspace.give_workspace_to`) only while no run is active in it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import shutil
import signal
import tempfile
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

from agent.setting_parsers import ConfigError
from agent.tools import sandbox_cgroup
from agent.tools.files import human_size, workspace_root
from agent.tools.registry import Tool, ToolContext, ToolOutput, ToolRefused, tool
from agent.tools.safe_names import shown_name
from agent.tools.sandbox_run import (
    INODES_PER_MB,
    PythonSettings,
    SandboxMode,
    SandboxRun,
    plan_limits,
    run_sandboxed,
)
from agent.tools.workspace import Held, defuse, give_workspace_to, regular_files, workspace_usage

__all__ = ["PythonSettings", "SandboxMode", "SandboxSupport", "plan_limits", "probe_sandbox", "python_tools"]

log = logging.getLogger(__name__)

_MAX_CODE_BYTES = 120_000  # one argv string may hold at most 128 KiB


@dataclass(frozen=True, slots=True)
class SandboxSupport:
    namespaces: bool
    detail: str
    notice: str | None = None
    """A protection the probe run went without here (logged as a warning at start-up; doctor says it)."""


def _probe(settings: PythonSettings) -> SandboxSupport:
    if not Path("/proc/self/ns/user").exists():
        return SandboxSupport(False, "this kernel has no user namespaces")
    tmp = Path(tempfile.mkdtemp(prefix="agentbot-probe-"))
    try:
        ws = tmp / "ws"
        ws.mkdir()
        if os.geteuid() == 0:
            give_workspace_to(ws, settings.sandbox_uid, settings.sandbox_gid)
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
    limits = sandbox_cgroup.available() or "no cgroup for runs: per-process limits"
    shown = f"; WARNING: {run.notice}" if run.notice else ""
    return SandboxSupport(
        True,
        f"user, mount, PID, network, IPC, UTS and cgroup namespaces; allow-list root; {limits}{shown}",
        run.notice,
    )


_told: set[str] = set()


def _tell_operator(notice: str | None) -> None:
    """A protection a run went without is logged (once per reason), never dropped silently."""
    if notice and notice not in _told:
        _told.add(notice)
        log.warning("run_python: %s", notice)


def probe_sandbox(settings: PythonSettings) -> SandboxSupport:
    """Whether namespace isolation works here (runs a tiny sandbox once; cached per settings).

    Synchronous so the tool description can say the truth at start-up; it runs in a worker thread
    with its own event loop and takes about a quarter of a second.
    """
    # Cached less ``hide``, which the probe does not use: it holds DATA_DIR, so each DATA_DIR probed again,
    # ~0.2 s of each in-process bot start in the tests (one DATA_DIR per test).
    return _probe_once(replace(settings, hide=()))


@functools.cache
def _probe_once(settings: PythonSettings) -> SandboxSupport:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_probe, settings).result()


def _notes(run: SandboxRun, s: PythonSettings) -> list[str]:
    notes = []
    err = run.stderr
    lim = run.limits or plan_limits(s, cgroup=True, quota_left=s.quota_bytes)
    if run.over_quota:
        notes.append(
            f"stopped: the workspace passed its quota ({run.over_quota}); all its processes were killed"
        )
    elif run.timed_out:
        notes.append(
            f"stopped: the run passed the {s.timeout:g} s wall-clock limit; all its processes were killed"
        )
    elif run.signal in (signal.SIGXCPU, signal.SIGKILL) and (run.cpu_seconds or 0) >= s.cpu_seconds - 0.5:
        notes.append(f"stopped: the CPU time limit of {s.cpu_seconds} s was reached")
    elif run.oom_killed:
        notes.append(
            f"stopped: the run's memory limit of {s.memory_mb} MB (all its processes together) was reached"
        )
    elif run.signal:
        notes.append(f"the process was killed by signal {signal.Signals(run.signal).name}")
    if "MemoryError" in err or "Cannot allocate memory" in err:
        per = "" if lim.cgroup else f" ({lim.memory_bytes >> 20} MB per process)"
        notes.append(f"the memory limit of {s.memory_mb} MB{per} was reached")
    if "Resource temporarily unavailable" in err or "can't start new thread" in err:
        notes.append(
            f"the process limit was reached: the code may have at most {lim.processes} processes/threads"
        )
    if "No space left on device" in err:
        notes.append(
            f"the private /tmp and /dev/shm hold at most {s.tmpfs_mb} MB and {s.tmpfs_mb * INODES_PER_MB} "
            "files and folders each; the workspace its quota"
        )
    if "File too large" in err:
        notes.append(f"the file size limit of {human_size(lim.file_bytes)} was reached")
    return notes


def render_run(run: SandboxRun, s: PythonSettings, changed: list[str], over: str | None) -> str:
    if run.timed_out:
        head = "did not finish"
    elif run.signal:
        head = f"killed ({signal.Signals(run.signal).name})"
    elif run.over_quota:
        head = "stopped"
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
    if over:
        parts.append(
            f"note: the workspace is over its quota ({over}); run_python is refused until you delete files "
            "(delete_file removes a file, or a folder with everything in it)"
        )
    return "\n".join(parts)


def _snapshot(ws: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(ws)): (st.st_size, st.st_mtime_ns) for p, st in regular_files(ws)}


def describe(settings: PythonSettings, support: SandboxSupport) -> str:
    # Without a cgroup the limits are per process: "512 MB memory, 32 processes" was 4 processes of 128 MB.
    lim = plan_limits(
        settings, cgroup=sandbox_cgroup.available() is not None, quota_left=settings.quota_bytes
    )
    memory = (
        f"{settings.memory_mb} MB memory for all its processes, {lim.processes} processes/threads"
        if lim.cgroup
        else f"{settings.memory_mb} MB memory in at most {lim.processes} processes/threads of "
        f"{lim.memory_bytes >> 20} MB each"
    )
    limits = (
        f"Limits: {settings.cpu_seconds} s CPU, {settings.timeout:g} s wall-clock, {memory}, "
        f"{settings.file_size_mb} MB per file, and the workspace "
        f"quota ({human_size(settings.quota_bytes)}, {settings.quota_files} files); output is cut at "
        f"{settings.max_output_chars} characters."
    )
    base = (
        "Run Python 3 code (standard library plus the packages installed for the bot) and return its "
        "stdout, stderr and exit code. The current directory is this session's workspace: files written "
        "there persist, can be read with read_file and attached to the conversation. Print what you need to see. "
    )
    if support.namespaces:
        return (
            base + "There is no network access. Nothing outside the workspace and /tmp is writable. " + limits
        )
    return (
        base + limits + _UNISOLATED + ": it runs with the bot's own rights and network; use it only for "
        "computation."
    )


_UNISOLATED = " WARNING: this code is not isolated (PYTHON_SANDBOX=rlimits)"
_UNAVAILABLE = "run_python is unavailable on this host"


def config_note(tool: Tool | None) -> str | None:
    """What /config show says of run_python beside on/off, where it is not the isolated tool it looks
    like (it was listed under "On" like any tool): refused on this host, or not isolated at all."""
    if tool is None:
        return None
    if tool.description.startswith(_UNAVAILABLE):
        return "is unavailable on this host (its sandbox cannot isolate code here): every call is refused"
    if _UNISOLATED in tool.description:
        return (
            "runs code NOT isolated on this host (PYTHON_SANDBOX=rlimits): with the bot's own rights, files "
            "and network"
        )
    return None


def _unavailable(detail: str) -> Tool:
    """What the model sees when isolation does not work here: the tool exists only to say so."""
    why = f"{_UNAVAILABLE}: its sandbox cannot isolate code here ({detail})."

    @tool(name="run_python", description=why + " Do not call it; compute by reasoning or other tools.")
    def run_python(code: str) -> str:
        raise ToolRefused(why)

    return run_python


def _escapable() -> str:
    """What rlimits' limits are worth where the code's user owns the cgroup hierarchy (root, or the user
    a cgroup was delegated to): measured, a root bot's code wrote its pid into the root cgroup's
    cgroup.procs and forked 40 processes past a limit of 16."""
    if os.geteuid() != 0 and sandbox_cgroup.available() is None:
        return ""
    return (
        "; no limit holds against code that tries: it runs as the user that owns its cgroup and can move "
        "itself out of it (as root, raise its limits and kill the bot too); the limits only stop accidents"
    )


def _rlimits_cannot_limit() -> str | None:
    """Why PYTHON_SANDBOX=rlimits cannot bound the code's processes here, or None: root is exempt from
    RLIMIT_NPROC, so a root bot without a cgroup for runs let the code fork 40 processes past a limit of 2
    (a fork bomb had no bound, nor the memory of all of them together)."""
    if os.geteuid() != 0 or sandbox_cgroup.available() is not None:
        return None
    return (
        "PYTHON_SANDBOX=rlimits: the bot runs as root with no cgroup for runs, so nothing bounds how many "
        "processes run_python's code starts (root is exempt from RLIMIT_NPROC) nor their memory together; "
        "run the bot as another user, give it a cgroup (README's Python sandbox section), or set "
        "PYTHON_SANDBOX=auto"
    )


_run_locks: weakref.WeakValueDictionary[str, Held] = weakref.WeakValueDictionary()


def python_tools(settings: PythonSettings) -> list[Tool]:
    if settings.mode == "off":
        return []
    if settings.mode == "rlimits":
        if why := _rlimits_cannot_limit():
            raise ConfigError(why)
        support = SandboxSupport(False, "PYTHON_SANDBOX=rlimits")
        log.warning(
            "run_python: PYTHON_SANDBOX=rlimits: code runs UNISOLATED with the bot's rights, files and network%s",
            _escapable(),
        )
    else:
        support = probe_sandbox(settings)
        if not support.namespaces:
            if settings.mode == "namespaces":
                # A ConfigError is one line from `agentbot ask`/`run`; a RuntimeError was a crash with a traceback.
                raise ConfigError(
                    f"PYTHON_SANDBOX=namespaces but namespaces do not work here: {support.detail} "
                    "(README's Python sandbox section says what a host needs; PYTHON_SANDBOX=auto runs without run_python)"
                )
            log.warning("run_python is off: the sandbox cannot isolate code here (%s)", support.detail)
            return [_unavailable(support.detail)]
        log.info("run_python: sandbox uses %s", support.detail)
        _tell_operator(support.notice)
    namespaced = support.namespaces
    give = namespaced and os.geteuid() == 0

    @tool(
        description=describe(settings, support),
        timeout=settings.timeout + 15,
        max_attempts=1,
        max_output=settings.max_output_chars * 2 + 2000,
    )
    async def run_python(code: str, ctx: ToolContext) -> ToolOutput:
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
        holder = _run_locks.setdefault(str(ws), Held(asyncio.Lock()))
        async with holder.lock:  # runs in one workspace take turns
            limit = settings.quota_files + 1
            used = await asyncio.to_thread(workspace_usage, ws, limit)
            if why := used.over(settings.quota_bytes, settings.quota_files):
                raise ToolRefused(
                    f"not run: the workspace is over its quota ({why}). Delete files with delete_file (a folder "
                    "goes with everything in it), then run again."
                )
            if give:
                await asyncio.to_thread(give_workspace_to, ws, settings.sandbox_uid, settings.sandbox_gid)
            before = await asyncio.to_thread(_snapshot, ws)
            try:
                run = await run_sandboxed(
                    code, ws, settings, namespaced=namespaced, quota_left=settings.quota_bytes - used.bytes
                )
            finally:  # stopped or not: no setuid file is left, and the workspace is 0700 again
                await asyncio.to_thread(defuse, ws)
            if run.setup_error:
                raise ToolRefused(f"the sandbox could not start: {run.setup_error}")
            _tell_operator(run.notice)
            after = await asyncio.to_thread(_snapshot, ws)
            usage = await asyncio.to_thread(workspace_usage, ws, limit)
        # Names the code chose: a newline, bidi override or ESC must not forge lines in the thread or terminal.
        changed = [
            f"{shown_name(p)} ({human_size(v[0])})" for p, v in sorted(after.items()) if before.get(p) != v
        ]
        text = render_run(run, settings, changed, usage.over(settings.quota_bytes, settings.quota_files))
        return ToolOutput(text, failed=run.timed_out or bool(run.signal) or bool(run.over_quota))

    return [run_python]


CONTAINER_NEEDS = (
    "unprivileged user namespaces (kernel.unprivileged_userns_clone=1 where that sysctl exists, "
    "user.max_user_namespaces > 0) and a seccomp/AppArmor profile that allows unshare, mount and "
    "pivot_root inside them, and an unmasked /proc (Docker: --security-opt seccomp=unconfined "
    "--security-opt apparmor=unconfined --security-opt systempaths=unconfined, or profiles allowing those)"
)


def sandbox_report(settings: PythonSettings) -> tuple[bool, str]:
    """What ``agentbot doctor`` says about run_python: (works as configured, plain words)."""
    if settings.mode == "off":
        return True, "PYTHON_SANDBOX=off: run_python is not offered to the model"
    if settings.mode == "rlimits":
        if why := _rlimits_cannot_limit():
            return False, why
        return True, (
            "WARNING: PYTHON_SANDBOX=rlimits: run_python code is NOT isolated: it can read and write "
            "everything the bot's user can (its .env and API keys, the database, /proc/<bot pid>/environ with "
            "the Discord token, other sessions' files) and use the bot's network, loopback included; only "
            "the CPU, memory, process, file-size and time limits hold" + _escapable()
        )
    support = probe_sandbox(settings)
    if not support.namespaces:  # under namespaces the bot does not start at all (it said "run_python is OFF")
        what = (
            "agentbot run and ask refuse to start" if settings.mode == "namespaces" else "run_python is OFF"
        )
        return False, (
            f"{what}: the sandbox cannot isolate code here ({support.detail}); a container needs "
            + CONTAINER_NEEDS
        )
    return True, (
        f"namespaces: {support.detail}; code sees only the OS's libraries, the interpreter, its workspace "
        "and a private /tmp, and has no network"
    )
