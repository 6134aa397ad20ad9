"""The seccomp filter run_python's code runs under: the system calls that reach memory no limit counts.

Built here, installed by the run's supervisor (:mod:`agent.tools.sandbox_runner`, which gets it as hex in
its settings and keeps it across the code's ``execve``). What it refuses, with EPERM:

- ``memfd_create``: a memfd file is memory in no address space (RLIMIT_AS) and no tmpfs of the sandbox
  (PYTHON_TMPFS_MB): 200 of 5 MB held 1 GB in a run limited to 256 MB, where no cgroup counted them.
- every system call of another ABI (x32, or i386 through ``int 0x80`` on x86-64): a second way to the
  same calls under other numbers.

On an architecture not listed here there is no filter (and the run says so: ``unfiltered``).
"""

from __future__ import annotations

import platform
import struct

# (AUDIT_ARCH_*, memfd_create's number), from <linux/audit.h> and each ABI's unistd.h
_ARCHES = {"x86_64": (0xC000003E, 319), "aarch64": (0xC00000B7, 279)}
_X32 = 0x40000000  # __X32_SYSCALL_BIT
_LD_ABS_W, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, ...
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO
_EPERM, _ENOSYS = 1, 38


def unfiltered() -> str | None:
    """Why this machine's runs go without the filter, or None."""
    machine = platform.machine()
    return None if machine in _ARCHES else f"no seccomp filter for {machine}: memfd_create is not refused"


def memfd_filter() -> str:
    """The filter as the hex of a ``struct sock_filter[]`` (empty where :func:`unfiltered` says why)."""
    if (arch := _ARCHES.get(platform.machine())) is None:
        return ""
    audit_arch, memfd_create = arch
    program = [
        (_LD_ABS_W, 0, 0, 4),  # seccomp_data.arch
        (_JEQ, 1, 0, audit_arch),
        (_RET, 0, 0, _ERRNO | _ENOSYS),  # another ABI
        (_LD_ABS_W, 0, 0, 0),  # seccomp_data.nr
        (_JGE, 2, 0, _X32),
        (_JEQ, 1, 0, memfd_create),
        (_RET, 0, 0, _ALLOW),
        (_RET, 0, 0, _ERRNO | _EPERM),
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program).hex()
