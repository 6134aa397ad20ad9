"""MCP servers as operators meet them when a server is broken or hostile, through the installed
``agentbot ask`` with MCP_SERVERS_FILE naming a real stdio MCP server (tests/fakes/mcp_hostile.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.test_blackbox_operator import agentbot

ROOT = Path(__file__).resolve().parents[1]


def hostile_file(tmp_path: Path, *names: str) -> Path:
    f = tmp_path / "mcp.toml"
    f.write_text(
        "".join(
            f"[servers.{name}]\n"
            f"command = {json.dumps(sys.executable)}\n"
            'args = ["-m", "tests.fakes.mcp_hostile"]\n'
            f"env = {{ PYTHONPATH = {json.dumps(str(ROOT))} }}\n"
            for name in names
        )
    )
    return f


async def test_mcp_tool_names_that_collide_are_offered_once_and_the_run_goes_on(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # The server lists "echo" twice, and its "_x" namespaces to "h___x" exactly as server "h_"'s "x"
    # would; a second copy of the server ("h_") collides on every name. Each name reaches the model once.
    llm.script(tool_call("h__echo", {"text": "hello"}), text("It said hello."))
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "llama3.1",
        "PYTHON_SANDBOX": "off",
        "MCP_SERVERS_FILE": str(hostile_file(tmp_path, "h", "h_")),
    }
    code, out, err = await agentbot(tmp_path, "ask", "Echo hello", env=env)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert out == "It said hello.\n"
    names = [t["function"]["name"] for t in llm.requests[0]["tools"]]
    assert len(names) == len(set(names)) and "h__echo" in names and "h___x" in names, names
    assert "echo: hello" in llm.requests[1]["messages"][-1]["content"]
