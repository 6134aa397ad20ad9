"""``agentbot ARGS`` as a process of its own, started from a copy of a process that has already imported
the command, instead of a fresh interpreter importing it again.

Why: the suite started ~260 ``agentbot`` processes, and each spent ~0.45 s of CPU importing ``bot.cli``
(pydantic, typer, httpx) before doing what its test is about: about 100 s of the suite's ~320 s of CPU
(getrusage of workers and children, 2026-12-06), on 2 cores shared by ten workers.

What stays the same as the installed command: a process of its own (its own pid, exit status, working
directory, environment, standard input, output and error, children, atexit and stdio flushed at exit),
``sys.argv`` and ``sys.path[0]`` as the console script sets them, the interpreter's start-up state for
an environment like the test's (no ``LANG``/``LC_*``/``PYTHON*``: C locale, UTF-8 mode, ``LC_CTYPE`` in
the environment as Python coerces it). What is skipped: the import of ``bot.cli`` itself, done once per
test worker (modules read no settings at import, house rule in agent/config.py). The copy is started
with exactly the variables of the command's environment that change how an interpreter starts
(``PYTHON*``, ``LANG``, ``LC_*``), one copy per distinct set (a helper passing the worker's own
environment gets a copy started with it), so its start-up state is the command's. Tests of start-up
itself (Ctrl-C while importing, ``--version``) start the real command.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))
COPY = Path(__file__).with_name("warm_copy.py")  # what the copy runs


_STARTS_INTERPRETER = ("PYTHON", "LC_", "LANG")
# Variables that run or report code while the interpreter starts: the copy has started already.
_RUNS_AT_START_UP = {"PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONPROFILEIMPORTTIME", "PYTHONUSERBASE"}
_COPIES_AT_MOST = 4  # distinct start-up environments per worker; past that, the real command


# What the commands import after ``bot.cli`` (``ask``, ``run``, ``doctor``, the store's commands), loaded
# once in the copy too: modules that start no thread and read no setting at import. numpy, chromadb and
# onnxruntime are left to the child (OpenBLAS starts threads at import, and a fork copies none of them).
PRELOAD = (
    "agent.ask",
    "agent.toolset",
    "agent.models.factory",
    "agent.tools.research",
    "bot.ask_input",
    "bot.config",
    "bot.services",
    "bot.doctor",
    "bot.backup",
    "bot.store",
    "bot.store.pg",
    "bot.store.copy",
    "bot.app",
    "bot.discord_errors",
)


def start_up_env(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables of ``env`` that change how the interpreter starts, which its copy is started with."""
    return tuple(sorted((k, v) for k, v in env.items() if k.upper().startswith(_STARTS_INTERPRETER)))


def warm_eligible(env: dict[str, str]) -> bool:
    """Whether a copy can start this command: not when the environment runs code at start-up
    (``PYTHONPATH``'s sitecustomize, ...), nor past a few distinct start-up environments.
    ``AGENTBOT_TESTS_COLD=1`` in the suite's environment starts every command the ordinary way, to rule
    the copy out when a test fails."""
    if os.environ.get("AGENTBOT_TESTS_COLD") == "1" or _RUNS_AT_START_UP & {k.upper() for k in env}:
        return False
    return start_up_env(env) in _servers or len(_servers) < _COPIES_AT_MOST


class _Server:
    """The worker's forking process: started at first use, ended when the worker exits."""

    def __init__(self, start_up: tuple[tuple[str, str], ...]) -> None:
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [sys.executable, str(COPY), AGENTBOT, str(theirs.fileno()), ",".join(PRELOAD)],
            pass_fds=(theirs.fileno(),),
            env={"PATH": "/usr/bin:/bin", **dict(start_up)},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        self.owner = os.getpid()
        atexit.register(self.close)

    def close(self) -> None:
        if os.getpid() != self.owner or self.ctl.fileno() == -1:
            return
        self.ctl.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_servers: dict[tuple[tuple[str, str], ...], _Server] = {}


def close_warm_server() -> None:
    """End the worker's forking processes and reap them, so their commands' CPU counts in the worker's
    (pytest's cleanup calls this: an xdist worker may leave without running atexit)."""
    for server in _servers.values():
        server.close()


def _the_server(env: dict[str, str]) -> _Server:
    key = start_up_env(env)
    server = _servers.get(key)
    if server is None or server.owner != os.getpid() or server.proc.poll() is not None:
        server = _servers[key] = _Server(key)
    return server


async def _read_all(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader),
        open(fd, "rb", buffering=0),  # noqa: SIM115 - the transport owns and closes it
    )
    try:
        return await reader.read()
    finally:
        transport.close()


async def _write_all(fd: int, data: bytes) -> None:
    with open(fd, "wb", buffering=0) as f:
        await asyncio.to_thread(_write_ignoring_a_closed_reader, f, data)


def _write_ignoring_a_closed_reader(f: object, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):
        f.write(data)  # type: ignore[attr-defined]


