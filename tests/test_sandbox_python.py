"""run_python: bombs stopped and reported, no network, no secrets, writes only in the workspace.

These run the real sandbox (user, mount, PID and network namespaces) with small limits. On a host
without user namespaces the first test fails and says why, rather than the rest passing vacuously.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import ConfigError
from agent.messages import ToolCall
from agent.tools.files import FilesSettings, file_tools
from agent.tools.python_exec import PythonSettings, probe_sandbox, python_tools
from agent.tools.registry import ToolContext, ToolOutcome, ToolRegistry
from agent.tools.research import ResearchToolSettings
from tests.fakes.web_server import FakeWeb

LIMITS = PythonSettings(
    timeout=2.5, cpu_seconds=1, memory_mb=128, file_size_mb=1, max_processes=16, max_output_chars=2000
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "sessions" / "s1"
    path.mkdir(parents=True)
    return path


async def run_python(ws: Path, code: str, settings: PythonSettings = LIMITS) -> ToolOutcome:
    registry = ToolRegistry([*python_tools(settings), *file_tools(FilesSettings())])
    ctx = ToolContext(session_id="s1", workspace=ws)
    return await registry.execute(ToolCall("c", "run_python", json.dumps({"code": code})), ctx)


def processes_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
    return found


def test_sandbox_namespaces_work_here_and_the_description_says_no_network() -> None:
    support = probe_sandbox(LIMITS)
    assert support.namespaces, f"namespace sandbox unavailable on this host: {support.detail}"
    [tool] = python_tools(LIMITS)
    assert "There is no network access." in tool.description
    assert "1 s CPU, 2.5 s wall-clock, 128 MB memory for all its processes, 16 processes" in tool.description


WHERE_AM_I = """
import os, pwd
print(os.getcwd(), os.environ["HOME"], os.path.expanduser("~"), pwd.getpwuid(os.getuid()).pw_dir)
print(*sorted(line.split()[4] for line in open("/proc/self/mountinfo")))
open("result.csv", "w").write("a,b\\n1,2\\n")
open(os.path.expanduser("~/home.txt"), "w").write("kept")
"""


async def test_sandbox_runs_code_in_a_neutral_workspace_path_and_reports_output_and_files(ws: Path) -> None:
    """The code sees its workspace as /workspace (current directory, HOME, passwd, mount point): the
    host's data directory path used to show in all four, the layout of the machine the bot runs on."""
    outcome = await run_python(ws, WHERE_AM_I)
    assert not outcome.is_error, outcome.output
    assert outcome.output.startswith("exit code 0 · CPU ")
    assert "stdout:\n/workspace /workspace /workspace /workspace\n" in outcome.output
    mount_points = outcome.output.split("\n")[2].split()
    assert "/workspace" in mount_points and not any(str(ws.parent) in p for p in mount_points)
    assert "files written: home.txt (4 B), result.csv (8 B)" in outcome.output
    assert (ws / "result.csv").read_text() == "a,b\n1,2\n" and (ws / "home.txt").read_text() == "kept"


PROC_VIEWS = """
import os
needles = [bytes.fromhex(h).decode() for h in {needles!r}]  # hex: the code itself is in /proc/self/cmdline
views = {{}}
for p in ("/proc/self/mountinfo", "/proc/self/mounts", "/proc/1/mountinfo", "/proc/1/cmdline",
          "/proc/self/cgroup", "/proc/1/cgroup", "/proc/self/environ", "/proc/1/environ"):
    try:
        views[p] = open(p, "rb").read().decode(errors="replace")
    except OSError as e:
        views[p] = "unreadable: " + e.strerror
views["cwd"] = os.getcwd() + " " + os.readlink("/proc/self/cwd")
print("host paths shown:", sorted((p, n) for p, v in views.items() for n in needles if n in v))
print("workspace mount:", *[line.split()[3:5] for line in views["/proc/self/mountinfo"].splitlines()
                            if line.split()[4] == "/workspace"])
print("cwd:", views["cwd"])
open("kept.txt", "w").write("still written to the workspace")
"""


