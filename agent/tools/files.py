"""Workspace files: read, write, list and delete inside the session's own directory.

Paths are relative to ``ctx.workspace``. Absolute paths are refused; ``..`` may move around inside
the workspace but never above it. Symlinks are never followed (the Python sandbox can create them):
each path is opened one component at a time from a directory descriptor with ``O_NOFOLLOW``, so a link
swapped in while we work cannot redirect us either. FIFOs and devices are refused.

Bounds: a per-session quota of bytes *and* entries (files, folders and links all count) covers what
every tool wrote, run_python included (:mod:`agent.tools.python_exec` checks it during a run); paths
are at most ``MAX_DEPTH`` folders deep with names of at most ``MAX_NAME_BYTES``. Every walk here is
iterative and descriptor-based, so a tree deeper than that (only sandboxed code can make one) is
counted as over the quota rather than breaking later walks. Writes and their quota check hold a
per-workspace lock, so concurrent ``write_file`` calls cannot pass the quota together.

The functions are synchronous; the registry runs them in a thread.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from agent.tools.registry import Tool, ToolContext, ToolRefused, tool

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 32
"""Folders a path may go down. Deeper trees (only sandboxed code can make them) count as over the quota."""
MAX_NAME_BYTES = 255  # NAME_MAX on Linux filesystems
MAX_PATH_CHARS = 1024


@dataclass(frozen=True, slots=True)
class FilesSettings:
    quota_bytes: int = 10 * 1024 * 1024
    quota_files: int = 1000
    """Entries (files, folders, links) a workspace may hold."""
    read_max_chars: int = 20_000
    list_max_entries: int = 300


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


class PathRefused(ToolRefused):
    """A path that would leave the workspace, follow a link or name something that is not a file."""


class _Lock:
    """A threading lock that can be held in a WeakValueDictionary (a bare Lock cannot)."""

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()


_locks: weakref.WeakValueDictionary[str, _Lock] = weakref.WeakValueDictionary()
_locks_guard = threading.Lock()


@contextmanager
def workspace_lock(ws: Path) -> Iterator[None]:
    """Serialises quota-checked writes to one workspace across threads."""
    with _locks_guard:
        holder = _locks.get(str(ws))
        if holder is None:
            holder = _locks[str(ws)] = _Lock()
    with holder.lock:
        yield


def workspace_root(ctx: ToolContext) -> Path:
    """The session's workspace, created on first use (0700: other local users have no business there)."""
    if ctx.workspace is None:
        raise ToolRefused("this session has no workspace, so file tools are unavailable")
    ws = Path(ctx.workspace)
    ws.mkdir(parents=True, exist_ok=True, mode=0o700)
    return ws.resolve()


def split_path(path: str) -> list[str]:
    """Components of a workspace-relative path, with ``.``/``..`` applied; refuses any escape."""
    p = (path or "").strip()
    if not p:
        raise PathRefused("give a path relative to the workspace, e.g. 'notes.md' or 'data/table.csv'")
    if "\0" in p:
        raise PathRefused("a path cannot contain a NUL character")
    if len(p) > MAX_PATH_CHARS:
        raise PathRefused(f"the path is longer than {MAX_PATH_CHARS} characters; use a shorter one")
    if p.startswith(("/", "~", "\\")) or (len(p) > 1 and p[1] == ":"):
        raise PathRefused(f"{path!r} is absolute; use a path relative to the workspace, e.g. 'notes.md'")
    parts: list[str] = []
    for part in p.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathRefused(f"{path!r} leads outside the workspace; stay inside it")
            parts.pop()
            continue
        if len(part.encode("utf-8", errors="replace")) > MAX_NAME_BYTES:
            raise PathRefused(f"a name in the path is longer than {MAX_NAME_BYTES} bytes; use a shorter one")
        parts.append(part)
    if len(parts) > MAX_DEPTH:
        raise PathRefused(f"the path is {len(parts)} levels deep; at most {MAX_DEPTH} are allowed")
    return parts


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


