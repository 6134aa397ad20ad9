"""run_python escaping its limits (session 13's sandbox review): what a hostile program did here, as root,
in namespace mode and under PYTHON_SANDBOX=rlimits, and with no cgroup for runs (monkeypatched away,
as on a host without a delegated cgroup).

They run the real sandbox with small limits, in process (no bot start): the registry's run_python
and file tools on a temporary workspace, as the agent calls them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import AgentSettings, ConfigError
from agent.tools import sandbox_cgroup, sandbox_run
from agent.tools.files import FilesSettings, file_tools
from agent.tools.python_exec import config_note, python_tools, sandbox_report
from agent.tools.registry import ToolContext
from agent.tools.research import ResearchToolSettings
from agent.tools.sandbox_run import run_sandboxed
from agent.tools.workspace import give_workspace_to
from tests.e2e.harness import running_bot
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM
from tests.test_blackbox_ask_tools import ask_cli
from tests.test_e2e_config import flat, run
from tests.test_sandbox_isolation import LIMITS, run_python


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "sessions" / "s1"
    path.mkdir(parents=True)
    return path


async def test_empty_files_in_the_private_tmp_are_bounded(ws: Path) -> None:
    """Empty files cost no bytes of the tmpfs but about 1 KB of kernel memory each, which no RLIMIT_AS
    counts: measured here, one process made 358,000 in /tmp in 2.4 CPU seconds (354 MB of slab) in a
    run limited to 256 MB. /tmp and /dev/shm now hold at most 256 files and folders per MB of their size."""
    code = (
        "import os\n"
        "for where in ('/tmp', '/dev/shm'):\n"
        "    n = 0\n"
        "    try:\n"
        "        while n < 100_000:\n"
        "            os.close(os.open(f'{where}/f{n}', os.O_CREAT | os.O_WRONLY)); n += 1\n"
        "    except OSError as e:\n"
        "        print(where, n, e.strerror)\n"
        "open('/tmp/one-more', 'w')\n"  # uncaught: the traceback the note explains
    )
    outcome = await run_python(ws, code, replace(LIMITS, tmpfs_mb=4))
    lines = [line.split() for line in outcome.output.splitlines() if line.startswith(("/tmp ", "/dev/shm "))]
    assert [(w, int(n) <= 4 * 256) for w, n, *_ in lines] == [("/tmp", True), ("/dev/shm", True)], (
        outcome.output
    )
    assert "No space left on device" in outcome.output
    assert (
        "note: the private /tmp and /dev/shm hold at most 4 MB and 1024 files and folders each"
        in outcome.output
    )


async def test_namespaces_mode_that_cannot_isolate_here_is_one_line_not_a_traceback(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """PYTHON_SANDBOX=namespaces on a host where the probe run fails: `agentbot ask` ended in a
    "crashed" log line carrying a 40-line traceback (a RuntimeError from building the tools)."""
    broken = tmp_path / "python3"  # an executable the probe run cannot use, as a kernel without userns
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    env = {"PYTHON_SANDBOX": "namespaces", "PYTHON_EXECUTABLE": str(broken)}
    code, out, err = await ask_cli(llm, tmp_path, "compute something", env=env)
    assert (code, out) == (2, ""), err
    assert err.startswith("agentbot: PYTHON_SANDBOX=namespaces but namespaces do not work here"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert llm.requests == [], "the model was asked although the bot could not start"
    # and the doctor said "run_python is OFF", as if the bot would run without it
    ok, detail = sandbox_report(replace(LIMITS, mode="namespaces", python=str(broken)))
    assert not ok and detail.startswith("agentbot run and ask refuse to start: the sandbox cannot"), detail


def test_rlimits_as_root_without_a_cgroup_refuses_to_start_and_doctor_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Root is exempt from RLIMIT_NPROC: under PYTHON_SANDBOX=rlimits, a root bot with no cgroup for runs
    let the code fork 40 processes where the limit was 2 (a fork bomb had no bound, nor the memory of
    all of them together), while the doctor said "only the CPU, memory, process, ... limits hold"."""
    monkeypatch.setattr(sandbox_cgroup, "create", lambda *_: None)
    monkeypatch.setattr(sandbox_cgroup, "available", lambda: None)
    weak = replace(LIMITS, mode="rlimits")
    with pytest.raises(ConfigError, match=r"^PYTHON_SANDBOX=rlimits: the bot runs as root with no cgroup"):
        python_tools(weak)
    ok, detail = sandbox_report(weak)
    assert not ok and detail.startswith("PYTHON_SANDBOX=rlimits: the bot runs as root with no cgroup"), detail
    assert "process" in detail and "RLIMIT_NPROC" in detail


