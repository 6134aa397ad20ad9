"""Workspace files: read, write, list and delete inside the session's own directory.

Paths are relative to ``ctx.workspace``. Absolute paths are refused; ``..`` may move around inside
the workspace but never above it. Symlinks are never followed (the Python sandbox can create them):
each path is opened one component at a time from a directory descriptor with ``O_NOFOLLOW``, so a link
swapped in while we work cannot redirect us either. FIFOs and devices are refused.

Bounds: a per-session quota of bytes *and* entries (files, folders and links all count) covers what
every tool wrote, run_python included (:mod:`agent.tools.python_exec` checks it during a run); paths
are at most ``MAX_DEPTH`` folders deep with names of at most ``MAX_NAME_BYTES``. Writes and their quota
check hold a per-workspace lock, so concurrent ``write_file`` calls cannot pass the quota together.
The functions are synchronous; the registry runs them in a thread.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from agent.tools.registry import Tool, ToolContext, ToolRefused, text_window, tool
from agent.tools.safe_names import refuse_unsafe, shown_name
from agent.tools.workspace import (
    DIR_FLAGS,
    MAX_DEPTH,
    Walk,
    human_size,
    open_dir,
    remove_tree,
    workspace_lock,
    workspace_usage,
)
from agent.tools.workspace import workspace_files as workspace_files  # the bot attaches these

MAX_NAME_BYTES = 255  # NAME_MAX on Linux filesystems
MAX_PATH_CHARS = 1024


@dataclass(frozen=True, slots=True)
class FilesSettings:
    quota_bytes: int = 10 * 1024 * 1024
    quota_files: int = 1000
    """Entries (files, folders, links) a workspace may hold."""
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
    # The folder of the workspaces too: the bot made it (and them) 0755, and run_python's code can chmod its
    # own; with this one 0700 no other local user reaches any file in them, a setuid one included.
    parent = os.stat(ws.parent)
    if parent.st_uid == os.geteuid() and parent.st_mode & 0o077:
        os.chmod(ws.parent, stat.S_IMODE(parent.st_mode) & 0o700)
    return ws.resolve()


def split_path(path: str) -> list[str]:
    """Components of a workspace-relative path, with ``.``/``..`` applied; refuses any escape."""
    p = (path or "").strip()
    if not p:
        raise PathRefused("give a path relative to the workspace, e.g. 'notes.md' or 'data/table.csv'")
    if "\0" in p:
        raise PathRefused("a path cannot contain a NUL character")
    refuse_unsafe(p)  # control, bidi and line-break characters (agent/tools/safe_names.py)
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
    fd = open_dir(ws)
    try:
        for i, part in enumerate(dirs):
            where = "/".join(dirs[: i + 1])
            try:
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise PathRefused(f"there is no directory {where!r} in the workspace") from None
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
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


def _entry(path: str, if_root: str) -> tuple[list[str], str]:
    """(components, the path as shown); ``if_root`` refuses the workspace itself."""
    parts = split_path(path)
    if not parts:
        raise PathRefused(if_root)
    return parts, "/".join(parts)


def _missing_entries(ws: Path, parts: list[str]) -> int:
    """How many of the path's components do not exist yet (what a write would add to the count)."""
    fd = os.open(ws, DIR_FLAGS)
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


def _write_whole(dfd: int, name: str, shown: str, data: bytes, *, append: bool) -> None:
    """Write ``name`` whole or not at all: into a temporary name beside it, renamed over it once written.

    Written in place, a full disk (ENOSPC, EFBIG) left an empty or cut file behind that ``agentbot ask``
    then reported as "files (1) kept" and the bot attached; now the file is as it was before and the
    model is told the write failed. Appending copies the existing text into the temporary file first.
    """
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        _open_file(dfd, name, shown, os.O_RDONLY)  # raises the refusal naming what is there
    if append and st is not None:
        with os.fdopen(_open_file(dfd, name, shown, os.O_RDONLY), "rb") as f:
            data = f.read() + data
    temp = f".agentbot-writing-{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as e:
        with suppress(OSError):
            os.unlink(temp, dir_fd=dfd)
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise ToolRefused(
                f"not written: the disk is full ({e.strerror}); {shown} was not saved and the workspace is as "
                "it was. Tell the user the file could not be saved; do not retry it."
            ) from None
        raise ToolRefused(f"not written: {shown}: {e.strerror}; the workspace is as it was") from None