async def test_sandbox_proc_names_no_host_path_of_the_workspace_or_the_bot(ws: Path) -> None:
    """/proc/self/mountinfo showed the workspace's host path (a bind mount's source), and /proc/1/cmdline
    (PID 1 is a fork of the runner) the runner's settings: the workspace, hidden paths and cgroup."""
    hidden = ws.parent / "secret-data"
    hidden.mkdir()
    settings = replace(LIMITS, hide=(str(hidden),), timeout=10)
    bot_code = str(Path(__file__).parents[1] / "agent")
    needles = [n.encode().hex() for n in (str(ws.parent), "secret-data", "cgroup.procs", bot_code)]
    outcome = await run_python(ws, PROC_VIEWS.format(needles=needles), settings)
    assert outcome.output.startswith("exit code 0"), outcome.output
    assert "host paths shown: []" in outcome.output, outcome.output
    assert "workspace mount: ['/', '/workspace']" in outcome.output  # the root of a mount of its own
    assert "cwd: /workspace /workspace" in outcome.output
    assert (ws / "kept.txt").read_text() == "still written to the workspace"
    # No overlay work directory is left beside it.
    assert sorted(p.name for p in ws.parent.iterdir()) == ["s1", "secret-data"]


async def test_sandbox_that_cannot_hide_the_workspace_path_says_so(
    ws: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where overlayfs cannot be mounted the workspace is bound as before, and the operator is told:
    the probe's detail (doctor, the start-up log) and a warning when a run goes without it."""
    from agent.tools import python_exec, sandbox_run

    monkeypatch.setattr(sandbox_run, "_overlay_work", lambda _ws: None)
    monkeypatch.setattr(python_exec, "_told", set())
    settings = replace(LIMITS, timeout=2.4)  # settings of its own: the probe is cached per settings
    why = "the workspace's host path shows in /proc/self/mountinfo here"
    support = await asyncio.to_thread(probe_sandbox, settings)
    assert support.namespaces and f"WARNING: {why}" in support.detail
    with caplog.at_level("WARNING", logger="agent.tools.python_exec"):
        outcome = await run_python(ws, "print('still runs')", settings)
    assert "stdout:\nstill runs" in outcome.output
    assert [r.getMessage() for r in caplog.records if why in r.getMessage()], caplog.text


async def test_sandbox_errors_come_back_as_tracebacks(ws: Path) -> None:
    outcome = await run_python(ws, "print('before')\n1/0")
    assert not outcome.is_error  # the tool worked; the code failed, and the model reads why
    assert outcome.output.startswith("exit code 1")
    assert "stdout:\nbefore" in outcome.output
    assert "ZeroDivisionError: division by zero" in outcome.output


async def test_sandbox_runaway_loop_is_stopped_by_the_cpu_limit(ws: Path) -> None:
    # A generous wall clock, so only the CPU limit can stop it even on a loaded machine.
    outcome = await run_python(ws, "while True:\n    pass", replace(LIMITS, timeout=30))
    assert outcome.output.startswith("killed (SIGXCPU)")
    assert "note: stopped: the CPU time limit of 1 s was reached" in outcome.output


async def test_sandbox_sleeper_is_stopped_by_the_wall_clock(ws: Path) -> None:
    marker = f"sleeper-{uuid.uuid4().hex}"
    outcome = await run_python(ws, f"# {marker}\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
    assert outcome.output.startswith("did not finish")
    assert "stdout:\nstarted" in outcome.output  # output before the kill is kept
    assert (
        "note: stopped: the run passed the 2.5 s wall-clock limit; all its processes were killed"
        in outcome.output
    )
    assert processes_with(marker) == []


async def test_sandbox_fork_bomb_is_contained_and_leaves_no_process_behind(ws: Path) -> None:
    marker = f"forkbomb-{uuid.uuid4().hex}"
    code = (
        f"# {marker}\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    outcome = await run_python(ws, code)
    assert outcome.is_error  # the code was stopped: a failed call where it is shown (its text says why)
    assert outcome.output.startswith(("did not finish", "killed"))
    assert "stopped:" in outcome.output
    assert processes_with(marker) == []


async def test_sandbox_cancelled_run_kills_every_process(ws: Path) -> None:
    """The Stop button cancels the agent's task; nothing the code started may outlive it."""
    marker = f"cancelled-{uuid.uuid4().hex}"
    code = f"# {marker}\nimport os, time\nfor _ in range(3):\n    os.fork()\ntime.sleep(60)"
    task = asyncio.create_task(run_python(ws, code, replace(LIMITS, timeout=30)))
    for _ in range(500):
        if len(processes_with(marker)) >= 8:
            break
        await asyncio.sleep(0.01)
    assert len(processes_with(marker)) >= 8
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with(marker) == []


async def test_sandbox_fork_bomb_hits_the_process_limit(ws: Path) -> None:
    outcome = await run_python(ws, "import os\nwhile True:\n    os.fork()")
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable" in outcome.output
    assert (
        "note: the process limit was reached: the code may have at most 16 processes/threads"
        in outcome.output
    )


async def test_sandbox_memory_bomb_is_stopped_by_the_memory_limit(ws: Path) -> None:
    outcome = await run_python(ws, "hog = []\nwhile True:\n    hog.append(bytearray(10**7))")
    assert outcome.output.startswith("exit code 1")
    assert "MemoryError" in outcome.output
    assert "note: the memory limit of 128 MB was reached" in outcome.output


async def test_sandbox_big_file_is_stopped_by_the_file_size_limit(ws: Path) -> None:
    outcome = await run_python(ws, "open('big.bin', 'wb').write(b'x' * 3_000_000)")
    assert "File too large" in outcome.output
    assert "note: the file size limit of 1.0 MB was reached" in outcome.output
    assert (ws / "big.bin").stat().st_size <= 1024 * 1024


async def test_sandbox_output_is_capped(ws: Path) -> None:
    outcome = await run_python(ws, "print('x' * 100_000)\nprint('tail-marker')")
    assert "[stdout truncated: 100013 bytes in all]" in outcome.output
    assert "tail-marker" not in outcome.output
    assert len(outcome.output) < 3000


async def test_sandbox_has_no_network_not_even_the_hosts_loopback(ws: Path, web: FakeWeb) -> None:
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {web.port}), timeout=2)\n"
        "    print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('refused:', e)\n"
    )
    outcome = await run_python(ws, code)
    assert "refused: [Errno 101] Network is unreachable" in outcome.output
    assert "CONNECTED" not in outcome.output
    assert web.requests == []


