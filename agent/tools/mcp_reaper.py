"""Supervisor of one stdio MCP server, so that everything the server starts ends with it (Linux).

Standard library only: :mod:`agent.tools.mcp_stdio` runs it as ``python -I mcp_reaper.py BOT_PID`` with
the server's command in :data:`COMMAND_ENV` (a JSON list, taken out of the environment before the server
starts; on the command line the server's markers would show twice in ``ps``).

Why: the bot ended a server by killing its process group, and a process that leaves the group (a
daemon's ``setsid()``, a double fork) kept running after the bot had closed the server, once per
start. This process marks itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so whatever the server
starts stays its descendant even when the middle of the tree exits (orphans come to it, not to init);
starts the server with its own stdin, stdout and stderr (the MCP pipes), and then reaps. It ends, and
ends every descendant (walking ``/proc`` for them, again until none is left), when:

- the server and everything it started have exited (the server's exit code is this process's; a
  wrapper that exits once it has started the real server leaves it serving, as before);
- SIGTERM comes (the MCP shutdown's second step): SIGTERM goes to every descendant, which get
  :data:`STOP_WAIT` seconds to exit, then everything left is killed;
- SIGHUP comes (the bot leaving at once: cancelled, an error): everything is killed now;
- the bot dies (``PR_SET_PDEATHSIG`` sends SIGTERM), where it used to leave every server running.

Limit: a server may kill this process itself (it is its parent), and what it started then goes to init.
Servers come from the operator's file; this closes what honest wrappers and daemons leave, it is no
sandbox (``run_python`` is the sandbox).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time

COMMAND_ENV = "AGENTBOT_MCP_COMMAND"
STOP_WAIT = 2.0
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
SIGNALS_RESET = (signal.SIGPIPE, signal.SIGXFSZ)
"""Ignored by Python at start-up, and an ignored signal stays ignored across exec: reset for the server,
as ``subprocess`` resets them (``posix_spawn`` left glibc's internal signals ignored as well)."""


WAITED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP}
"""Blocked here and taken with ``sigtimedwait``: no handler can interrupt the clean-up halfway."""


def descendants(root: int) -> list[int]:
    """Every process under ``root`` now, from ``/proc``'s parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])  # the name may hold spaces and ")"
        except (OSError, ValueError, IndexError):  # it ended while we looked
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def signal_all(sig: int) -> None:
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def end_all() -> None:
    """Kill every descendant and reap them until this process has no child left. A killed parent's
    children come here (the subreaper), so each pass finds what the last one orphaned."""
    while True:
        signal_all(signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
            os.waitpid(-1, 0)  # one more, blocking: what is left was killed and is ending
        except ChildProcessError:
            return


def _reap(server: int, code: int | None) -> tuple[int | None, bool]:
    """Reap every child that ended: the server's exit code (``code`` until it ends), and whether any
    child is left."""
    try:
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                return code, True
            if pid == server:
                code = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        return code, False


def supervise(server: int) -> int | None:
    """Reap until every process the server started has ended (a wrapper that exits once it has started
    the real server leaves it serving), SIGTERM came and :data:`STOP_WAIT` s passed, or SIGHUP came.
    The server's exit code, None if it had not exited."""
    deadline: float | None = None
    code: int | None = None
    while True:
        code, left = _reap(server, code)
        if not left:
            return code
        if deadline is None:
            got = signal.sigwaitinfo(WAITED)
        else:
            wait = deadline - time.monotonic()
            got = signal.sigtimedwait(WAITED, wait) if wait > 0 else None
            if got is None:
                return code
        if got.si_signo == signal.SIGHUP:
            return code
        if got.si_signo == signal.SIGTERM and deadline is None:
            signal_all(signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT


def _exec(command: list[str]) -> None:
    """Become the server, with the signal mask and dispositions a server started by the bot has."""
    try:
        for sig in SIGNALS_RESET:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execv(command[0], command)
    except OSError as e:
        print(f"cannot start {command[0]}: {e.strerror}", file=sys.stderr)
    os._exit(126)


def main() -> int:
    bot = int(sys.argv[1])
    command = json.loads(os.environ.pop(COMMAND_ENV))
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:  # Linux before 3.4: the server as before
        _exec(command)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != bot:  # the bot died before the line above: nobody would stop the server
        return 1
    server = os.fork()
    if server == 0:
        _exec(command)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # the pipes are the server's: they close when it (and what it started) exits
        os.dup2(devnull, fd)
    os.close(devnull)
    try:
        code = supervise(server)
    finally:
        end_all()
    return 137 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
