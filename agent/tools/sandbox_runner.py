"""Supervisor for one sandboxed Python run. Standard library only: it runs as ``python -I -c <this file>``.

``python_exec.py`` starts it with a minimal environment, the status pipe's fd in ``argv[1]``, and on
stdin the settings (one JSON line) then the program. Nothing else goes on its command line, which the
code can read (``/proc/1/cmdline`` is PID 1, a fork of this runner): the settings name host paths.
It joins the run's cgroup when the settings name one (:mod:`agent.tools.sandbox_cgroup`). In
namespace mode it then enters new user, mount, PID, network, IPC, UTS and cgroup namespaces (the
sandbox user, uid 1000 inside, maps to the bot's uid or, for a root bot, an unprivileged one, written
by the parent on ``{"need_map": true}``), reads the program, and forks PID 1 of the new PID namespace,
which builds the allow-listed root README's run_python section describes (:func:`setup_filesystem`;
the workspace an overlay named by descriptor so /proc/self/mountinfo shows no host path, or a bind
mount and a ``{"notice": ...}`` where overlayfs cannot be mounted), drops every capability for good,
sets the per-process limits and forks ``python -I -B -c CODE``, reaping every process until it ends
and reporting exit status, CPU seconds and peak memory as one JSON line on the status pipe; when PID 1
exits the kernel kills whatever the code left running. Without namespaces (``PYTHON_SANDBOX=rlimits``) the
limits apply, and we (a subreaper) kill what it left. A setup failure is ``{"setup_error": ...}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import resource
import signal
import struct
import sys

STATUS_FD = 3  # replaced by argv[1], the status pipe python_exec passes
SANDBOX_ID = 1000

# unshare(2) flags, from <linux/sched.h>
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NAMESPACES = (
    CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
)
MNT_DETACH = 2
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# What of the host the sandbox sees (read-only): the OS's programs and libraries, the interpreter's
# prefixes (from the config), these files of /etc, and these devices. Nothing else.
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "mime.types", "fonts")
DEVICES = ("null", "zero", "full", "random", "urandom")

# mount(2) flags, from <sys/mount.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24

# prctl(2) options, from <linux/prctl.h>
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 4, 24, 28
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_SET_CHILD_SUBREAPER = 38, 47, 4, 36
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
# NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE with their _LOCKED twins, KEEP_CAPS locked off.
SECBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class SetupError(Exception):
    pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(
    what: str, src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    enc = [s.encode() if s is not None else None for s in (src, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"cannot {what}")


def _kept_flags(path: str) -> int:
    """Flags a read-only remount of a bind must repeat: clearing a locked inherited flag fails (EPERM)."""
    f = os.statvfs(path).f_flag
    kept = MS_NOSUID | MS_NODEV | (MS_NOEXEC if f & os.ST_NOEXEC else 0)
    if f & os.ST_NOATIME:
        kept |= MS_NOATIME
    elif f & os.ST_RELATIME:
        kept |= MS_RELATIME
    else:
        kept |= MS_STRICTATIME
    return kept | (MS_NODIRATIME if f & os.ST_NODIRATIME else 0)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _bind(fd_or_path: int | str, target: str, *, writable: bool) -> None:
    """Bind a held descriptor (or a path) onto ``target`` in the new root, read-only unless asked."""
    src = f"/proc/self/fd/{fd_or_path}" if isinstance(fd_or_path, int) else fd_or_path
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()  # a mount point for a file
    _mount(f"bind {target}", src, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | _kept_flags(target) | (0 if writable else MS_RDONLY)
    _mount(f"make {target} {'private' if writable else 'read-only'}", None, target, None, flags)


def _pivot_root(new_root: str) -> None:
    number = PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise SetupError(f"pivot_root: unknown system call number on {platform.machine()}")
    os.chdir(new_root)
    _check(_libc.syscall(number, b".", b"."), "cannot pivot_root")
    # The old root now sits under the new one at "/": detach it, and with it every host mount.
    _check(_libc.umount2(b".", MNT_DETACH), "cannot detach the host's filesystem")
    os.chdir("/")


def _mount_workspace(ws_fd: int, lower_fd: int, work_fd: int | str, target: str) -> str | None:
    """The workspace at ``target`` without its host path in the mount table; else a bind, and why
    (``work_fd``: the overlay's work directory, or why there is none)."""
    os.makedirs(target, exist_ok=True)
    if isinstance(work_fd, int):
        fds = {"lowerdir": lower_fd, "upperdir": ws_fd, "workdir": work_fd}
        # userxattr: overlayfs's own marks as user.overlay.* (trusted.* needs the host's root): without it a
        # directory could not be renamed at the workspace's top (EXDEV).
        layers = ",".join(f"{k}=/proc/self/fd/{fd}" for k, fd in fds.items()) + ",userxattr"
        try:
            _mount("mount it as an overlay", "overlay", target, "overlay", MS_NOSUID | MS_NODEV, layers)
            return None
        except SetupError as e:
            why = str(e)
    else:
        why = work_fd
    _bind(ws_fd, target, writable=True)
    return f"the workspace's host path shows in /proc/self/mountinfo here ({why})"


def setup_filesystem(cfg: dict[str, object]) -> str | None:
    """Build a new root that holds only what the module docstring lists, and switch to it. Returns
    what could not be hidden here (for the status pipe), or None."""
    workspace, inside = str(cfg["workspace"]), str(cfg["inside"])
    # nr_inodes (sandbox_run.INODES_PER_MB): an empty file costs no bytes of the tmpfs but kernel memory.
    tmpfs = f"size={int(cfg['tmpfs_mb'])}m,nr_inodes={int(cfg['tmpfs_inodes'])},mode=1777"  # type: ignore[call-overload]
    # Private first, or our mounts would propagate back to the host's namespace.
    _mount("make mounts private", None, "/", None, MS_REC | MS_PRIVATE)
    # Hold everything to bind before covering /tmp (the workspace or the runtime may live under it).
    runtime = [p for p in list(cfg["expose"]) if os.path.exists(p)]  # type: ignore[call-overload]
    held = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in runtime}
    ws_fd = os.open(workspace, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    work_fd: int | str = "no overlay work directory could be made beside the workspace"
    if cfg.get("overlay_work"):
        try:
            work_fd = os.open(
                str(cfg["overlay_work"]), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            )
        except OSError as e:
            work_fd = f"its overlay work directory: {e.strerror}"
    etc = {n: os.path.realpath(f"/etc/{n}") for n in ETC if os.path.exists(f"/etc/{n}")}
    etc_fds = {n: os.open(p, os.O_PATH | os.O_CLOEXEC) for n, p in etc.items()}
    devices = {d: os.open(f"/dev/{d}", os.O_PATH | os.O_CLOEXEC) for d in DEVICES}
    new = "/tmp" if os.path.isdir("/tmp") and not os.path.islink("/tmp") else "/mnt"
    _mount("make the new root", "tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")

    # /proc of our own PID namespace, a private /tmp, a /dev with the harmless devices only.
    os.mkdir(f"{new}/proc")
    _mount("mount /proc", "proc", f"{new}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir(f"{new}/tmp")
    # The overlay's empty lower layer: this directory, once /tmp covers it, is reachable by no path.
    lower_fd = os.open(f"{new}/tmp", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    _mount("mount a private /tmp", "tmpfs", f"{new}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    os.mkdir(f"{new}/dev")
    _mount("mount /dev", "tmpfs", f"{new}/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name, fd in devices.items():
        open(f"{new}/dev/{name}", "a").close()
        _mount(f"bind /dev/{name}", f"/proc/self/fd/{fd}", f"{new}/dev/{name}", None, MS_BIND)
    os.mkdir(f"{new}/dev/shm")
    _mount("mount /dev/shm", "tmpfs", f"{new}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    os.symlink("/proc/self/fd", f"{new}/dev/fd")
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", f"{new}/dev/{name}")

    # The operating system's programs and libraries, read-only; merged-/usr links stay links.
    for path in SYSTEM:
        if os.path.islink(path):
            os.symlink(os.readlink(path), f"{new}{path}")
        elif os.path.isdir(path):
            _bind(path, f"{new}{path}", writable=False)
    # The interpreter's own prefixes (a venv, a pyenv build), read-only, unless already inside one.
    bound = [p for p in SYSTEM if os.path.isdir(p) and not os.path.islink(p)]
    for path in sorted(runtime, key=len):
        if not any(_within(path, b) for b in bound):
            _bind(held[path], f"{new}{path}", writable=False)
            bound.append(path)
    # A few files from /etc, and a passwd naming only the sandbox user.
    os.makedirs(f"{new}/etc", exist_ok=True)
    _write(f"{new}/etc/passwd", f"sandbox:x:{SANDBOX_ID}:{SANDBOX_ID}:sandbox:{inside}:/bin/sh\n")
    _write(f"{new}/etc/group", f"sandbox:x:{SANDBOX_ID}:\n")
    for name, fd in etc_fds.items():
        _bind(fd, f"{new}/etc/{name}", writable=False)
    os.makedirs(f"{new}/var", exist_ok=True)
    os.symlink("../tmp", f"{new}/var/tmp")
    # The workspace, the only writable place that outlives the run, where the code sees it.
    notice = _mount_workspace(ws_fd, lower_fd, work_fd, f"{new}{inside}")
    opened = [*held.values(), ws_fd, lower_fd, *etc_fds.values(), *devices.values()]
    for fd in [*opened, *([work_fd] if isinstance(work_fd, int) else [])]:
        os.close(fd)

    _pivot_root(new)
    for path in sorted(set(list(cfg["hide"])), key=len):  # type: ignore[call-overload]
        if os.path.isdir(path) and not os.path.islink(path):
            _mount(
                f"hide {path}", "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=755"
            )
        elif os.path.lexists(path) and not os.path.islink(path):
            _mount(f"hide {path}", "/dev/null", path, None, MS_BIND)
    for point in ("/", "/dev"):
        _mount(
            f"make {point} read-only",
            None,
            point,
            None,
            MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(point),
        )
    return notice


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


def _filter(program: str) -> None:
    """Install sandbox_seccomp's filter (what it refuses, and why, is said there); kept across execve."""
    if program:
        code = ctypes.create_string_buffer(bytes.fromhex(program))
        fprog = ctypes.create_string_buffer(struct.pack("HP", len(program) // 16, ctypes.addressof(code)))
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "cannot set no_new_privs")
        _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _report(status: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        os.write(STATUS_FD, (json.dumps(status) + "\n").encode())


def _write_own_maps() -> None:
    uid, gid = os.getuid(), os.getgid()
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{SANDBOX_ID} {uid} 1")
    _write("/proc/self/gid_map", f"{SANDBOX_ID} {gid} 1")


def _run_code(cfg: dict[str, object], code: str, namespaced: bool, parent_maps: bool) -> int:
    """Set up (when namespaced: as PID 1), run the code, reap, report. Returns our exit status."""
    try:
        if namespaced:
            if notice := setup_filesystem(cfg):
                _report({"notice": notice})
            _libc.sethostname(b"sandbox", 7)
            for path, value in dict(cfg["sysctls"]).items():  # type: ignore[call-overload]
                try:  # sandbox_run.sysctls says why each; a kernel before 5.17 keeps IPC's read-only here
                    _write(path, value)
                except OSError as e:
                    _report({"notice": f"{path} cannot be set here ({e.strerror}): that bound does not hold"})
            become_sandbox_user(set_groups=parent_maps)
            # After the user change, which clears it: PID 1 dies with the runner, the namespace with it (a
            # runner gone in the microseconds before cannot be seen: getppid() is 0 in a new PID namespace).
            _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
            # With Python's handler the code's kill(1, SIGINT) ended us; init is deaf to SIG_DFL ones.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.chdir(str(cfg["inside"]))  # the host's path without namespaces (nothing moved it)
        _filter(str(cfg["seccomp"]))
        for name, limit in dict(cfg["rlimits"]).items():  # type: ignore[call-overload]
            resource.setrlimit(getattr(resource, name), tuple(limit))  # sandbox_run.rlimits
        child = os.fork()
    except (SetupError, OSError, ValueError) as e:
        _report({"setup_error": str(e)})
        return 125
    if child == 0:
        try:
            _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # without namespaces: dies with the runner
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
                status["exit_code"] = os.WEXITSTATUS(wstatus)
            break
    if not namespaced:
        _end_orphans()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    status["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    status["max_rss_kb"] = usage.ru_maxrss
    _report(status)
    return 0


def _end_orphans() -> None:
    """Without a PID namespace what the code left (a setsid() daemon) comes back to us, a subreaper: end it."""
    me = os.getpid()
    while True:
        try:
            kids = open(f"/proc/{me}/task/{me}/children").read().split()  # noqa: SIM115
        except OSError:  # a kernel without CONFIG_PROC_CHILDREN: never wait on one we cannot kill
            return
        for pid in kids:
            with contextlib.suppress(OSError):
                os.kill(int(pid), 9)
        try:
            os.waitpid(-1, 0)  # one we killed; its children are ours now: look again
        except ChildProcessError:
            return


def main() -> int:
    global STATUS_FD
    STATUS_FD = int(sys.argv[1])
    cfg = json.loads(sys.stdin.buffer.readline())  # the program follows on stdin (read below)
    namespaced, parent_maps = bool(cfg["namespaced"]), bool(cfg.get("parent_maps"))
    os.set_inheritable(STATUS_FD, False)
    # Die with the bot: killed with -9 (or OOM), it cannot stop us, and the code would run on unbounded.
    # PID 1 of the namespace dies with us in turn, taking the whole PID namespace along.
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if os.getppid() == 1:  # the bot died before the line above
        return 125
    try:
        for procs in cfg.get("cgroup_procs", []):  # join the run's cgroup before anything else starts
            _write(procs, str(os.getpid()))
    except OSError as e:
        _report({"setup_error": f"cannot join the run's cgroup: {e}"})
        return 125
    if namespaced:
        if _libc.unshare(NAMESPACES) != 0:
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
    os.dup2(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), 0)  # fd 0 without CLOEXEC: the code's stdin
    if not namespaced:  # the code's orphans come back to us, a subreaper: _end_orphans
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return _run_code(cfg, code, False, False)
    init = os.fork()  # the first child of a new PID namespace is its PID 1
    if init == 0:
        os._exit(_run_code(cfg, code, True, parent_maps))
    _, wstatus = os.waitpid(init, 0)
    return os.waitstatus_to_exitcode(wstatus) if os.WIFEXITED(wstatus) else 125


if __name__ == "__main__":
    sys.exit(main())
