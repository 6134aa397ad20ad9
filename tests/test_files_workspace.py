"""Workspace file tools: round trips, every path escape refused, the quota, and what gets attached."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.messages import ToolCall
from agent.tools.files import FilesSettings, file_tools, workspace_files
from agent.tools.registry import ToolContext, ToolOutcome, ToolRegistry


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "sessions" / "s1"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("bot token = xyz\n")
    return secret


async def run(ws: Path, name: str, quota: int = 10_000, **args: object) -> ToolOutcome:
    registry = ToolRegistry(file_tools(FilesSettings(quota_bytes=quota, read_max_chars=100)))
    return await registry.execute(
        ToolCall("c", name, json.dumps(args)), ToolContext(session_id="s1", workspace=ws)
    )


async def test_files_write_read_list_delete_round_trip(ws: Path) -> None:
    wrote = await run(ws, "write_file", path="notes/plan.md", content="# Plan\nfind otters\n")
    assert wrote.output == "wrote 19 B to notes/plan.md (workspace: 19 B of 9.8 KB used)"
    assert (ws / "notes" / "plan.md").read_text() == "# Plan\nfind otters\n"
    appended = await run(ws, "write_file", path="notes/plan.md", content="count them\n", append=True)
    assert appended.output.startswith("appended 11 B")
    read = await run(ws, "read_file", path="./notes/../notes/plan.md")
    assert read.output == "notes/plan.md (30 B)\n\n# Plan\nfind otters\ncount them\n"
    listed = await run(ws, "list_files")
    assert listed.output == "1 file(s); workspace uses 30 B of 9.8 KB\nnotes/plan.md  30 B"
    deleted = await run(ws, "delete_file", path="notes/plan.md")
    assert deleted.output == "deleted notes/plan.md"
    assert not (ws / "notes" / "plan.md").exists()
    missing = await run(ws, "read_file", path="notes/plan.md")
    assert missing.is_error and "there is no file 'notes/plan.md'" in missing.output


async def test_files_long_file_is_read_in_windows(ws: Path) -> None:
    await run(ws, "write_file", path="long.txt", content="".join(f"{i:04d}\n" for i in range(100)))
    first = await run(ws, "read_file", path="long.txt")
    assert "[characters 0-100 of 500; read_file again with start=100 for more]" in first.output
    second = await run(ws, "read_file", path="long.txt", start=100)
    assert second.output.split("\n\n", 1)[1].startswith("0020\n")


@pytest.mark.parametrize(
    "path",
    ["../secret.txt", "notes/../../secret.txt", "a/b/../../../secret.txt", "..", "../s1/../secret.txt"],
)
async def test_files_dotdot_escape_is_refused(ws: Path, outside: Path, path: str) -> None:
    for tool, extra in (("read_file", {}), ("write_file", {"content": "pwned"}), ("delete_file", {})):
        outcome = await run(ws, tool, path=path, **extra)
        assert outcome.is_error
        assert "leads outside the workspace" in outcome.output
    assert outside.read_text() == "bot token = xyz\n"


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "~/.ssh/id_rsa", "\\\\server\\share", "C:\\Windows\\win.ini"]
)
async def test_files_absolute_paths_are_refused(ws: Path, path: str) -> None:
    outcome = await run(ws, "read_file", path=path)
    assert outcome.is_error
    assert "is absolute; use a path relative to the workspace" in outcome.output


async def test_files_symlink_to_outside_is_never_followed(ws: Path, outside: Path) -> None:
    ws.mkdir(parents=True)
    (ws / "link.txt").symlink_to(outside)
    (ws / "linkdir").symlink_to(outside.parent)
    read = await run(ws, "read_file", path="link.txt")
    assert read.is_error and "'link.txt' is a symbolic link; links are not followed" in read.output
    write = await run(ws, "write_file", path="link.txt", content="pwned")
    assert write.is_error and "symbolic link" in write.output
    through_dir = await run(ws, "read_file", path="linkdir/secret.txt")
    assert through_dir.is_error and "'linkdir' is a symbolic link" in through_dir.output
    write_dir = await run(ws, "write_file", path="linkdir/new.txt", content="x")
    assert write_dir.is_error
    assert outside.read_text() == "bot token = xyz\n"
    assert not (outside.parent / "new.txt").exists()
    listed = await run(ws, "list_files")
    assert "link.txt  (symbolic link: not followed)" in listed.output
    assert "linkdir  (symbolic link: not followed)" in listed.output
    # Deleting a link removes the link, never its target.
    assert (await run(ws, "delete_file", path="link.txt")).output == "deleted link.txt"
    assert outside.exists() and not (ws / "link.txt").is_symlink()


async def test_files_symlink_inside_the_workspace_is_not_followed_either(ws: Path) -> None:
    await run(ws, "write_file", path="real.txt", content="data")
    (ws / "alias.txt").symlink_to(ws / "real.txt")
    outcome = await run(ws, "read_file", path="alias.txt")
    assert outcome.is_error and "symbolic link" in outcome.output


async def test_files_fifo_is_refused_without_hanging(ws: Path) -> None:
    ws.mkdir(parents=True)
    os.mkfifo(ws / "pipe")
    outcome = await run(ws, "read_file", path="pipe")
    assert outcome.is_error and "'pipe' is not a regular file" in outcome.output


async def test_files_quota_refuses_writes_past_it_and_counts_replacements(ws: Path) -> None:
    ok = await run(ws, "write_file", quota=1000, path="a.txt", content="x" * 600)
    assert not ok.is_error
    over = await run(ws, "write_file", quota=1000, path="b.txt", content="y" * 500)
    assert over.is_error
    assert "would bring the workspace to 1.1 KB, over its quota of 1000 B (600 B used)" in over.output
    assert "Delete files you no longer need first" in over.output
    assert not (ws / "b.txt").exists()
    replaced = await run(ws, "write_file", quota=1000, path="a.txt", content="z" * 900)  # replaces the 600 B
    assert not replaced.is_error
    appended = await run(ws, "write_file", quota=1000, path="a.txt", content="z" * 200, append=True)
    assert appended.is_error
    assert (ws / "a.txt").read_text() == "z" * 900


async def test_files_binary_file_is_described_not_dumped(ws: Path) -> None:
    ws.mkdir(parents=True)
    (ws / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0" + bytes(50))
    outcome = await run(ws, "read_file", path="img.png")
    assert outcome.output.startswith("img.png is a binary file (61 B); it cannot be shown as text")


async def test_files_without_a_workspace_are_refused(tmp_path: Path) -> None:
    registry = ToolRegistry(file_tools(FilesSettings()))
    outcome = await registry.execute(ToolCall("c", "list_files", "{}"), ToolContext(session_id="s"))
    assert outcome.is_error and "this session has no workspace" in outcome.output


async def test_files_attachable_files_are_regular_files_inside_only(ws: Path, outside: Path) -> None:
    await run(ws, "write_file", path="report.md", content="# Report")
    await run(ws, "write_file", path="data/table.csv", content="a,b\n1,2\n")
    (ws / "escape.txt").symlink_to(outside)
    os.mkfifo(ws / "pipe")
    assert workspace_files(ws) == [ws / "data" / "table.csv", ws / "report.md"]
    assert workspace_files(ws / "missing") == []
