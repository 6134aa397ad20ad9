"""Workspace files: read, write, list and delete inside the session's own directory.

Paths are relative to ``ctx.workspace``. Absolute paths are refused; ``..`` may move around inside
the workspace but never above it. Symlinks are never followed (the Python sandbox can create them):
each path is opened one component at a time from a directory descriptor with ``O_NOFOLLOW``, so a link
swapped in while we work cannot redirect us either. FIFOs and devices are refused. A per-session quota
caps the bytes held (``write_file`` refuses past it). The functions are synchronous; the registry runs
them in a thread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from agent.tools.registry import Tool, ToolContext, ToolRefused, tool
from agent.tools.safe_names import refuse_unsafe, shown_name

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class FilesSettings:
    quota_bytes: int = 10 * 1024 * 1024
    read_max_chars: int = 20_000
    list_max_entries: int = 300


class PathRefused(ToolRefused):
    """A path that would leave the workspace, follow a link or name something that is not a file."""


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
    refuse_unsafe(p)  # control, bidi and line-break characters (agent/tools/safe_names.py)
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
        parts.append(part)
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


def regular_files(ws: Path) -> Iterator[tuple[Path, int]]:
    for root, dirs, files in os.walk(ws, followlinks=False):
        for name in files + dirs:
            p = Path(root, name)
            try:
                st = p.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield p, st.st_size


def workspace_usage(workspace: Path) -> int:
    """Bytes held by regular files in the workspace (links and special files count nothing)."""
    return sum(size for _, size in regular_files(Path(workspace))) if Path(workspace).is_dir() else 0


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


def write_text(ws: Path, path: str, content: str, append: bool, quota: int) -> str:
    parts = split_path(path)
    if not parts:
        raise PathRefused("name a file to write, e.g. 'notes.md'")
    shown = "/".join(parts)
    data = content.encode("utf-8")
    with _walk_to(ws, parts[:-1], create=True) as dfd:
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            existing = st.st_size if stat.S_ISREG(st.st_mode) else 0
        except FileNotFoundError:
            existing = 0
        used = workspace_usage(ws)
        after = used - (0 if append else existing) + len(data)
        if after > quota:
            raise ToolRefused(
                f"not written: {shown} would bring the workspace to {human_size(after)}, over its quota of "
                f"{human_size(quota)} ({human_size(used)} used). Delete files you no longer need first."
            )
        mode = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        fd = _open_file(dfd, parts[-1], shown, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    verb = "appended" if append else "wrote"
    return f"{verb} {human_size(len(data))} to {shown} (workspace: {human_size(after)} of {human_size(quota)} used)"


def list_entries(ws: Path, path: str, limit: int, quota: int) -> str:
    parts = split_path(path) if path.strip() not in ("", ".", "./") else []
    lines: list[str] = []
    count = 0
    with _walk_to(ws, parts, create=False) as dfd:
        for root, dirs, files, rfd in os.fwalk(".", dir_fd=dfd, follow_symlinks=False):
            dirs.sort()
            for name in sorted(files + [d for d in dirs if _is_link(d, rfd)]):
                rel = shown_name("/".join([*parts, os.path.normpath(os.path.join(root, name))]))
                count += 1
                if len(lines) >= limit:
                    continue
                try:
                    st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    lines.append(f"{rel}  (symbolic link: not followed)")
                elif stat.S_ISREG(st.st_mode):
                    lines.append(f"{rel}  {human_size(st.st_size)}")
                else:
                    lines.append(f"{rel}  (special file)")
    used = workspace_usage(ws)
    head = f"{count} file(s); workspace uses {human_size(used)} of {human_size(quota)}"
    if count > len(lines):
        head += f" (showing the first {len(lines)})"
    return "\n".join([head, *lines]) if lines else f"{head}\n(empty)"


def delete_entry(ws: Path, path: str) -> str:
    parts = split_path(path)
    if not parts:
        raise PathRefused("the workspace itself cannot be deleted; name a file in it")
    shown = "/".join(parts)
    with _walk_to(ws, parts[:-1], create=False) as dfd:
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise PathRefused(f"there is no file {shown!r} in the workspace") from None
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(parts[-1], dir_fd=dfd)
            except OSError:
                raise PathRefused(f"the directory {shown!r} is not empty; delete its files first") from None
            return f"deleted the empty directory {shown}"
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
        return write_text(workspace_root(ctx), path, content, append, quota)

    @tool
    def list_files(ctx: ToolContext, path: str = ".") -> str:
        """List the files in this session's workspace with their sizes, and the space used.

        Args:
            path: A folder inside the workspace; the whole workspace by default.
        """
        return list_entries(workspace_root(ctx), path, settings.list_max_entries, quota)

    @tool
    def delete_file(path: str, ctx: ToolContext) -> str:
        """Delete a file (or an empty folder) from this session's workspace.

        Args:
            path: Path relative to the workspace.
        """
        return delete_entry(workspace_root(ctx), path)

    return [read_file, write_file, list_files, delete_file]
