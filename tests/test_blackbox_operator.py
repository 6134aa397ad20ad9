"""What an operator meets on a first run, driven through the installed ``agentbot`` command as a user runs
it: a temp directory as the working directory, an explicit environment, a ``.env`` file, loopback servers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.fakes.llm_server import FakeLLM, text

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))


async def agentbot(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``agentbot ARGS`` in ``tmp_path`` (where its ``.env`` is read) with only ``env`` set."""
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        *args,
        cwd=tmp_path,
        env=base | (env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("command", ["ask", "doctor"])
async def test_an_env_file_that_is_not_utf8_is_one_line_not_a_traceback(
    command: str, llm: FakeLLM, tmp_path: Path
) -> None:
    # Windows Notepad's "Unicode" is UTF-16 (a \xff\xfe mark); a Latin-1 editor writes é as one byte.
    (tmp_path / ".env").write_bytes(
        f"OPENAI_BASE_URL={llm.base_url}\nAGENT_MODEL=gpt-4o-mini\n".encode() + b"BOT_PERSONA=caf\xe9\n"
    )
    llm.script(text("never asked"))
    code, out, err = await agentbot(tmp_path, command, *(["hello"] if command == "ask" else []))
    assert code != 0
    assert "Traceback" not in out + err and "UnicodeDecodeError" not in out + err, err[-2000:]
    said = (err if command == "ask" else out + err).strip().splitlines()
    line = next(x for x in said if ".env" in x)
    assert "UTF-8" in line, said
    assert llm.requests == []