def _processes_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if pid.isdigit() and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


async def test_a_daemon_started_without_namespaces_and_without_a_cgroup_ends_with_the_run(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a PID namespace or a cgroup (PYTHON_SANDBOX=rlimits, a bot that is not root on a host with
    no delegated cgroup), a setsid() and double fork left the process group the bot kills: it slept on
    after the run had ended (and after its wall-clock limit), as long as it liked; one that kept stdout
    open made a run that had ended report "did not finish" with its output lost (with a cgroup too)."""
    monkeypatch.setattr(sandbox_cgroup, "create", lambda *_: None)
    marker = f"daemon-{uuid.uuid4().hex}"
    daemon = (
        f"# {marker}\nimport os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.closerange(0, 3)\n"  # as daemons do: the run's pipes do not wait for it
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "print('started')\n"
    )
    weak = replace(LIMITS, mode="rlimits", timeout=2)
    ended = await run_sandboxed(daemon, ws, weak, namespaced=False)
    assert ended.stdout == "started\n", ended
    assert _processes_with(marker) == [], "a daemon outlived a run that ended"
    timed_out = await run_sandboxed(daemon + "time.sleep(60)\n", ws, weak, namespaced=False)
    assert timed_out.timed_out and timed_out.stdout == "started\n", timed_out
    assert _processes_with(marker) == [], "a daemon outlived a run stopped by its wall clock"
    # One that keeps the run's stdout open: the run waited for it, "did not finish", its output lost.
    holding = await run_sandboxed(daemon.replace("os.closerange(0, 3)", "pass"), ws, weak, namespaced=False)
    assert (holding.timed_out, holding.exit_code, holding.stdout) == (False, 0, "started\n"), holding
    assert _processes_with(marker) == []


async def test_a_run_whose_supervisor_the_memory_limit_killed_says_killed_not_exit_code_none(
    ws: Path,
) -> None:
    """Kernel memory (here: empty files in a large /tmp) is charged to the run's cgroup but belongs to no
    process, so the OOM killer took the run's PID 1 and nothing reported an exit status: the model read
    "exit code None" above the note that the memory limit was reached."""
    code = "import os\nn = 0\nwhile True:\n    os.close(os.open(f'/tmp/f{n}', os.O_CREAT | os.O_WRONLY)); n += 1\n"
    outcome = await run_python(ws, code, replace(LIMITS, memory_mb=64, tmpfs_mb=1024))
    assert outcome.is_error, outcome.output
    assert outcome.output.startswith("killed (SIGKILL)"), outcome.output
    assert "None" not in outcome.output
    assert (
        "note: stopped: the run's memory limit of 64 MB (all its processes together) was reached"
        in outcome.output
    )


COUNT_TASKS = """
import os, threading, time
ev, n = threading.Event(), 1
try:
    while True:
        if {threads}:
            threading.Thread(target=ev.wait).start()
        elif os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
except (RuntimeError, OSError) as e:
    print('tasks', n, e)
    ev.set()
    raise
"""


async def test_the_code_gets_as_many_processes_and_threads_as_the_limit_says(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYTHON_MAX_PROCESSES=16 let the code start 7 threads (glibc reserved a 64 MB malloc arena per thread
    out of the address-space limit; 15 of 32 at the defaults) and the note said "at most 16
    processes/threads"; the run's PID 1 counted against the code's limit too, so without a cgroup at
    256 MB ("at most 2") the code could not fork once."""
    threads = await run_python(ws, COUNT_TASKS.format(threads=True))
    assert "tasks 16 can't start new thread" in threads.output, threads.output
    assert (
        "note: the process limit was reached: the code may have at most 16 processes/threads"
        in threads.output
    )
    monkeypatch.setattr(sandbox_cgroup, "create", lambda *_: None)
    forks = await run_python(ws, COUNT_TASKS.format(threads=False))
    assert "tasks 2 [Errno 11] Resource temporarily unavailable" in forks.output, forks.output
    assert (
        "note: the process limit was reached: the code may have at most 2 processes/threads" in forks.output
    )


def _as_bot_user(ws: Path, job: str) -> str:
    """Run ``job`` (Python, with ``ws`` and the file tools at hand) in a fork that drops to uid 65534, the
    workspace's owner: a bot that is not root, whose sandbox user maps to its own uid. (The sandbox itself
    cannot start under that uid here: the interpreter lives under /root, mode 0700.)"""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        out = "crashed"
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            tools = {t.name: t.fn for t in file_tools(FilesSettings(quota_bytes=1_000_000))}
            scope = {"ws": ws, "tools": tools, "ctx": ToolContext(session_id="s1", workspace=ws), "os": os}
            exec(job, scope)
            out = str(scope["result"])
        except BaseException as e:
            out = f"{type(e).__name__}: {e}"
        finally:
            os.write(write, out.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    return said


def test_a_folder_the_code_made_unreadable_still_counts_against_the_quota_of_a_bot_that_is_not_root() -> None:
    """The code runs as the bot's own uid when the bot is not root. A folder it wrote 2 MB into and then
    chmod'ed 0300 (or 0600: names readable, sizes not) was skipped by every walk: the workspace measured
    0 bytes against a 1 MB quota (more runs and writes went on filling the disk), and delete_file could
    not remove it ("Permission denied")."""
    job = (
        "for name, mode in (('hidden', 0o300), ('blind', 0o600)):\n"
        "    (ws / name).mkdir()\n"
        "    (ws / name / 'big.bin').write_bytes(b'x' * 1_000_000)\n"
        "    os.chmod(ws / name, mode)\n"
        "os.chmod(ws, 0o300)\n"  # the workspace itself too
        "listed = tools['list_files'](ctx=ctx)\n"
        "try:\n"
        "    deleted = tools['delete_file']('hidden', ctx=ctx)\n"
        "except Exception as e:\n"
        "    deleted = repr(e)\n"
        "result = listed + '\\n' + deleted\n"
    )
    home = Path(tempfile.mkdtemp(prefix="agentbot-nonroot-"))  # pytest's tmp_path is root's alone (0700)
    home.chmod(0o711)
    ws = home / "ws"
    ws.mkdir()
    os.chown(ws, 65534, 65534)
    try:
        said = _as_bot_user(ws, job)
    finally:
        shutil.rmtree(home)
    assert said.startswith("2 file(s); workspace uses 1.9 MB of 976.6 KB\n"), said
    assert "over quota: it holds 1.9 MB, over its quota of 976.6 KB" in said
    assert said.endswith("deleted the folder hidden (2 entries)"), said


async def test_the_code_cannot_make_a_user_namespace_of_its_own(ws: Path) -> None:
    """In a user namespace of its own the code was root again: it mounted a tmpfs of any size and filled
    400 MB of memory in a run limited to 256 MB (no per-process limit counts tmpfs pages; only a cgroup,
    where the host gives one, stopped it)."""
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000 | 0x00020000), os.strerror(ctypes.get_errno()))\n"
    )
    outcome = await run_python(ws, code)
    assert "unshare -1 No space left on device" in outcome.output, outcome.output