def file_tools(settings: FilesSettings) -> list[Tool]:
    quota = settings.quota_bytes

    # The window (FILES_READ_MAX_CHARS) and its header fit the output cap: the default 8,000 cut a
    # 20,000-character window, and the model, told to go on at 20,000, never read the part between.
    @tool(max_output=settings.read_max_chars + 2000)
    def read_file(path: str, ctx: ToolContext, start: Annotated[int, Field(ge=0)] = 0) -> str:
        """Read a text file from this session's workspace.

        Args:
            path: Path relative to the workspace, e.g. 'notes.md' or 'data/out.csv'.
            start: Character offset to continue a long file from.
        """
        ws = workspace_root(ctx)
        parts, shown = _entry(path, "that is the workspace itself; list_files shows what it holds")
        with _walk_to(ws, parts[:-1], create=False) as dfd:
            fd = _open_file(dfd, parts[-1], shown, os.O_RDONLY)
            with os.fdopen(fd, "rb") as f:
                data = f.read(quota + 1)
        if b"\0" in data[:8192]:
            return f"{shown} is a binary file ({human_size(len(data))}); it cannot be shown as text. run_python can inspect it."
        window, note = text_window(
            data[:quota].decode("utf-8", errors="replace"), start, settings.read_max_chars, "read_file"
        )
        return f"{shown} ({human_size(len(data))}){' ' + note if note else ''}\n\n{window}"

    @tool
    def write_file(path: str, content: str, ctx: ToolContext, append: bool = False) -> str:
        """Write a text file in this session's workspace (creating folders as needed). Files written here
        can be attached to the conversation and read by run_python.

        Args:
            path: Path relative to the workspace, e.g. 'report.md'.
            content: The full text to write.
            append: Add to the end of the file instead of replacing it.
        """
        ws = workspace_root(ctx)
        parts, shown = _entry(path, "name a file to write, e.g. 'notes.md'")
        data = content.encode("utf-8")
        with workspace_lock(ws):
            used = workspace_usage(ws, settings.quota_files + MAX_DEPTH + 1)
            if why := used.over(quota, settings.quota_files):
                raise ToolRefused(
                    f"not written: the workspace is over its quota ({why}). Delete files first."
                )
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
                _write_whole(dfd, parts[-1], shown, data, append=append)
        verb = "appended" if append else "wrote"
        return f"{verb} {human_size(len(data))} to {shown} (workspace: {human_size(after)} of {human_size(quota)} used)"

    @tool
    def list_files(ctx: ToolContext, path: str = ".") -> str:
        """List the files in this session's workspace with their sizes, and the space used.

        Args:
            path: A folder inside the workspace; the whole workspace by default.
        """
        ws = workspace_root(ctx)
        parts = split_path(path) if path.strip() not in ("", ".", "./") else []
        lines: list[str] = []
        count = 0
        limit = settings.list_max_entries
        with _walk_to(ws, parts, create=False) as dfd:
            entries = Walk(dfd, settings.quota_files * 10)
            for e in sorted(entries, key=lambda e: e.path):
                if stat.S_ISDIR(e.st.st_mode):
                    continue
                count += 1
                if len(lines) >= limit:
                    continue
                rel = shown_name("/".join([*parts, e.path]))
                if stat.S_ISLNK(e.st.st_mode):
                    lines.append(f"{rel}  (symbolic link: not followed)")
                elif stat.S_ISREG(e.st.st_mode):
                    lines.append(f"{rel}  {human_size(e.st.st_size)}")
                else:
                    lines.append(f"{rel}  (special file)")
        used = workspace_usage(ws, settings.quota_files * 10)
        head = (
            f"{count} file(s); workspace uses {human_size(used.bytes)} of {human_size(settings.quota_bytes)}"
        )
        if used.entries > settings.quota_files * 0.8:
            head += f" and {used.entries} of {settings.quota_files} files and folders"
        if count > len(lines):
            head += f" (showing the first {len(lines)})"
        if why := used.over(settings.quota_bytes, settings.quota_files):
            head += f"\nover quota: {why}; delete files (delete_file removes a folder with everything in it)"
        return "\n".join([head, *lines]) if lines else f"{head}\n(empty)"

    @tool
    def delete_file(path: str, ctx: ToolContext) -> str:
        """Delete a file, or a folder with everything in it, from this session's workspace.

        Args:
            path: Path relative to the workspace.
        """
        ws = workspace_root(ctx)
        parts, shown = _entry(path, "the workspace itself cannot be deleted; name a file or folder in it")
        with workspace_lock(ws), _walk_to(ws, parts[:-1], create=False) as dfd:
            try:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise PathRefused(f"there is no file {shown!r} in the workspace") from None
            if stat.S_ISDIR(st.st_mode):
                try:
                    removed = remove_tree(dfd, parts[-1])
                except OSError as e:
                    raise PathRefused(f"could not delete all of {shown!r}: {e.strerror}") from None
                return f"deleted the folder {shown} ({removed} entries)"
            os.unlink(parts[-1], dir_fd=dfd)  # unlink never follows a link: a link itself is removed
        return f"deleted {shown}"

    return [read_file, write_file, list_files, delete_file]
