"""A stdio MCP server's process and its message streams, ended with its whole process group.

Why not the SDK's ``stdio_client``: it starts the server in a process group of its own (so a Ctrl-C in
the terminal does not reach it) and kills that group only when it is left normally. Left by a
cancellation (Ctrl-C or SIGTERM while a server was slow to answer its handshake, a server that ran out
its ``connect_timeout``), it killed the process it started and nothing else: a server started through a
wrapper (``sh -c``, ``npx``, ``uvx``) kept running after ``agentbot`` had exited, once per start-up.
Here the group is killed on every way out, and a message line is bounded (the SDK's grew without end
while a server wrote no newline).

On Linux the server runs under :mod:`agent.tools.mcp_reaper`, a child subreaper that ends every process
the server started, those that left its group too (a daemon's ``setsid()``, a double fork: they kept
running after the group was killed), and that ends them if the bot itself dies. Elsewhere (macOS has no
subreaper) only the process group is ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TextIO

import anyio
import anyio.abc
import mcp.types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.stdio import StdioServerParameters
from mcp.shared.message import SessionMessage

from agent.tools.mcp_reaper import COMMAND_ENV as REAPER_COMMAND_ENV

STOP_WAIT = 2.0
"""Seconds a server gets to exit once its stdin is closed, then again once its group is sent SIGTERM
(the MCP specification's shutdown, as the SDK does it)."""
REAPER = Path(__file__).with_name("mcp_reaper.py")
REAPED = sys.platform == "linux" and os.path.isdir("/proc/self")
"""Whether servers run under the reaper: Linux's ``PR_SET_CHILD_SUBREAPER`` and ``/proc``."""


class MessageTooLong(Exception):
    """The server wrote a line longer than the bound without ending it."""


@contextlib.asynccontextmanager
async def stdio_transport(
    params: StdioServerParameters,
    errlog: TextIO,
    *,
    max_line: int,
    on_stray: Callable[[bytes], None] = lambda _: None,
) -> AsyncIterator[
    tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]
]:
    """The server started in a new session (its own process group), with read and write streams for
    ``ClientSession``. Left normally it is stopped as the specification says; left any other way
    (cancelled, an error) its group is killed at once. Either way no process of its group is left.
    ``on_stray`` is given each stdout line that is no protocol message (a log line, an error printed)."""
    process = await _spawn(params, errlog)
    incoming, read = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write, outgoing = anyio.create_memory_object_stream[SessionMessage](0)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_from_server, process, incoming, max_line, on_stray)
            tg.start_soon(_to_server, process, outgoing)
            yield read, write
            await _stop(process)
            tg.cancel_scope.cancel()
    finally:
        _end_now(process)  # at once, before any await a cancellation could cut
        for stream in (incoming, read, write, outgoing):
            stream.close()
        with anyio.CancelScope(shield=True):
            await _reaped(process)


async def _spawn(params: StdioServerParameters, errlog: TextIO) -> anyio.abc.Process:
    """The server's process, started whole even when a cancellation arrives meanwhile. Python 3.11's own
    clean-up for a cancelled start kills the process it started and then waits for its pipes to close,
    which a server's child (``sh -c``'s, ``npx``'s) holds open: Ctrl-C at that moment hung ``ask`` until
    the server ended (3 of 36 Ctrl-C's in a loaded loop, for the server's whole 300 s). Here the start
    finishes (a fork and two pipes), then its whole group is killed and the cancellation goes on."""
    command, env = [params.command, *params.args], params.env
    if REAPED:
        found = _executable(params.command, env, params.cwd)
        env = dict(os.environ if env is None else env)
        env[REAPER_COMMAND_ENV] = json.dumps([found, *params.args])
        command = [sys.executable, "-I", str(REAPER), str(os.getpid())]
    spawn = asyncio.ensure_future(
        anyio.open_process(command, env=env, cwd=params.cwd, stderr=errlog, start_new_session=True)
    )
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            process = await asyncio.shield(spawn)
            break
        except asyncio.CancelledError as e:
            if spawn.cancelled():  # not ours to hold back
                raise
            cancelled = e
    if cancelled is not None:
        _end_now(process)
        with anyio.CancelScope(shield=True):
            await _reaped(process)
        raise cancelled
    return process