async def test_system_v_shared_memory_and_message_queues_are_bounded(ws: Path) -> None:
    """System V shared memory outlives its attachments and message queues are kernel memory: no
    per-process limit counts either. Measured, 8 segments of 50 MB held 400 MB and 20,000 queues 320 MB
    in runs limited to 256 MB, where no cgroup stopped them. Now shared memory is bounded like /dev/shm
    (PYTHON_TMPFS_MB) and queues to 64 (16 KB each)."""
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype, libc.shmat.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
held = 0
for _ in range(10):
    sid = libc.shmget(0, ctypes.c_size_t(1 << 20), 0o1000 | 0o600)
    if sid < 0 or libc.shmat(sid, None, 0) in (None, ctypes.c_void_p(-1).value):
        break
    held += 1
queues = 0
while queues < 1000 and libc.msgget(0, 0o1000 | 0o600) >= 0:
    queues += 1
print('shm MB', held, 'queues', queues, os.strerror(ctypes.get_errno()))
"""
    outcome = await run_python(ws, code, replace(LIMITS, tmpfs_mb=4))
    assert "shm MB 4 queues 64 No space left on device" in outcome.output, outcome.output


async def test_memfd_files_cannot_hold_memory_past_the_limit(ws: Path) -> None:
    """A memfd file is memory that belongs to no address space and no tmpfs of the sandbox: 200 of 5 MB
    held 1 GB in a run limited to 256 MB ("peak memory 11 MB"), where no cgroup stopped them (256 open
    files of PYTHON_FILE_SIZE_MB each per process). memfd_create is refused; ctypes callbacks, which may
    use one, still work."""
    code = (
        "import ctypes, os\n"
        "try:\n"
        "    os.memfd_create('hold')\n"
        "except OSError as e:\n"
        "    print('memfd:', e.strerror)\n"
        "twice = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: 2 * x)\n"
        "print('callback:', twice(21))\n"
    )
    outcome = await run_python(ws, code)
    assert "memfd: Operation not permitted\ncallback: 42" in outcome.output, outcome.output


async def test_config_show_says_when_run_python_is_not_the_isolated_tool_it_seems(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """With PYTHON_SANDBOX=rlimits (the operator's choice: code runs with the bot's rights, files and
    network) /config show listed `run_python` under "On" like any tool, so a server's admins had no way
    to know that enabling it let members' prompts read the bot's token. Same for a run_python that auto
    turned off on this host: "On", though every call is refused."""
    async with running_bot(fake, llm, tmp_path, guild, agent_env={"PYTHON_SANDBOX": "rlimits"}):
        show = flat(await run(fake, guild, "config show"))
    tools = show.split("Tools\n", 1)[1].split("\nResearch\n", 1)[0]
    on = next(line for line in tools.splitlines() if line.startswith("On: "))
    assert "`run_python`" in on, tools  # still on: the admin's switch, not ours
    assert "`run_python` runs code NOT isolated on this host (PYTHON_SANDBOX=rlimits)" in tools, tools
    # auto on a host where the sandbox cannot run: the tool the model gets only says so
    [off_here] = python_tools(replace(LIMITS, mode="auto", python="/nonexistent/python3"))
    assert config_note(off_here) == (
        "is unavailable on this host (its sandbox cannot isolate code here): every call is refused"
    )
    assert config_note(python_tools(LIMITS)[0]) is None


async def test_a_daemon_is_stopped_with_a_run_that_passed_its_quota(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quota watcher killed the runner's process group only: without a PID namespace or a cgroup, a
    detached process went on writing into the workspace after its run was stopped for passing the quota."""
    monkeypatch.setattr(sandbox_cgroup, "create", lambda *_: None)
    marker = f"writer-{uuid.uuid4().hex}"
    code = (
        f"# {marker}\nimport os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.closerange(0, 3)\n"
        "        for n in range(100_000):\n"
        "            open(f'f{n % 50}', 'wb').write(b'x' * 100_000)\n"
        "            time.sleep(0.01)\n"
        "    os._exit(0)\n"
        "time.sleep(60)\n"
    )
    weak = replace(LIMITS, mode="rlimits", timeout=30, quota_bytes=1_000_000)
    stopped = await run_sandboxed(code, ws, weak, namespaced=False)
    assert stopped.over_quota and not stopped.timed_out, stopped
    assert _processes_with(marker) == [], "a daemon went on writing after its run passed the quota"


