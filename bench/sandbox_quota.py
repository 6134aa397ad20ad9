"""How far a run_python run can pass the workspace quota before it is stopped (issue 14.4).

    .venv/bin/python bench/sandbox_quota.py [--rounds 3]

The quota is measured every ``QUOTA_POLL`` seconds during a run (a run is stopped as soon as it
passes; nothing in the kernel counts a folder's bytes or entries), so a fast writer gets past it by
what it writes in that time. This runs the red team's two attacks with the default settings (10 MB,
1,000 entries) in the real sandbox and prints what the workspace held once the run was stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from agent.messages import ToolCall
from agent.tools.files import FilesSettings, file_tools, workspace_usage
from agent.tools.python_exec import PythonSettings, python_tools
from agent.tools.registry import ToolContext, ToolRegistry

ATTACKS = {
    "60 x 10 MB files": "for i in range(60):\n    open(f'{i}.bin', 'wb').write(b'x' * 10_000_000)",
    "100,000 empty files": "import os\nos.mkdir('m')\nfor i in range(100_000):\n    open(f'm/{i}', 'w')",
}


async def main(rounds: int) -> None:
    settings = PythonSettings()
    registry = ToolRegistry([*python_tools(settings), *file_tools(FilesSettings())])
    print(f"quota: {settings.quota_bytes / 1e6:.1f} MB, {settings.quota_files} entries")
    for name, code in ATTACKS.items():
        for _ in range(rounds):
            base = Path(tempfile.mkdtemp(prefix="agentbot-bench-"))
            try:
                started = time.monotonic()
                out = await registry.execute(
                    ToolCall("c", "run_python", json.dumps({"code": code})),
                    ToolContext(session_id="bench", workspace=base / "ws"),
                )
                took = time.monotonic() - started
                used = workspace_usage(base / "ws")
                stopped = (
                    "stopped" if "note: stopped: the workspace passed its quota" in out.output else "ran out"
                )
                print(
                    f"{name}: {stopped} after {took:.2f} s; {used.bytes / 1e6:.1f} MB, {used.entries} entries"
                )
            finally:
                shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