def _executable(command: str, env: dict[str, str] | None, cwd: str | Path | None) -> str:
    """``command`` as exec would find it (a name on the server's PATH; a path as it is, from ``cwd``),
    or the error its start would raise: the reaper starting it would only say so on stderr."""
    if "/" not in command:
        found = shutil.which(command, path=os.pathsep.join(os.get_exec_path(env)))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
        return found
    path = Path(cwd or ".") / command
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
    if not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), command)
    return command


async def _stop(process: anyio.abc.Process) -> None:
    """Close the server's stdin and let it exit; then SIGTERM to its group; the caller kills what is left."""
    if process.stdin is not None:
        with contextlib.suppress(Exception):  # already closed, or the server is gone
            await process.stdin.aclose()
    with anyio.move_on_after(STOP_WAIT):
        await process.wait()
    if _signal_group(process.pid, signal.SIGTERM):  # what it started (``npx``'s node) goes with it
        with anyio.move_on_after(STOP_WAIT):
            await process.wait()


def _end_now(process: anyio.abc.Process) -> None:
    """Everything the server started, ended now: the reaper is told (SIGHUP: it kills every descendant,
    in its group or not, and exits); without one, the group is killed."""
    if not REAPED or process.returncode is not None:
        _signal_group(process.pid, signal.SIGKILL)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGHUP)


async def _reaped(process: anyio.abc.Process) -> None:
    """Waits for the server's end, the reaper's killing included, and closes its pipes. A reaper still
    there after :data:`STOP_WAIT`, or killed by a signal (the server may kill its parent), has its group
    killed as before: its id is still taken then (the reaper unreaped, or a member alive)."""
    if REAPED:
        with anyio.move_on_after(STOP_WAIT):
            await process.wait()
        if process.returncode is None or process.returncode < 0:
            _signal_group(process.pid, signal.SIGKILL)
    await process.aclose()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False when no process of it is left. The group's id stays
    taken while any member lives, so it cannot name another program's processes."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _from_server(
    process: anyio.abc.Process,
    incoming: MemoryObjectSendStream[SessionMessage | Exception],
    max_line: int,
    on_stray: Callable[[bytes], None],
) -> None:
    assert process.stdout is not None
    buffer = b""
    async with incoming:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for chunk in process.stdout:
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    if len(line) > max_line:
                        raise MessageTooLong(f"the server sent a message of {len(line):,} bytes")
                    try:  # bytes that are not UTF-8 read as U+FFFD: strict, the answer was dropped and
                        # its call waited out the server's whole timeout (the session reads no errors)
                        message = types.JSONRPCMessage.model_validate_json(line.decode("utf-8", "replace"))
                    except Exception as e:
                        if _is_answer(line):  # its call fails at once (McpTools' message handler)
                            await incoming.send(e)
                        else:  # a stray line (a log on stdout) is no answer: calls wait on; the last is
                            on_stray(line)  # kept to say why a server that never answered was left out
                        continue
                    await incoming.send(SessionMessage(message))
                if len(buffer) > max_line:  # a line without an end: the connection ends, saying why
                    raise MessageTooLong(f"the server sent a message of more than {max_line:,} bytes")


def _is_answer(line: bytes) -> bool:
    """Whether an unreadable line is a JSON-RPC answer (an object with an id and no method): its call
    waited out the server's whole timeout ("timed out after 30 s") for an answer it had been sent."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and "id" in message and "method" not in message


async def _to_server(process: anyio.abc.Process, outgoing: MemoryObjectReceiveStream[SessionMessage]) -> None:
    assert process.stdin is not None
    async with outgoing:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for message in outgoing:
                line = message.message.model_dump_json(by_alias=True, exclude_none=True) + "\n"
                await process.stdin.send(line.encode())
