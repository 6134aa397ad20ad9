"""What ``agentbot ask`` reads and heeds besides its options: the task (argument or standard input) and
the signals that stop it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class TaskError(ValueError):
    """No usable task: the message says what to give instead."""


async def stoppable(run: Coroutine[Any, Any, T]) -> T:
    """``run``, cancelled by SIGTERM or SIGHUP (`kill`, `timeout`, a closed terminal) as Ctrl-C cancels
    it, so the processes its tools started are killed: by default the process died at once and left
    run_python's sandbox running with no one to enforce its time limit. (Not by re-raising SIGINT: a
    script's background job ignores that.)"""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup agentbot ask ...` keeps running on logout
            loop.add_signal_handler(sig, task.cancel)
    return await run


MAX_STDIN_BYTES = 8 * 1024 * 1024
"""The longest task read from standard input: more text than the largest context window (2M tokens)."""


def task_text(task: str | None) -> str:
    """The argument, or standard input when it is ``-`` or absent and something is piped in. An argument
    never reads stdin: ``while read q; do agentbot ask "$q"; done < questions`` keeps its questions."""
    if task is None or task == "-":
        if sys.stdin is None or (task is None and sys.stdin.isatty()):
            raise TaskError(
                'give the task as the argument, e.g. agentbot ask "What is 2**32?", or pipe it in'
            )
        if sys.stdin.isatty() and sys.stderr is not None:  # `ask -` at a prompt waited as if it hung
            sys.stderr.write("agentbot: type the task, then Ctrl-D on a line of its own\n")
            sys.stderr.flush()
        with interruptible():
            if not sys.stdin.isatty() and sys.stderr is not None and not _input_within(QUIET_STDIN_SECONDS):
                # `ssh host agentbot ask`, `docker run -i ... ask`: a pipe left open, read without a word
                # for as long as it stayed open, which looked like a model that never answered.
                sys.stderr.write(
                    "agentbot: waiting for the task on standard input (no TASK argument): "
                    "end it with Ctrl-D, or give the task as the argument\n"
                )
                sys.stderr.flush()
            raw = _read_stdin(MAX_STDIN_BYTES + 1)
        if len(raw) > MAX_STDIN_BYTES:
            raise TaskError(
                f"the task on standard input is over {MAX_STDIN_BYTES // 1024 // 1024} MB: give a shorter one"
            )
        try:
            task = raw.decode("utf-8-sig")  # a file saved by Notepad as "UTF-8 with BOM": the mark is no text
        except UnicodeDecodeError as e:
            raise TaskError(
                f"the task on standard input is not UTF-8 text (byte {e.start}): convert it, e.g. with iconv"
            ) from None
    else:
        task = _argument_text(task)
    if not task.strip():  # `agentbot ask "$Q"` with Q unset: an empty message is still a paid call
        raise TaskError('the task is empty: give it as the argument, e.g. agentbot ask "What is 2**32?"')
    return task


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM or SIGHUP while waiting for standard input (or while ``backup`` copies) end ``ask`` as
    Ctrl-C does (130, "agentbot: interrupted"): the default killed it without a word (or a cleanup). Raised here, not as a re-sent SIGINT, which a
    script's background job ignores; an ignored signal stays ignored (``nohup``)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            with contextlib.suppress(ValueError):  # not the main thread (a test's caller): as before
                before[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


QUIET_STDIN_SECONDS = 1.0
"""How long standard input (not a terminal) may stay silent before ``ask`` says it is waiting for it."""


def _input_within(seconds: float) -> bool:
    """Whether standard input has something to read (or its end) within ``seconds``; True when that
    cannot be known (not a file descriptor select takes)."""
    try:
        return bool(select.select([sys.stdin.fileno()], [], [], seconds)[0])
    except (AttributeError, OSError, ValueError):
        return True


def _read_stdin(limit: int) -> bytes:
    """Standard input up to ``limit`` bytes, waiting for all of it. From a non-blocking pipe (a parent's
    that set O_NONBLOCK, as Node's child_process does) Python's read returned what had arrived so far,
    so the model was paid to answer half a question, or None before the first byte (a TypeError
    traceback). The flag is left as it is: the descriptor is shared with whoever set it."""
    try:
        fd = sys.stdin.fileno()
        whole = os.get_blocking(fd)
    except (AttributeError, OSError, ValueError):  # not a file (a test's stand-in)
        whole = True
    if whole:
        return sys.stdin.buffer.read(limit)
    parts: list[bytes] = []
    size = 0
    while size < limit:
        try:
            part = os.read(fd, min(1 << 20, limit - size))
        except BlockingIOError:
            select.select([fd], [], [])
            continue
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _argument_text(task: str) -> str:
    """The argument as the text the user typed. Under a locale Python does not read as UTF-8
    (``LC_ALL=C`` with ``PYTHONUTF8=0``), its bytes past ASCII arrive as surrogates, which ended the run
    in a UnicodeEncodeError traceback when the request was encoded: they are UTF-8 (what terminals
    send), or else one line says so, as for standard input."""
    try:
        task.encode()
        return task
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(task).decode()
    except UnicodeError as e:
        raise TaskError(
            f"the task argument is not UTF-8 text (byte {getattr(e, 'start', '?')}): "
            "convert it, e.g. with iconv, or set a UTF-8 locale (LANG=C.UTF-8)"
        ) from None
