"""The warm copy of ``agentbot`` that tests/warm_agentbot.py starts once per test worker and start-up
environment: it imports the command, then forks one child per request, and each child ends as the
console script does.

Run as ``python warm_copy.py AGENTBOT FD PRELOAD``: one request per message on the control socket FD
(JSON with argv, cwd, env as latin-1 bytes; file descriptors: stdin, stdout, stderr and a socket for the
answers: the child's pid, then its exit code). The child falls out of the loop and ends with
``sys.exit(main())`` at the top level, so the interpreter's own exit (exceptions, atexit, flushing) is
the command's.
"""

import os
import sys

sys.path[0] = os.path.dirname(sys.argv[1])  # the console script's directory, as for .venv/bin/agentbot

import gc  # noqa: E402 - after sys.path is the command's
import io  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402

from bot.cli import main  # noqa: E402

for name in sys.argv[3].split(","):
    __import__(name)
assert threading.active_count() == 1 and not {"numpy", "chromadb", "onnxruntime"} & set(sys.modules)
gc.freeze()  # the children's collections leave the copied modules' pages alone (see gc.freeze's docs)
ctl = socket.socket(fileno=int(sys.argv[2]))
coerced = {k: os.environb[k] for k in (b"LC_CTYPE",) if k in os.environb}
running = {}
child = None
while child is None:
    ready, _, _ = select.select([ctl, *running], [], [])
    for fd in ready:
        if fd is ctl:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 4)
            if not msg:  # the test worker is done: its commands have ended or been killed
                for pid, _ in running.values():
                    os.waitpid(pid, 0)
                sys.exit(0)
            request = json.loads(msg)
            answer = socket.socket(fileno=fds[3])
            pid = os.fork()
            if pid == 0:
                ctl.close()
                answer.close()
                for other, (_, other_answer) in running.items():
                    os.close(other)
                    other_answer.close()
                for n, fd_ in enumerate(fds[:3]):
                    os.dup2(fd_, n)
                    os.close(fd_)
                # As the interpreter reads them: bytes, decoded by this start-up's filesystem encoding.
                os.chdir(request["cwd"].encode("latin-1"))
                os.environ.clear()
                os.environb.update(coerced)
                os.environb.update(
                    {k.encode("latin-1"): v.encode("latin-1") for k, v in request["env"].items()}
                )
                sys.argv = [os.fsdecode(a.encode("latin-1")) for a in request["argv"]]
                # sys.stdin/stdout/stderr made again over the new 0, 1, 2 as the interpreter makes them at
                # start-up (Python/pylifecycle.c create_stdio): the copy's were made over its own files,
                # and remember whether those could seek (a pipe cannot; click's stream check then fails).
                for n, name in enumerate(("stdin", "stdout", "stderr")):
                    old = getattr(sys, name)
                    buffered = not old.write_through
                    buf = open(  # noqa: SIM115 - the new sys.stdin/stdout/stderr own it
                        n, "wb" if n else "rb", buffering=-1 if buffered or not n else 0, closefd=False
                    )
                    raw = getattr(buf, "raw", buf)
                    raw.name = f"<{name}>"
                    stream = io.TextIOWrapper(
                        buf,
                        old.encoding,
                        old.errors,
                        newline="\n",
                        line_buffering=buffered and (raw.isatty() or n == 2),
                        write_through=not buffered,
                    )
                    stream.mode = "w" if n else "r"
                    setattr(sys, name, stream)
                    setattr(sys, f"__{name}__", stream)
                child = request
                break
            for fd_ in fds[:3]:
                os.close(fd_)
            try:
                answer.sendall(f"{pid}\n".encode())
            except OSError:  # the test gave up waiting
                pass
            running[os.pidfd_open(pid)] = (pid, answer)
        else:
            pid, answer = running.pop(fd)
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            try:
                answer.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:  # the test gave up waiting and killed it
                pass
            answer.close()
del ctl, running, coerced, select, socket, json
sys.exit(main())
