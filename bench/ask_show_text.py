"""What ``agentbot ask --show-text`` costs over plain ``agentbot ask`` on a long streamed answer.

    .venv/bin/python bench/ask_show_text.py [--kb 200] [--runs 3] [--source DIR]

The real command in a subprocess against the scripted OpenAI-compatible server on 127.0.0.1, which
streams the answer in 7-character pieces (~30,000 deltas for 200 KB, as a real server's tokens
come). Runs alternate plain and ``--show-text`` (stderr to a pipe that is read), so load on a shared
machine falls on both alike; the figure is the ratio of their medians. ``--source`` runs another
checkout's ``agent/`` and ``bot/`` (e.g. ``git archive 7ffeec4 agent bot | tar -x -C /tmp/before``)
with this environment, for a before/after. Before the streamed words went straight to stderr the
ratio was ~9x (6.6 s against 0.7 s); the goal is ~1x.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.llm_server import FakeLLM, text

# The venv's editable install maps agent/ and bot/ to this checkout ahead of sys.path: drop its finder.
_FROM_SOURCE = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'agentbot'; from bot.cli import main; main()"
)


async def ask(llm: FakeLLM, source: str | None, *args: str) -> tuple[int, str]:
    agentbot = str(Path(sys.executable).with_name("agentbot"))
    command = [sys.executable, "-c", _FROM_SOURCE, source] if source else [agentbot]
    with tempfile.TemporaryDirectory() as d:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": d,
            "DATA_DIR": d,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "sk-bench",
            "MEMORY_ENABLED": "false",
        }
        proc = await asyncio.create_subprocess_exec(
            *command,
            "ask",
            "q",
            *args,
            cwd=d,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    if proc.returncode:
        raise SystemExit(f"exit {proc.returncode}: {err.decode()[-400:]}")
    return proc.returncode or 0, out.decode()


async def main(kb: int, runs: int, source: str | None) -> None:
    line = "word " * 19 + "end\n"  # 99 characters
    answer = line * (kb * 1000 // len(line))
    times: dict[str, list[float]] = {"plain": [], "--show-text": []}
    async with FakeLLM() as llm:
        for _ in range(runs):
            for mode in times:
                llm.script(text(answer))
                start = time.perf_counter()
                _, out = await ask(llm, source, *([mode] if mode != "plain" else []))
                times[mode].append(time.perf_counter() - start)
                if out != answer:
                    raise SystemExit(f"{mode}: {len(out)} of {len(answer)} characters written")
    plain, shown = (statistics.median(times[m]) for m in times)
    print(
        f"{len(answer) / 1000:.0f} KB answer, median of {runs}: plain {plain:.2f} s, --show-text {shown:.2f} s"
    )
    print(f"--show-text / plain: {shown / plain:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--source", help="a directory holding another checkout's agent/ and bot/")
    args = parser.parse_args()
    asyncio.run(main(args.kb, args.runs, args.source))