async def test_a_bound_the_kernel_will_not_set_is_said_and_the_run_still_runs(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kernels before 5.17 keep the IPC sysctls read-only in a user namespace: a failed write must not turn
    run_python off (Debian 11 and Ubuntu 22.04 run such kernels), nor pass unsaid: the run's notice (the
    start-up log and the doctor show the probe run's) names what does not hold."""
    real = sandbox_run.sysctls
    monkeypatch.setattr(sandbox_run, "sysctls", lambda mb: real(mb) | {"/proc/sys/kernel/cap_last_cap": "1"})
    ran = await run_sandboxed("print('ran')", ws, LIMITS, namespaced=True)
    assert (ran.setup_error, ran.stdout) == (None, "ran\n"), ran
    assert ran.notice == (
        "/proc/sys/kernel/cap_last_cap cannot be set here (Permission denied): that bound does not hold"
    ), ran.notice


async def test_the_code_cannot_end_its_supervisor_with_a_signal(ws: Path) -> None:
    """PID 1 of the sandbox (the supervisor that reaps and reports) kept Python's SIGINT handler, so the
    code's os.kill(1, SIGINT) ended it with a traceback, the whole run with it: "exit code None", not failed."""
    code = (
        "import os, signal, time\n"
        "for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):\n"
        "    os.kill(1, sig)\n"
        "time.sleep(0.3)\n"
        "print('still here')\n"
    )
    outcome = await run_python(ws, code)
    assert outcome.output.startswith("exit code 0"), outcome.output
    assert "still here" in outcome.output and "KeyboardInterrupt" not in outcome.output


def test_the_model_is_told_the_limits_that_hold_without_a_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a cgroup for runs the limits are per process (their product within the memory limit):
    256 MB gave 2 processes of 128 MB each, but the tool's description told the model "256 MB memory,
    16 processes", so a Pool(8) it planned on failed at the second fork."""
    monkeypatch.setattr(sandbox_cgroup, "available", lambda: None)
    [tool] = python_tools(LIMITS)
    assert "256 MB memory in at most 2 processes/threads of 128 MB each" in tool.description, tool.description
    monkeypatch.setattr(sandbox_cgroup, "available", lambda: "cgroup v1 (memory and pids limits per run)")
    [tool] = python_tools(replace(LIMITS, cpu_seconds=6))  # another settings: probe_sandbox caches per one
    assert "256 MB memory for all its processes, 16 processes/threads" in tool.description, tool.description


async def test_no_setuid_file_outlives_a_run_and_the_workspace_stays_its_owners(ws: Path) -> None:
    """The code could chmod its workspace 0755 and leave a setuid, setgid copy of /bin/sh in it: on the host
    that file is owned by the sandbox user (the bot's own user when the bot is not root), for any local
    user to run as that user (nosuid holds only inside the sandbox). Measured: -rwsr-sr-x nobody."""
    code = (
        "import os, shutil\n"
        "os.chmod('.', 0o755)\n"
        "shutil.copyfile('/bin/sh', 'sh')\n"
        "os.chmod('sh', 0o6755)\n"
        "os.mkdir('d')\n"
        "shutil.copyfile('/bin/sh', 'd/sh2')\n"
        "os.chmod('d/sh2', 0o4711)\n"
        "print(oct(os.stat('sh').st_mode & 0o7777))\n"
    )
    outcome = await run_python(ws, code)
    assert "0o6755" in outcome.output, outcome.output  # the code may do it inside, where nosuid holds
    modes = {p: oct(p.stat().st_mode & 0o7777) for p in (ws.parent, ws, ws / "sh", ws / "d" / "sh2")}
    # the workspaces' folder too (DATA_DIR/workspaces was 0755): during a run as well, no local user reaches in
    assert modes == {ws.parent: "0o700", ws: "0o700", ws / "sh": "0o755", ws / "d" / "sh2": "0o711"}, modes


def test_the_doctor_does_not_promise_limits_a_root_bot_cannot_hold_under_rlimits() -> None:
    """Under PYTHON_SANDBOX=rlimits a root bot's code is root: it wrote its pid into the root cgroup's
    cgroup.procs and forked 40 processes past a limit of 16 (and allocated 400 MB in a 256 MB run), while
    the doctor said "only the CPU, memory, process, file-size and time limits hold"."""
    ok, detail = sandbox_report(replace(LIMITS, mode="rlimits"))
    assert ok and detail.startswith("WARNING: PYTHON_SANDBOX=rlimits: run_python code is NOT isolated"), (
        detail
    )
    assert detail.endswith(
        "; no limit holds against code that tries: it runs as the user that owns its cgroup and can move "
        "itself out of it (as root, raise its limits and kill the bot too); the limits only stop accidents"
    ), detail


async def test_a_bot_deployed_under_usr_keeps_its_directory_out_of_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/usr is bound into the sandbox whole, and Docker images often run from /usr/src/app: with the bot
    there, the code read its .env.bak, the MCP servers file with the servers' Authorization headers, and,
    with DATA_DIR at its default ./data, the database (every server's conversations) and other sessions'
    workspaces: DATA_DIR was not hidden, being an ancestor of the run's own workspace."""
    with tempfile.TemporaryDirectory(dir="/usr/local", prefix="agentbot-deploy-") as deploy:
        Path(deploy).chmod(0o755)  # as a deployment is (mkdtemp made it its owner's alone)
        secrets = {
            ".env": "DISCORD_TOKEN=now\n",
            ".env.bak": "DISCORD_TOKEN=before\n",
            "mcp.toml": '[servers.s]\nurl = "https://mcp.example"\nheaders = {Authorization = "Bearer sk-1"}\n',
            "data/agentbot.sqlite3": "every server's conversations",
            "data/workspaces/other/notes.md": "another session's notes",
        }
        for name, text in secrets.items():
            Path(deploy, name).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            Path(deploy, name).write_text(text)
            Path(deploy, name).chmod(0o644)
        ws = Path(deploy, "data", "workspaces", "s1")
        ws.mkdir()
        give_workspace_to(ws, LIMITS.sandbox_uid, LIMITS.sandbox_gid)
        monkeypatch.chdir(deploy)
        agent = AgentSettings(MCP_SERVERS_FILE=str(Path(deploy, "mcp.toml")))
        python = ResearchToolSettings.from_settings(agent, "./data").python
        code = (
            "import os\n"
            f"for name in {sorted(secrets)!r}:\n"
            "    try:\n"
            f"        print(name, open(os.path.join({deploy!r}, name)).read().strip() or 'unreadable')\n"
            "    except OSError as e:\n"
            "        print(name, 'unreadable')\n"
            "print(open('/workspace/mine.txt', 'w').write('mine'))\n"
        )
        ran = await run_sandboxed(code, ws, replace(python, timeout=10), namespaced=True)
        mine = (ws / "mine.txt").read_text()
    assert ran.stdout.splitlines() == [f"{name} unreadable" for name in sorted(secrets)] + ["4"], ran
    assert mine == "mine"


async def test_a_bot_run_from_tmp_leaves_the_sandbox_its_own_tmp(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hidden paths are host paths; applied inside the new root, a working directory of /tmp (`agentbot
    ask` run from there) covered the sandbox's private /tmp with a read-only one, and tempfile wrote into
    the workspace instead. Only what lies inside what the sandbox shows of the host is hidden now."""
    monkeypatch.chdir("/tmp")
    python = ResearchToolSettings.from_settings(AgentSettings(), "./data").python
    ran = await run_sandboxed(
        "import tempfile\nprint(tempfile.gettempdir())", ws, replace(python, timeout=10), namespaced=True
    )
    assert ran.stdout == "/tmp\n", ran