@contextmanager
def _walk_to(ws: Path, dirs: list[str], *, create: bool) -> Iterator[int]:
    """A descriptor for the directory ``ws/dirs...``, reached without following any link."""
    fd = os.open(ws, _DIR_FLAGS)
    try:
        for i, part in enumerate(dirs):
            where = "/".join(dirs[: i + 1])
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise PathRefused(f"there is no directory {where!r} in the workspace") from None
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    raise PathRefused(f"{where!r} is a symbolic link; links are not followed") from None
                if e.errno == errno.ENOTDIR:
                    raise PathRefused(f"{where!r} is a file, not a directory") from None
                raise
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _open_file(dir_fd: int, name: str, shown: str, flags: int) -> int:
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    except FileNotFoundError:
        raise PathRefused(
            f"there is no file {shown!r} in the workspace; list_files shows what exists"
        ) from None
    except IsADirectoryError:
        raise PathRefused(f"{shown!r} is a directory; list_files shows its contents") from None
    except OSError as e:
        if e.errno == errno.ELOOP or _is_link(name, dir_fd):
            raise PathRefused(f"{shown!r} is a symbolic link; links are not followed") from None
        raise PathRefused(f"cannot open {shown!r}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PathRefused(f"{shown!r} is not a regular file")
    return fd


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    """Relative to the workspace, with ``/`` separators."""
    st: os.stat_result
    name: str
    dir_fd: int
    """The folder holding it: valid only while the walk is at this entry."""


class _Walk:
    """Every entry of a workspace, depth first, iterative, by descriptor, never following a link.

    At most ``MAX_DEPTH`` folders are held open at once; a folder deeper than that is reported (as an
    entry) but not entered, and ``too_deep`` is set. ``limit`` stops the walk after that many entries.
    """

    def __init__(self, ws: Path | int, limit: int | None = None) -> None:
        self.ws, self.limit = ws, limit
        self.too_deep = False
        self.complete = True

    def __iter__(self) -> Iterator[Entry]:
        try:
            top = os.open(self.ws, _DIR_FLAGS) if not isinstance(self.ws, int) else os.dup(self.ws)
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
                    nfd = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
                except OSError:
                    continue
                stack.append((nfd, path + "/", os.scandir(nfd)))
        finally:
            for dfd, _, it in stack:
                it.close()
                os.close(dfd)


def workspace_usage(workspace: Path, limit: int | None = None) -> Usage:
    """Bytes of regular files and the number of entries in the workspace (links count as entries).

    ``limit`` stops counting past that many entries (the quota check needs no more).
    """
    walk = _Walk(Path(workspace), limit)
    size = entries = 0
    for e in walk:
        entries += 1
        if stat.S_ISREG(e.st.st_mode):
            size += e.st.st_size
    return Usage(size, entries, walk.too_deep, walk.complete)


def regular_files(ws: Path) -> Iterator[tuple[Path, int]]:
    for e in _Walk(ws):
        if stat.S_ISREG(e.st.st_mode):
            yield Path(ws, e.path), e.st.st_size


def workspace_files(workspace: Path) -> list[Path]:
    """Regular files of a workspace, sorted: what the bot may attach to the thread. Links are skipped."""
    ws = Path(workspace)
    if not ws.is_dir():
        return []
    return sorted(p for p, _ in regular_files(ws))


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def read_text(ws: Path, path: str, start: int, max_chars: int, max_bytes: int) -> str:
    parts = split_path(path)
    if not parts:
        raise PathRefused("that is the workspace itself; list_files shows what it holds")
    shown = "/".join(parts)
    with _walk_to(ws, parts[:-1], create=False) as dfd:
        fd = _open_file(dfd, parts[-1], shown, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_bytes + 1)
    if b"\0" in data[:8192]:
        return f"{shown} is a binary file ({human_size(len(data))}); it cannot be shown as text. run_python can inspect it."
    text = data[:max_bytes].decode("utf-8", errors="replace")
    total = len(text)
    start = min(start, total)
    window = text[start : start + max_chars]
    end = start + len(window)
    head = f"{shown} ({human_size(len(data))})"
    if start or end < total:
        more = f"; read_file again with start={end} for more" if end < total else ""
        head += f" [characters {start}-{end} of {total}{more}]"
    return f"{head}\n\n{window}"


def write_text(ws: Path, path: str, content: str, append: bool, settings: FilesSettings) -> str:
    parts = split_path(path)
    if not parts:
        raise PathRefused("name a file to write, e.g. 'notes.md'")
    shown = "/".join(parts)
    data = content.encode("utf-8")
    quota = settings.quota_bytes
    with workspace_lock(ws):
        used = workspace_usage(ws, settings.quota_files + MAX_DEPTH + 1)
        if why := used.over(quota, settings.quota_files):
            raise ToolRefused(f"not written: the workspace is over its quota ({why}). Delete files first.")
        new_entries = _missing_entries(ws, parts)
        if used.entries + new_entries > settings.quota_files:
            raise ToolRefused(
                f"not written: {shown} would bring the workspace to {used.entries + new_entries} files and "
                f"folders, over its limit of {settings.quota_files}. Delete files you no longer need first."
            )
        with _walk_to(ws, parts[:-1], create=True) as dfd:
            try:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                existing = st.st_size if stat.S_ISREG(st.st_mode) else 0
            except FileNotFoundError:
                existing = 0
            after = used.bytes - (0 if append else existing) + len(data)
            if after > quota:
                raise ToolRefused(
                    f"not written: {shown} would bring the workspace to {human_size(after)}, over its quota of "
                    f"{human_size(quota)} ({human_size(used.bytes)} used). Delete files you no longer need first."
                )
            mode = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
            fd = _open_file(dfd, parts[-1], shown, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    verb = "appended" if append else "wrote"
    return f"{verb} {human_size(len(data))} to {shown} (workspace: {human_size(after)} of {human_size(quota)} used)"


def _missing_entries(ws: Path, parts: list[str]) -> int:
    """How many of the path's components do not exist yet (what a write would add to the count)."""
    fd = os.open(ws, _DIR_FLAGS)
    try:
        for i, part in enumerate(parts):
            try:
                nfd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                return len(parts) - i
            os.close(fd)
            fd = nfd
        return 0
    except OSError:
        return 0  # a link or a file in the way: the write itself says what is wrong
    finally:
        os.close(fd)


def list_entries(ws: Path, path: str, settings: FilesSettings) -> str:
    parts = split_path(path) if path.strip() not in ("", ".", "./") else []
    lines: list[str] = []
    count = 0
    limit = settings.list_max_entries
    with _walk_to(ws, parts, create=False) as dfd:
        walk = _Walk(dfd, settings.quota_files * 10)
        for e in sorted(walk, key=lambda e: e.path):
            if stat.S_ISDIR(e.st.st_mode):
                continue
            count += 1
            if len(lines) >= limit:
                continue
            rel = "/".join([*parts, e.path])
            if stat.S_ISLNK(e.st.st_mode):
                lines.append(f"{rel}  (symbolic link: not followed)")
            elif stat.S_ISREG(e.st.st_mode):
                lines.append(f"{rel}  {human_size(e.st.st_size)}")
            else:
                lines.append(f"{rel}  (special file)")
    used = workspace_usage(ws, settings.quota_files * 10)
    head = f"{count} file(s); workspace uses {human_size(used.bytes)} of {human_size(settings.quota_bytes)}"
    if used.entries > settings.quota_files * 0.8:
        head += f" and {used.entries} of {settings.quota_files} files and folders"
    if count > len(lines):
        head += f" (showing the first {len(lines)})"
    if why := used.over(settings.quota_bytes, settings.quota_files):
        head += f"\nover quota: {why}; delete files (delete_file removes a folder with everything in it)"
    return "\n".join([head, *lines]) if lines else f"{head}\n(empty)"


_trash_names = itertools.count()


def _remove_tree(parent_fd: int, name: str) -> int:
    """Delete the folder ``name`` and everything in it, at any depth; returns entries removed.

    Iterative with at most ``MAX_DEPTH`` open folders: a folder found deeper than that is first moved
    up next to ``name`` (a rename inside the same folder tree) and then deleted in its own turn.
    """
    removed = 0
    pending = [name]
    while pending:
        top = pending.pop()
        stack = [(parent_fd, top, os.open(top, _DIR_FLAGS, dir_fd=parent_fd))]
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
            stack.append((dfd, child, os.open(child, _DIR_FLAGS, dir_fd=dfd)))
    return removed


def delete_entry(ws: Path, path: str) -> str:
    parts = split_path(path)
    if not parts:
        raise PathRefused("the workspace itself cannot be deleted; name a file or folder in it")
    shown = "/".join(parts)
    with workspace_lock(ws), _walk_to(ws, parts[:-1], create=False) as dfd:
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise PathRefused(f"there is no file {shown!r} in the workspace") from None
        if stat.S_ISDIR(st.st_mode):
            try:
                removed = _remove_tree(dfd, parts[-1])
            except OSError as e:
                raise PathRefused(f"could not delete all of {shown!r}: {e.strerror}") from None
            return f"deleted the folder {shown} ({removed} entries)"
        os.unlink(parts[-1], dir_fd=dfd)  # unlink never follows a link: a link itself is removed
    return f"deleted {shown}"


def file_tools(settings: FilesSettings) -> list[Tool]:
    quota = settings.quota_bytes

    @tool
    def read_file(path: str, ctx: ToolContext, start: Annotated[int, Field(ge=0)] = 0) -> str:
        """Read a text file from this session's workspace.

        Args:
            path: Path relative to the workspace, e.g. 'notes.md' or 'data/out.csv'.
            start: Character offset to continue a long file from.
        """
        return read_text(workspace_root(ctx), path, start, settings.read_max_chars, quota)

    @tool
    def write_file(path: str, content: str, ctx: ToolContext, append: bool = False) -> str:
        """Write a text file in this session's workspace (creating folders as needed). Files written here
        can be attached to the conversation and read by run_python.

        Args:
            path: Path relative to the workspace, e.g. 'report.md'.
            content: The full text to write.
            append: Add to the end of the file instead of replacing it.
        """
        return write_text(workspace_root(ctx), path, content, append, settings)

    @tool
    def list_files(ctx: ToolContext, path: str = ".") -> str:
        """List the files in this session's workspace with their sizes, and the space used.

        Args:
            path: A folder inside the workspace; the whole workspace by default.
        """
        return list_entries(workspace_root(ctx), path, settings)

    @tool
    def delete_file(path: str, ctx: ToolContext) -> str:
        """Delete a file, or a folder with everything in it, from this session's workspace.

        Args:
            path: Path relative to the workspace.
        """
        return delete_entry(workspace_root(ctx), path)

    return [read_file, write_file, list_files, delete_file]


def give_workspace_to(ws: Path, uid: int, gid: int) -> int:
    """Make the workspace and what is in it belong to ``uid``:``gid`` (the sandbox user of a root bot).

    Called only while no run is active in this workspace (run_python holds its lock, and a run's
    processes all die with it), and still by descriptor: each entry is changed with ``fchownat`` on
    the folder holding it without following links; links and files with more than one name are left
    alone, so nothing outside the workspace can be reached. Returns how many entries changed.
    """
    fd = os.open(ws, _DIR_FLAGS)
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    changed = 0
    for e in _Walk(ws):
        mode = e.st.st_mode
        if stat.S_ISLNK(mode) or (e.st.st_uid, e.st.st_gid) == (uid, gid):
            continue
        if not stat.S_ISDIR(mode) and e.st.st_nlink > 1:
            continue
        with suppress(OSError):
            os.chown(e.name, uid, gid, dir_fd=e.dir_fd, follow_symlinks=False)
            changed += 1
    return changed
