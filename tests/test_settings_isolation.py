"""The suite never reads the operator's .env or environment (tests/conftest.py's guard).

A real pytest run in a directory holding a hostile ``.env``, with the same values in the environment,
must pass the same tests that pass in a clean one: the settings an operator would most plausibly have
(a low step limit, a local endpoint, a missing price file, a Chroma server) change nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.settings_names import ROOT

HOSTILE = {
    "AGENT_MAX_STEPS": "3",
    "AGENT_MODEL": "llama3.1",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "OPENAI_API_KEY": "sk-operator-key-should-never-be-used",
    "PRICES_FILE": "/nonexistent/prices.json",
    "ROUTER_TIERS_FILE": "/nonexistent/tiers.toml",
    "ROUTER_CLASSIFIER": "judge",
    "QUOTA_REQUESTS_PER_DAY": "1",
    "CHROMA_HOST": "127.0.0.1",
    "CHROMA_PORT": "9",
    "PYTHON_SANDBOX": "off",
    "SEARCH_BACKEND": "searxng",
    "LOG_LEVEL": "DEBUG",
    "DISCORD_TOKEN": "operator-token-1234567890",
}
# Tests that read settings through every path: load_agent_settings, AgentSettings(), a CLI subprocess.
SUITES = (
    "tests/test_router_tiers.py",
    "tests/test_cli_ask.py::test_cli_ask_max_steps",
)


async def test_a_hostile_env_file_and_environment_change_no_test_outcome(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in HOSTILE.items()))
    env = os.environ | HOSTILE | {"PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--rootdir={ROOT}",
        *(str(ROOT / s) for s in SUITES),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 170)
    text = out.decode()
    assert proc.returncode == 0, text[-3000:]
    assert " passed" in text and "failed" not in text
