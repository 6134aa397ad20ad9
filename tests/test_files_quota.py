"""The workspace quota (bytes and entries) against every tool, run_python included (issue 14.4)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.messages import ToolCall
from agent.tools.files import MAX_DEPTH, FilesSettings, file_tools, workspace_usage
from agent.tools.python_exec import PythonSettings, python_tools
from agent.tools.registry import ToolContext, ToolOutcome, ToolRefused, ToolRegistry

MB = 1024 * 1024
FILES = FilesSettings(quota_bytes=1 * MB, quota_files=50)
PYTHON = PythonSettings(
    timeout=20, cpu_seconds=10, memory_mb=256, max_output_chars=2000, quota_bytes=1 * MB, quota_files=50
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "sessions" / "s1"


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([*file_tools(FILES), *python_tools(PYTHON)])


async def call(registry: ToolRegistry, ws: Path, name: str, **args: object) -> ToolOutcome:
    return await registry.execute(
        ToolCall("c", name, json.dumps(args)), ToolContext(session_id="s1", workspace=ws)
    )


async def test_files_run_passing_the_quota_is_stopped_told_and_the_next_run_refused(
    registry: ToolRegistry, ws: Path
) -> None:
    # 60 x 100 KB into a 1 MB workspace, slowly enough that the run is still going when it passes.
    code = (
        "import os, time\nos.mkdir('out')\n"
        "for i in range(60):\n    open(f'out/{i}.bin', 'wb').write(b'x' * 100_000)\n    time.sleep(0.02)\n"
        "print('all written')"
    )
    ran = await call(registry, ws, "run_python", code=code)
    assert "note: stopped: the workspace passed its quota (it holds" in ran.output, ran.output
    assert "all written" not in ran.output
    assert "run_python is refused until you delete files" in ran.output
    assert len(os.listdir(ws / "out")) < 60
    refused = await call(registry, ws, "run_python", code="print('hello')")
    assert refused.is_error
    assert "not run: the workspace is over its quota (it holds" in refused.output
    wrote = await call(registry, ws, "write_file", path="note.txt", content="x")
    assert wrote.is_error and "over its quota" in wrote.output
    deleted = await call(registry, ws, "delete_file", path="out")
    assert deleted.output.startswith("deleted the folder out (")
    again = await call(registry, ws, "run_python", code="print('hello')")
    assert "stdout:\nhello" in again.output


async def test_files_empty_files_count_against_the_quota(registry: ToolRegistry, ws: Path) -> None:
    """100,000 empty files used to count as 0 B; every entry counts now, whoever made it."""
    ran = await call(
        registry,
        ws,
        "run_python",
        code="import os\nos.mkdir('many')\nfor i in range(5000):\n    open(f'many/{i}', 'w')",
    )
    assert "files and folders, over its limit of 50" in ran.output, ran.output
    refused = await call(registry, ws, "run_python", code="print(1)")
    assert refused.is_error and "over its limit of 50" in refused.output
    listed = await call(registry, ws, "list_files")
    assert "over quota: it holds" in listed.output
    await call(registry, ws, "delete_file", path="many")
    assert workspace_usage(ws).entries == 0
    for i in range(50):
        assert not (await call(registry, ws, "write_file", path=f"f{i}", content="")).is_error
    over = await call(registry, ws, "write_file", path="one-more", content="")
    assert over.is_error and "would bring the workspace to 51 files and folders" in over.output


def test_files_concurrent_writes_cannot_pass_the_quota(ws: Path) -> None:
    """Eight 2 MB writes released at once into a 10 MB workspace (the red team reached 16.8 MB)."""
    [write_file] = [t for t in file_tools(FilesSettings(quota_bytes=10 * MB)) if t.name == "write_file"]
    ctx = ToolContext(session_id="s1", workspace=ws)
    start = threading.Barrier(8)
    results: list[str] = []

    def write(i: int) -> None:
        start.wait()
        try:
            results.append(write_file.fn(path=f"part{i}.txt", content="x" * (2 * MB), ctx=ctx))
        except ToolRefused as e:
            results.append(f"refused: {e}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave as on a busy many-core host, not in 5 ms turns
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert sum(r.startswith("wrote") for r in results) == 5, results
    assert sum(r.startswith("refused: not written") for r in results) == 3
    assert workspace_usage(ws).bytes == 10 * MB


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("d/" * 1500 + "x", "the path is longer than 1024 characters"),  # the red team's: RecursionError
        ("d/" * 40 + "x", f"the path is 41 levels deep; at most {MAX_DEPTH} are allowed"),
        ("n" * 300 + ".txt", "a name in the path is longer than 255 bytes"),
    ],
)
async def test_files_deep_and_long_paths_are_refused(
    registry: ToolRegistry, ws: Path, path: str, why: str
) -> None:
    wrote = await call(registry, ws, "write_file", path=path, content="x")
    assert wrote.is_error and why in wrote.output
    listed = await call(registry, ws, "list_files")
    assert not listed.is_error and listed.output.startswith("0 file(s)")


@pytest.fixture
def memory_ws(tmp_path: Path) -> Iterator[Path]:
    """A workspace on tmpfs where there is one: 1,100 nested folders take 3 s on a busy disk, 0.1 s there."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    yield base / "s1"
    shutil.rmtree(base, ignore_errors=True)


async def test_files_a_tree_deeper_than_the_bound_never_breaks_later_walks(
    registry: ToolRegistry, memory_ws: Path
) -> None:
    """Sandboxed code can nest folders as deep as it likes; walks stay iterative and say so."""
    ws = memory_ws
    ws.mkdir(parents=True)
    fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1100):  # deeper than a recursive walk can go (RecursionError) and than PATH_MAX
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    open(os.open("leaf.txt", os.O_CREAT | os.O_WRONLY, dir_fd=fd), "w").close()
    os.close(fd)
    listed = await call(registry, ws, "list_files")
    assert not listed.is_error
    assert f"over quota: it holds folders nested deeper than {MAX_DEPTH} levels" in listed.output
    refused = await call(registry, ws, "run_python", code="print(1)")
    assert refused.is_error and f"nested deeper than {MAX_DEPTH} levels" in refused.output
    deleted = await call(registry, ws, "delete_file", path="d")
    assert deleted.output == "deleted the folder d (1101 entries)"
    assert os.listdir(ws) == []
    ran = await call(registry, ws, "run_python", code="print('fine')")
    assert "stdout:\nfine" in ran.output
