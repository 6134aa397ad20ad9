"""run_python against what a red team did (issue 14): host-file takeover by a swapped symlink, reading
the host through a deny-list, memory per process instead of per run, silent downgrades.

They run the real sandbox here (as root, as CI does); where isolation cannot work they assert that the
tool is off, never skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.messages import ToolCall
from agent.tools import sandbox_cgroup
from agent.tools.files import FilesSettings, file_tools
from agent.tools.python_exec import probe_sandbox, python_tools, sandbox_report
from agent.tools.registry import ToolContext, ToolOutcome, ToolRegistry
from agent.tools.sandbox_run import PythonSettings, exposed_paths, plan_limits

LIMITS = PythonSettings(
    timeout=10, cpu_seconds=5, memory_mb=256, file_size_mb=1, max_processes=16, max_output_chars=4000
)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "sessions" / "s1"
    path.mkdir(parents=True)
    return path


async def run_python(ws: Path, code: str, settings: PythonSettings = LIMITS) -> ToolOutcome:
    registry = ToolRegistry([*python_tools(settings), *file_tools(FilesSettings())])
    return await registry.execute(
        ToolCall("c", "run_python", json.dumps({"code": code})), ToolContext(session_id="s1", workspace=ws)
    )


def test_sandbox_isolation_works_on_this_machine() -> None:
    """The rest of this file would prove little on a host where the sandbox is off: say so loudly."""
    support = probe_sandbox(LIMITS)
    assert support.namespaces, support.detail
    assert "allow-list root" in support.detail


SWAPPER = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
fd = libc.inotify_init1(0)
libc.inotify_add_watch(fd, a, 0x4)  # IN_ATTRIB on the real folder; the watch follows it through renames
print('ready', flush=True)
while True:
    os.read(fd, 65536)  # something inside was chowned: swap the folder for the link while the walk goes on
    libc.renameat2(-100, a, -100, b, 2)  # RENAME_EXCHANGE
    time.sleep(0.005)
    os.set_blocking(fd, False)
    try:
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass
    os.set_blocking(fd, True)
"""


@pytest.fixture
def swapper(ws: Path, tmp_path: Path) -> Iterator[Path]:
    """What the red team's run did: swap a workspace folder with a link to a host folder while the bot
    walks it. Reacting to the walk's own chowns makes the race land every time on a busy machine too."""
    host = tmp_path / "host"
    host.mkdir(mode=0o700)
    (ws / "a").mkdir()
    for i in range(600):  # the host's files are named as the workspace's: a walk by path lands on them
        (ws / "a" / f"f{i:03d}").write_text("x")
        secret = host / f"f{i:03d}"
        secret.write_text("host secret\n")
        secret.chmod(0o600)
    (ws / "b").symlink_to(host)
    # A process of its own, as the sandboxed code was.
    proc = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(ws / "a"), str(ws / "b")], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    yield host
    proc.kill()
    proc.wait()


