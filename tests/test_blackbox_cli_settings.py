"""Settings mistakes an operator makes, met through the installed ``agentbot`` command against loopback
servers: what was pasted, typed or mixed up, and what the command says about it."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.llm_server import FakeLLM, text
from tests.test_blackbox_operator import agentbot


async def test_a_key_pasted_with_a_trailing_newline_or_space_still_works(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # `echo sk-... > key; OPENAI_API_KEY=$(cat key)` is fine, but docker's env files, YAML blocks and
    # copied terminal lines keep a trailing newline or space, which no HTTP header may carry.
    llm.api_key = "sk-test-key-0001"
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "gpt-4o-mini", "MEMORY_ENABLED": "false"}
    for pasted in ("sk-test-key-0001\n", " sk-test-key-0001 "):
        llm.script(text("pong"))
        code, out, err = await agentbot(tmp_path, "ask", "ping", env=env | {"OPENAI_API_KEY": pasted})
        assert (code, out) == (0, "pong\n"), err[-1500:]
    # A line break inside the key is a mistake to name at once, not 16 s of "could not be reached".
    code, out, err = await agentbot(
        tmp_path, "ask", "ping", env=env | {"OPENAI_API_KEY": "sk-test\nkey-0001"}
    )
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and "OPENAI_API_KEY" in err and "key-0001" not in err, err
