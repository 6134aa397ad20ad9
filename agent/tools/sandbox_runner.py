"""Supervisor for one sandboxed Python run. Standard library only: it runs as ``python -I sandbox_runner.py``.

``python_exec.py`` starts it with a minimal environment, the settings as JSON in ``argv[1]``, the program
on stdin and a status pipe on the fd named in the settings. In namespace mode it:

1. enters new user, mount, network and PID namespaces (``unshare(2)``). The sandbox user inside is uid
   1000, mapped to one outside uid: the bot's own uid, or, when the bot runs as root, an unprivileged uid
   (65534 by default) so the code never runs as real root. An unprivileged bot writes that map itself;
   a root bot's map is written by the parent, which it asks for on fd 3 (``{"need_map": true}``);
2. reads the program from stdin (the parent sends it once the map is in place);
3. forks PID 1 of the new PID namespace, which
   - mounts a fresh /proc (only the sandbox's own processes are visible),
   - makes every mount read-only, puts private tmpfs on /tmp, /var/tmp and /dev/shm, covers hidden
     paths with an empty read-only tmpfs (or /dev/null for a file), binds back read-only what must stay
     reachable inside them (the interpreter) and binds the workspace read-write,
   - drops every capability for good (bounding set, locked securebits, then ``setresuid`` to the
     sandbox user, then no_new_privs), so nothing it runs can undo those mounts,
   - sets the resource limits (RLIMIT_NPROC is counted per user namespace and uid, so each run gets its
     own process budget), and
   - forks ``python -I -B -c CODE``, reaps every process until that child ends, and reports its exit
     status, CPU seconds and peak memory as one JSON line on fd 3. When PID 1 exits the kernel kills
     whatever the code left running.

Without namespaces (``"namespaced": false``) only the resource limits apply. Any failure before the
user code starts is reported as ``{"setup_error": ...}`` and the code is not run.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import sys

STATUS_FD = 3  # replaced by the config's "status_fd"
SANDBOX_ID = 1000

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE with their _LOCKED twins, KEEP_CAPS locked off.
SECBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80

_FLAG_BITS = {
    "ro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


class SetupError(Exception):
    pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> int:
    enc = [s.encode() if s is not None else None for s in (src, target, fstype, data)]
    rc = _libc.mount(enc[0], enc[1], enc[2], flags, enc[3])
    return 0 if rc == 0 else ctypes.get_errno()


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as three octal digits."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mounts() -> list[tuple[str, int]]:
    """(mount point, per-mount flags) of every mount in our namespace, in mount order."""
    result = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            flags = 0
            for opt in fields[5].split(","):
                flags |= _FLAG_BITS.get(opt, 0)
            result.append((_unescape(fields[4]), flags))
    return result


def _keep(flags: int) -> int:
    """Flags a remount must repeat: clearing an inherited (locked) nosuid/nodev/noexec/atime flag fails."""
    kept = flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME)
    if not kept & (MS_NOATIME | MS_RELATIME):
        kept |= MS_STRICTATIME
    return kept


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _same_file(path: str, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def setup_filesystem(workspace: str, hide: list[str], expose: list[str], tmpfs_mb: int) -> None:
    """Build the sandbox's view of the filesystem; see the module docstring for the shape."""
    # Private first, or our mounts would propagate back to the host's namespace.
    for what, err in (
        ("make mounts private", _mount(None, "/", None, MS_REC | MS_PRIVATE)),
        ("mount /proc", _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)),
    ):
        if err:
            raise SetupError(f"cannot {what}: {os.strerror(err)}")
    # Hold what must stay reachable before anything covers it.
    held = [(p, os.open(p, os.O_PATH)) for p in expose if os.path.exists(p)]
    ws_fd = os.open(workspace, os.O_PATH | os.O_DIRECTORY)
    mounts = _mounts()
    ws_flags = max(((len(p), f) for p, f in mounts if _within(workspace, p)), default=(0, 0))[1]

    # 1. Every mount read-only. One we cannot reach (EACCES, ENOENT) cannot be written through either.
    for point, flags in dict(mounts).items():
        err = _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _keep(flags))
        if err and not flags & MS_RDONLY and err not in (13, 2):
            raise SetupError(f"cannot make {point} read-only: {os.strerror(err)}")

    # 2. Private scratch space, gone with the namespace.
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(d) and not os.path.islink(d):
            err = _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
            if err:
                raise SetupError(f"cannot mount a private {d}: {os.strerror(err)}")

    # 3. Hidden paths: an empty tmpfs over a directory (read-only once the binds below are in), /dev/null
    #    over a file. A path under an already hidden directory needs nothing more.
    covered: list[str] = []
    for path in sorted(set(hide), key=len):
        if any(_within(path, c) for c in covered) or not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            err = _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
            covered.append(path)
        else:
            err = _mount("/dev/null", path, None, MS_BIND)
        if err:
            raise SetupError(f"cannot hide {path}: {os.strerror(err)}")

    # 4. Bind back what hiding covered (read-only), then the workspace (read-write).
    for path, fd in held:
        if _same_file(path, fd):
            continue
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "a").close()  # a mount point for a file
        err = _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC) or _mount(
            None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        )
        if err:
            raise SetupError(f"cannot expose {path}: {os.strerror(err)}")
        os.close(fd)
    os.makedirs(workspace, exist_ok=True)
    err = _mount(f"/proc/self/fd/{ws_fd}", workspace, None, MS_BIND) or _mount(
        None, workspace, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | _keep(ws_flags)
    )
    if err:
        raise SetupError(f"cannot bind the workspace: {os.strerror(err)}")
    os.close(ws_fd)
    for d in covered:
        err = _mount(None, d, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        if err:
            raise SetupError(f"cannot make hidden {d} read-only: {os.strerror(err)}")


def become_sandbox_user(set_groups: bool) -> None:
    """Drop every capability for good and switch to the unprivileged sandbox uid."""
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())  # noqa: SIM115
    for cap in range(last_cap + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"cannot drop capability {cap}")
    _check(_libc.prctl(PR_SET_SECUREBITS, SECBITS, 0, 0, 0), "cannot lock securebits")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if set_groups:
        os.setgroups([])
    os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    # Leaving uid 0 clears capabilities, but an unprivileged bot's runner was uid 1000 all along: clear them.
    _check(
        _libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), (_CapData * 2)()), "cannot clear capabilities"
    )
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "cannot set no_new_privs")
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _tasks_of_my_uid() -> int:
    """Processes and threads of our uid: what RLIMIT_NPROC counts when there is no user namespace."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields.get("Threads", "1"))
        except (OSError, KeyError, ValueError):
            continue
    return count


def set_limits(cfg: dict[str, object], namespaced: bool) -> None:
    cpu = int(cfg["cpu_seconds"])  # type: ignore[call-overload]
    mem = int(cfg["memory_bytes"])  # type: ignore[call-overload]
    fsize = int(cfg["file_bytes"])  # type: ignore[call-overload]
    nproc = int(cfg["max_processes"])  # type: ignore[call-overload]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not namespaced:
        nproc += _tasks_of_my_uid()  # outside a user namespace the bot's own tasks count too
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _report(status: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        os.write(STATUS_FD, (json.dumps(status) + "\n").encode())


def _write_own_maps() -> None:
    uid, gid = os.getuid(), os.getgid()
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{SANDBOX_ID} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{SANDBOX_ID} {gid} 1")


def _run_code(cfg: dict[str, object], code: str, namespaced: bool, parent_maps: bool) -> int:
    """Set up (when namespaced: as PID 1), run the code, reap, report. Returns our exit status."""
    try:
        if namespaced:
            _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
            setup_filesystem(
                str(cfg["workspace"]),
                list(cfg["hide"]),  # type: ignore[call-overload]
                list(cfg["expose"]),  # type: ignore[call-overload]
                int(cfg["tmpfs_mb"]),  # type: ignore[call-overload]
            )
            become_sandbox_user(set_groups=parent_maps)
        os.chdir(str(cfg["workspace"]))
        set_limits(cfg, namespaced)
        child = os.fork()
    except (SetupError, OSError, ValueError) as e:
        _report({"setup_error": str(e)})
        return 125
    if child == 0:
        try:
            exe = str(cfg["python"])
            os.execve(exe, [exe, "-I", "-B", "-u", "-c", code], dict(os.environ))
        except OSError as e:
            os.write(2, f"sandbox: cannot start {exe}: {e.strerror}\n".encode())
        finally:
            os._exit(127)
    status: dict[str, object] = {}
    while True:
        try:
            pid, wstatus = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            if os.WIFSIGNALED(wstatus):
                status["signal"] = os.WTERMSIG(wstatus)
            else:
                status["exit"] = os.WEXITSTATUS(wstatus)
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    status["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    status["max_rss_kb"] = usage.ru_maxrss
    _report(status)
    return 0


def main() -> int:
    global STATUS_FD
    cfg = json.loads(sys.argv[1])
    STATUS_FD = int(cfg.get("status_fd", STATUS_FD))
    namespaced = bool(cfg["namespaced"])
    parent_maps = bool(cfg.get("parent_maps"))
    os.set_inheritable(STATUS_FD, False)
    if namespaced:
        flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | (0 if cfg.get("network") else CLONE_NEWNET)
        if _libc.unshare(flags) != 0:
            _report({"setup_error": f"cannot create namespaces: {os.strerror(ctypes.get_errno())}"})
            return 125
        if parent_maps:
            _report({"need_map": True})
        else:
            try:
                _write_own_maps()
            except OSError as e:
                _report({"setup_error": f"cannot map the sandbox user: {e}"})
                return 125
    code = sys.stdin.buffer.read().decode("utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if not namespaced:
        return _run_code(cfg, code, False, False)
    init = os.fork()  # the first child of a new PID namespace is its PID 1
    if init == 0:
        os._exit(_run_code(cfg, code, True, parent_maps))
    _, wstatus = os.waitpid(init, 0)
    return os.waitstatus_to_exitcode(wstatus) if os.WIFEXITED(wstatus) else 125


if __name__ == "__main__":
    sys.exit(main())