def test_sandbox_network_option_is_refused_with_one_line_naming_it() -> None:
    """PYTHON_NETWORK=1 used to share the host's network (loopback, private and metadata addresses)."""
    with pytest.raises(
        ConfigError, match=r"^PYTHON_NETWORK='1': is no longer supported: .*remove the setting"
    ):
        ResearchToolSettings.from_env({"PYTHON_NETWORK": "1"})
    assert not hasattr(ResearchToolSettings.from_env({"PYTHON_NETWORK": "0"}).python, "network")


async def test_sandbox_cannot_see_the_bots_secrets(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("AGENTBOT_TEST_SECRET", secret)
    dotenv = tmp_path / "bot" / ".env"
    dotenv.parent.mkdir()
    dotenv.write_text(f"OPENAI_API_KEY={secret}\n")
    dotenv.chmod(0o644)
    code = f"""
import os, glob
print(sorted(os.environ))
print('env:', {secret!r} in str(os.environ))
leaks = []
for path in glob.glob('/proc/*/environ') + ['/proc/{os.getpid()}/environ', {str(dotenv)!r}]:
    try:
        if {secret!r}.encode() in open(path, 'rb').read():
            leaks.append(path)
    except OSError:
        pass
print('leaks:', leaks)
print('pids:', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
"""
    outcome = await run_python(ws, code, replace(LIMITS, hide=(str(dotenv),)))
    assert "env: False" in outcome.output
    assert "leaks: []" in outcome.output
    assert secret not in outcome.output
    assert (
        "['HOME', 'LANG', 'LC_ALL', 'MALLOC_ARENA_MAX', 'MKL_NUM_THREADS', 'MPLBACKEND', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'PATH', 'TMPDIR']"
        in outcome.output
    )
    assert "pids: [1, 2]" in outcome.output  # its own PID namespace: the supervisor and itself


async def test_sandbox_writes_land_only_in_the_workspace(ws: Path, tmp_path: Path) -> None:
    other = tmp_path / "sessions" / "other"
    other.mkdir()
    (other / "notes.txt").write_text("another session's notes")
    marker = f"agentbot-test-{uuid.uuid4().hex}"
    targets = [
        str(ws.parent / "sibling.txt"),
        str(tmp_path / "outside.txt"),
        f"/tmp/{marker}",
        f"/var/tmp/{marker}",
        f"/dev/shm/{marker}",
        str(Path(__file__).parent / f"{marker}.py"),
        f"/etc/{marker}",
    ]
    code = f"""
open('inside.txt', 'w').write('ok')
for path in {targets!r}:
    try:
        open(path, 'w').write('escaped')
        print('wrote', path)
    except OSError as e:
        print('blocked', path, e.strerror)
try:
    print('other session:', open({str(other / "notes.txt")!r}).read())
except OSError as e:
    print('other session hidden:', e.strerror)
"""
    outcome = await run_python(ws, code)
    assert (ws / "inside.txt").read_text() == "ok"
    for path in targets:
        assert not Path(path).exists(), f"the sandbox wrote {path} on the host"
    assert "another session's notes" not in outcome.output
    assert "other session hidden: No such file or directory" in outcome.output


async def test_sandbox_files_are_shared_with_the_file_tools(ws: Path) -> None:
    registry = ToolRegistry([*python_tools(LIMITS), *file_tools(FilesSettings())])
    ctx = ToolContext(session_id="s1", workspace=ws)
    await registry.execute(
        ToolCall("a", "write_file", json.dumps({"path": "in.txt", "content": "3\n4\n"})), ctx
    )
    code = "nums = [int(x) for x in open('in.txt')]\nopen('in.txt', 'a').write(f'{sum(nums)}\\n')\nprint(sum(nums))"
    ran = await registry.execute(ToolCall("b", "run_python", json.dumps({"code": code})), ctx)
    assert "stdout:\n7" in ran.output
    read = await registry.execute(ToolCall("c", "read_file", json.dumps({"path": "in.txt"})), ctx)
    assert read.output.endswith("3\n4\n7\n")


async def test_sandbox_without_namespaces_says_so_and_still_enforces_limits(ws: Path) -> None:
    weak = replace(LIMITS, mode="rlimits", timeout=30)
    [tool] = python_tools(weak)
    assert "WARNING: this code is not isolated (PYTHON_SANDBOX=rlimits)" in tool.description
    outcome = await run_python(ws, "while True:\n    pass", weak)
    assert "note: stopped: the CPU time limit of 1 s was reached" in outcome.output


def test_one_sandbox_probe_serves_every_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # The paths hidden from runs hold DATA_DIR, and the probe hides nothing: keyed by them, every in-process
    # bot of the tests (a DATA_DIR each) ran a probe sandbox again, ~0.2 s of each start.
    import agent.tools.python_exec as python_exec

    probes: list[PythonSettings] = []
    real = python_exec._probe
    monkeypatch.setattr(python_exec, "_probe", lambda s: probes.append(s) or real(s))
    one = replace(LIMITS, max_output_chars=1237, hide=("/srv/a/data",))
    other = replace(one, hide=("/srv/b/data", "/root"))
    assert probe_sandbox(one) == probe_sandbox(other) and len(probes) == 1, probes
    assert probe_sandbox(replace(one, memory_mb=96)).namespaces and len(probes) == 2  # the rest still counts