async def test_sandbox_symlink_swaps_never_change_host_files(ws: Path, swapper: Path) -> None:
    def owners() -> list[tuple[int, int, int]]:
        return [
            (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
            for p in sorted(swapper.iterdir())
            if (st := p.lstat())
        ]

    before, host_before = owners(), swapper.stat()
    for _ in range(2):  # the same turn's runs start together, as the red team's did
        outcomes = await asyncio.gather(*(run_python(ws, "print('hi')") for _ in range(3)))
        assert all("stdout:\nhi" in o.output for o in outcomes), [o.output for o in outcomes]
    assert owners() == before == [(0, 0, 0o600)] * 600
    assert (swapper.stat().st_uid, swapper.stat().st_mode) == (host_before.st_uid, host_before.st_mode)


async def test_sandbox_runs_in_one_workspace_take_turns(ws: Path) -> None:
    """Two runs of one turn never interleave in one workspace (each holds a marker file exclusively)."""
    code = (
        "import os, time\n"
        "fd = os.open('busy', os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
        "time.sleep(0.2)\n"
        "os.unlink('busy')\n"
        "print('alone')\n"
    )
    outcomes = await asyncio.gather(*(run_python(ws, code) for _ in range(3)))
    assert [o.output.count("stdout:\nalone") for o in outcomes] == [1, 1, 1], [o.output for o in outcomes]


async def test_sandbox_sees_an_allow_list_not_the_host(ws: Path) -> None:
    with tempfile.TemporaryDirectory(dir=REPO) as deploy:  # a deployment directory beside the bot
        env, backup = Path(deploy, ".env"), Path(deploy, ".env.bak")
        for f in (env, backup):
            f.write_text("DISCORD_TOKEN=secret-token-1234\n")
            f.chmod(0o644)
        code = f"""
import json, os
def readable(p):
    try:
        open(p, 'rb').read(1)
        return True
    except OSError:
        return False
def ls(p):
    try:
        return sorted(os.listdir(p))
    except OSError:
        return None
open('/tmp/scratch', 'w').write('ok')
print(json.dumps({{
    'root': ls('/'), 'dev': ls('/dev'), 'etc': ls('/etc'), 'passwd': open('/etc/passwd').read(),
    'readable': [p for p in {[str(backup), str(env), str(REPO / "README.md"), "/etc/hostname", "/etc/shadow"]!r}
                 if readable(p)],
    'repo': ls({str(REPO)!r}), 'sys': ls('/sys'), 'home': ls('/home'), 'tmp': ls('/tmp'),
    'hostname': os.uname().nodename,
}}))
"""
        outcome = await run_python(ws, code, replace(LIMITS, hide=(str(env),)))
    seen = json.loads(outcome.output.split("stdout:\n", 1)[1].split("\n", 1)[0])
    assert seen["readable"] == []  # neither the hidden .env nor the .env.bak beside it, nor the host's files
    tops = {p.split("/")[1] for p in [*exposed_paths(sys.executable), "/workspace"]}
    system = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp", "var"}
    assert set(seen["root"]) <= system | tops
    assert seen["dev"] == [
        "fd",
        "full",
        "null",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "urandom",
        "zero",
    ]
    assert set(seen["etc"]) <= {
        "passwd",
        "group",
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "localtime",
    } | {
        "timezone",
        "mime.types",
        "fonts",
    }
    assert seen["passwd"] == "sandbox:x:1000:1000:sandbox:/workspace:/bin/sh\n"
    venv = Path(sys.prefix).resolve()
    assert seen["repo"] == ([venv.name] if venv.parent == REPO else None)  # the bot's own files: absent
    assert seen["sys"] is None and seen["home"] is None
    assert "scratch" in seen["tmp"] and not Path("/tmp/scratch").exists()
    assert seen["hostname"] == "sandbox"


async def test_sandbox_memory_limit_holds_for_the_run_as_a_whole(ws: Path) -> None:
    """Four processes of 100 MB each under a 256 MB limit: at most two can hold theirs at once."""
    code = """
import os, select, signal, time
r, w = os.pipe()
kids = []
for _ in range(4):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            hog = b'x' * (100 * 1024 * 1024)
            os.write(w, b'1')
            time.sleep(30)
        finally:
            os._exit(0)
    kids.append(pid)
os.close(w)
dead = set()
def reap():
    while len(dead) < len(kids):
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        dead.add(pid)
deadline = time.monotonic() + 5
got = 0
while got + len(dead) < len(kids) and time.monotonic() < deadline:
    if select.select([r], [], [], 0.05)[0]:
        got += len(os.read(r, 8))
    reap()
time.sleep(0.2)
reap()
alive = len(kids) - len(dead)
print('alive', alive, 'of', len(kids), flush=True)
for k in kids:
    try:
        os.kill(k, signal.SIGKILL)
    except OSError:
        pass
"""
    outcome = await run_python(ws, code)
    assert "stdout:\nalive " in outcome.output, outcome.output
    alive = int(outcome.output.split("stdout:\nalive ", 1)[1].split()[0])
    assert alive * 100 <= 256, outcome.output


def test_sandbox_limits_without_a_cgroup_keep_their_product_within_the_memory_limit() -> None:
    for memory_mb, processes in ((512, 32), (256, 16), (64, 4), (4096, 64)):
        s = replace(LIMITS, memory_mb=memory_mb, max_processes=processes)
        fallback = plan_limits(s, cgroup=False, quota_left=10**9)
        assert fallback.processes * fallback.memory_bytes <= memory_mb * 1024 * 1024
        assert fallback.processes >= 1
        whole = plan_limits(s, cgroup=True, quota_left=10**9)
        assert (whole.processes, whole.memory_bytes) == (processes, memory_mb * 1024 * 1024)
    # What this machine does: a cgroup per run when it can have one (the tests run as root).
    if os.geteuid() == 0 and Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():
        assert sandbox_cgroup.available() is not None


async def test_sandbox_auto_turns_run_python_off_when_isolation_fails(ws: Path) -> None:
    broken = replace(LIMITS, mode="auto", python="/nonexistent/python3")  # the probe run cannot work
    [tool] = python_tools(broken)
    assert tool.description.startswith("run_python is unavailable on this host")
    outcome = await run_python(ws, "print(open('/etc/hostname').read())", broken)
    assert outcome.is_error
    assert "run_python is unavailable on this host" in outcome.output
    ok, detail = sandbox_report(broken)
    assert not ok and detail.startswith("run_python is OFF: the sandbox cannot isolate code here")
    assert "user namespaces" in detail


def test_sandbox_rlimits_is_explicit_and_the_doctor_says_what_it_exposes() -> None:
    ok, detail = sandbox_report(replace(LIMITS, mode="rlimits"))
    assert detail.startswith("WARNING: PYTHON_SANDBOX=rlimits: run_python code is NOT isolated")
    for exposed in (".env", "the database", "/proc/<bot pid>/environ", "network, loopback included"):
        assert exposed in detail
    ok, detail = sandbox_report(LIMITS)
    assert ok and detail.startswith("namespaces: ")