class _Answers:
    """The server's lines for one request: the child's pid, then its exit code."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.got = sock, b""

    async def line(self) -> int:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.got:
            chunk = await loop.sock_recv(self.sock, 64)
            if not chunk:
                raise RuntimeError(f"the warm agentbot server stopped answering (after {self.got!r})")
            self.got += chunk
        line, self.got = self.got.split(b"\n", 1)
        return int(line)


def _request(args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> dict[str, object]:
    """Arguments, directory and environment as bytes, as exec would pass them (latin-1 carries them
    through JSON unchanged)."""
    return {
        "argv": [os.fsencode(a).decode("latin-1") for a in (AGENTBOT, *args)],
        "cwd": os.fsencode(cwd).decode("latin-1"),
        "env": {os.fsencode(k).decode("latin-1"): os.fsencode(v).decode("latin-1") for k, v in env.items()},
    }


class StillRunning(TimeoutError):
    """The command had not ended within its time: it was killed; what it had written is kept."""

    def __init__(self, within: float, out: bytes, err: bytes) -> None:
        super().__init__(f"still running after {within} s")
        self.out, self.err = out, err


async def agentbot_process(
    *args: str,
    cwd: Path,
    env: dict[str, str],
    stdin: bytes | None = None,
    within: float = 60,
    stderr_to_stdout: bool = False,
) -> tuple[int, bytes, bytes]:
    """``agentbot ARGS`` in ``cwd`` with exactly ``env``; ``stdin`` None is /dev/null. Returns the exit
    code (negative: killed by that signal) and everything written to stdout and stderr (with
    ``stderr_to_stdout``, both in the first, the second empty). A command still going after ``within``
    seconds is killed and :class:`StillRunning` raised."""
    if not warm_eligible(env):
        return await _cold(args, cwd, env, stdin, within, stderr_to_stdout)
    server = _the_server(env)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe() if not stderr_to_stdout else (-1, out_w)
    in_w = None
    if stdin is None:
        in_r = os.open(os.devnull, os.O_RDONLY)
    else:
        in_r, in_w = os.pipe()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    mine.setblocking(False)
    request = _request(args, cwd, env)
    try:
        socket.send_fds(server.ctl, [json.dumps(request).encode()], [in_r, out_w, err_w, theirs.fileno()])
    finally:
        for fd in {in_r, out_w, err_w}:
            os.close(fd)
        theirs.close()
    jobs = [_read_all(out_r), _read_all(err_r) if err_r >= 0 else _nothing()]
    if in_w is not None:
        jobs.append(_write_all(in_w, stdin or b""))
    written = asyncio.gather(*jobs)
    answers, pid = _Answers(mine), 0
    try:
        async with asyncio.timeout(within):
            pid = await answers.line()
            out, err, *_ = await asyncio.shield(written)
            code = await answers.line()
    except TimeoutError:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            out, err, *_ = await asyncio.wait_for(written, 5)
        except TimeoutError:  # a child of the command still holds the pipes
            out = err = b""
        raise StillRunning(within, out, err) from None
    finally:
        mine.close()
    return code, out, err


async def _nothing() -> bytes:
    return b""


async def _cold(
    args: tuple[str, ...], cwd: Path, env: dict[str, str], stdin: bytes | None, within: float, merged: bool
) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merged else asyncio.subprocess.PIPE,
    )
    communicating = asyncio.ensure_future(proc.communicate(stdin))
    try:
        out, err = await asyncio.wait_for(asyncio.shield(communicating), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        try:
            out, err = await asyncio.wait_for(communicating, 5)
        except TimeoutError:
            out = err = b""
        raise StillRunning(within, out or b"", err or b"") from None
    return proc.returncode or 0, out or b"", err or b""


class WarmProcess:
    """What a test does with an ``asyncio.subprocess.Process`` of a long-running command (``run``):
    its pid and returncode, wait, signals; its output goes where it was sent, never to a pipe here."""

    def __init__(self, pid: int, answers: _Answers, sock: socket.socket) -> None:
        self.pid, self.returncode = pid, None
        self._sock = sock
        self._ended = asyncio.ensure_future(self._reap(answers))

    async def _reap(self, answers: _Answers) -> int:
        try:
            self.returncode = await answers.line()
        finally:
            self._sock.close()
        return self.returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # ended, and reaped by the copy already
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


async def start_agentbot(
    *args: str, cwd: Path, env: dict[str, str], stdout: int | IO[bytes], stderr: int | IO[bytes]
) -> asyncio.subprocess.Process | WarmProcess:
    """``agentbot ARGS`` started and left running, its stdin /dev/null, its stdout and stderr each
    ``asyncio.subprocess.DEVNULL`` or an open file (a log the test reads)."""
    if not warm_eligible(env):
        return await asyncio.create_subprocess_exec(
            AGENTBOT, *args, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    server = _the_server(env)
    opened = [os.open(os.devnull, os.O_RDWR)]
    fds = [opened[0]]
    for target in (stdout, stderr):
        fds.append(opened[0] if target == asyncio.subprocess.DEVNULL else target.fileno())  # type: ignore[union-attr]
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    mine.setblocking(False)
    try:
        socket.send_fds(server.ctl, [json.dumps(_request(args, cwd, env)).encode()], [*fds, theirs.fileno()])
    finally:
        os.close(opened[0])
        theirs.close()
    answers = _Answers(mine)
    try:
        pid = await asyncio.wait_for(answers.line(), 30)
    except BaseException:
        mine.close()
        raise
    return WarmProcess(pid, answers, mine)
