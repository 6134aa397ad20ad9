"""``agentbot ask`` as a terminal user and in scripts (fifth round): the installed command against
loopback servers that answer as real local model servers do. Each test failed before the fix its commit
names."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.llm_server import FakeLLM, error
from tests.test_blackbox_operator import agentbot


async def test_llama_cpp_refusing_tools_says_to_start_it_with_jinja_at_once(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # llama-server started without --jinja answers every request that offers tools with HTTP 500
    # "tools param requires --jinja flag": ask retried it as a server failure (~17 s with the default
    # MODEL_MAX_ATTEMPTS) and ended with "still failing after 5 attempts" and no fix.
    refusal = "tools param requires --jinja flag"
    llm.script(error(500, refusal), error(500, refusal))
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1", "MEMORY_ENABLED": "false"}
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=env | {"MODEL_MAX_ATTEMPTS": "2"})
    assert code == 1 and out == "" and "Traceback" not in err, err[-2000:]
    assert len(llm.requests) == 1, err  # not retried: the same words would come back
    assert "cannot take tools (HTTP 500): start llama-server with --jinja" in err, err
