"""The workspace as a tree: walk it, measure it, lock it, delete folders and hand it to the sandbox user.

Every walk here is iterative and descriptor-based and never follows a link: sandboxed code can make
trees of any depth, swap folders for links while the bot works, and name files anything. At most
``MAX_DEPTH`` folders are held open at once; deeper trees are reported (``Usage.too_deep``) and count
as over the quota instead of breaking later walks (a recursive walk raised RecursionError forever).
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 32
"""Folders a path may go down. Deeper trees (only sandboxed code can make them) count as over the quota."""


@dataclass(frozen=True, slots=True)
class Usage:
    """What a workspace holds. ``complete`` is False when the walk stopped early (``limit`` reached)."""

    bytes: int = 0
    entries: int = 0
    too_deep: bool = False
    complete: bool = True

    def over(self, quota_bytes: int, quota_files: int) -> str | None:
        """Why this usage is over the quota, in words for the model; None when within it."""
        if self.too_deep:
            return f"it holds folders nested deeper than {MAX_DEPTH} levels"
        if self.bytes > quota_bytes:
            return f"it holds {human_size(self.bytes)}, over its quota of {human_size(quota_bytes)}"
        if self.entries > quota_files:
            more = "" if self.complete else " or more"
            return f"it holds {self.entries}{more} files and folders, over its limit of {quota_files}"
        return None


class Held:
    """A lock that can be held in a WeakValueDictionary (a bare Lock cannot)."""

    __slots__ = ("__weakref__", "lock")

    def __init__(self, lock: Any) -> None:
        self.lock = lock


_locks: weakref.WeakValueDictionary[str, Held] = weakref.WeakValueDictionary()
_locks_guard = threading.Lock()


@contextmanager
def workspace_lock(ws: Path) -> Iterator[None]:
    with _locks_guard:
        holder = _locks.get(str(ws))
        if holder is None:
            holder = _locks[str(ws)] = Held(threading.Lock())
    with holder.lock:
        yield


def _chmod(name: str | Path, dir_fd: int | None, mode: int) -> None:
    """chmod ``name`` through an O_PATH descriptor of that very entry: a link swapped in cannot redirect it."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISLNK(os.fstat(fd).st_mode):
            os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def defuse(ws: Path) -> int:
    """After a run: no setuid or setgid file is left, and the workspace is its owner's alone (0700); the
    entries changed. The code could chmod its workspace 0755 and leave a setuid copy of /bin/sh there,
    owned on the host by the sandbox user (the bot's own user when the bot is not root), for any local user
    to run as that user: nosuid holds only inside the sandbox."""
    changed = 0
    with suppress(OSError):
        if stat.S_IMODE(os.stat(ws, follow_symlinks=False).st_mode) != 0o700:
            _chmod(ws, None, 0o700)
            changed += 1
    for e in Walk(ws):
        if stat.S_ISREG(e.st.st_mode) and e.st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            with suppress(OSError):
                _chmod(e.name, e.dir_fd, stat.S_IMODE(e.st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
                changed += 1
    return changed


def open_dir(name: str | Path, dir_fd: int | None = None) -> int:
    """The folder ``name`` in ``dir_fd``, opened without following a link. One of ours that lacks its
    owner's rwx gets it back first: a bot that is not root runs the code as its own uid, and a folder the
    code filled and then chmod'ed 0300 (0600: names but no sizes) hid 2 MB from every walk (a quota of 1 MB
    measured 0 B) and from delete_file. Changed through an O_PATH descriptor of that very folder, so a
    link swapped in cannot redirect the change."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() != 0 and st.st_mode & 0o700 != 0o700:
        _chmod(name, dir_fd, stat.S_IMODE(st.st_mode) | 0o700)
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    """Relative to the workspace, with ``/`` separators."""
    st: os.stat_result
    name: str
    dir_fd: int
    """The folder holding it: valid only while the walk is at this entry."""


class Walk:
    """Every entry of a workspace, depth first. A folder deeper than ``MAX_DEPTH`` is reported (as an
    entry) but not entered, and ``too_deep`` is set. ``limit`` stops the walk after that many entries."""

    def __init__(self, ws: Path | int, limit: int | None = None) -> None:
        self.ws, self.limit = ws, limit
        self.too_deep = False
        self.complete = True

    def __iter__(self) -> Iterator[Entry]:
        try:
            top = open_dir(self.ws) if not isinstance(self.ws, int) else os.dup(self.ws)
        except OSError:
            return
        stack = [(top, "", os.scandir(top))]
        count = 0
        try:
            while stack:
                dfd, rel, it = stack[-1]
                entry = next(it, None)
                if entry is None:
                    it.close()
                    os.close(dfd)
                    stack.pop()
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                count += 1
                if self.limit is not None and count > self.limit:
                    self.complete = False
                    return
                path = rel + entry.name
                yield Entry(path, st, entry.name, dfd)
                if not stat.S_ISDIR(st.st_mode):
                    continue
                if len(stack) > MAX_DEPTH:
                    self.too_deep = True
                    continue
                try:
                    nfd = open_dir(entry.name, dfd)
                except OSError:
                    continue
                stack.append((nfd, path + "/", os.scandir(nfd)))
        finally:
            for dfd, _, it in stack:
                it.close()
                os.close(dfd)


def workspace_usage(workspace: Path, limit: int | None = None) -> Usage:
    """Bytes of regular files and entries (links count); ``limit``: the quota check needs no more."""
    walk = Walk(Path(workspace), limit)
    size = entries = 0
    for e in walk:
        entries += 1
        if stat.S_ISREG(e.st.st_mode):
            size += e.st.st_size
    return Usage(size, entries, walk.too_deep, walk.complete)


def regular_files(ws: Path) -> Iterator[tuple[Path, os.stat_result]]:
    for e in Walk(ws):
        if stat.S_ISREG(e.st.st_mode):
            yield Path(ws, e.path), e.st


def workspace_files(workspace: Path) -> list[Path]:
    """Regular files of a workspace, sorted: what the bot may attach to the thread. Links are skipped."""
    ws = Path(workspace)
    if not ws.is_dir():
        return []
    return sorted(p for p, _ in regular_files(ws))


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


_trash_names = itertools.count()


def remove_tree(parent_fd: int, name: str) -> int:
    """Delete the folder ``name`` with everything in it; returns entries removed. A folder deeper than
    ``MAX_DEPTH`` is first moved up next to ``name`` and then deleted in its own turn."""
    removed = 0
    pending = [name]
    while pending:
        top = pending.pop()
        stack = [(parent_fd, top, open_dir(top, parent_fd))]
        while stack:
            pfd, dname, dfd = stack[-1]
            child = None
            with os.scandir(dfd) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    with suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=dfd)
                        removed += 1
            if child is None:
                stack.pop()
                os.close(dfd)
                os.rmdir(dname, dir_fd=pfd)
                removed += 1
                continue
            if len(stack) >= MAX_DEPTH:
                moved = f".deleting-{os.getpid()}-{next(_trash_names)}"
                os.rename(child, moved, src_dir_fd=dfd, dst_dir_fd=parent_fd)
                pending.append(moved)
                continue
            stack.append((dfd, child, open_dir(child, dfd)))
    return removed


def give_workspace_to(ws: Path, uid: int, gid: int) -> int:
    """Make the workspace belong to ``uid``:``gid`` (the sandbox user of a root bot); entries changed.

    Called only while no run is active in it (run_python holds its lock), and still by descriptor
    without following links; links and files with more than one name are left alone, so nothing
    outside the workspace can be reached."""
    fd = os.open(ws, DIR_FLAGS)
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    changed = 0
    for e in Walk(ws):
        mode = e.st.st_mode
        if stat.S_ISLNK(mode) or (e.st.st_uid, e.st.st_gid) == (uid, gid):
            continue
        if not stat.S_ISDIR(mode) and e.st.st_nlink > 1:
            continue
        with suppress(OSError):
            os.chown(e.name, uid, gid, dir_fd=e.dir_fd, follow_symlinks=False)
            changed += 1
    return changed
