"""agentbot against OpenAI-compatible servers other than OpenAI (vLLM, Ollama, llama.cpp's server,
DeepSeek, OpenRouter, Mistral, a Gemini gateway), each speaking its own wire as its documentation shows
it (:mod:`tests.fakes.compat_server`): what the operator sees must be one line naming the setting or
the server's flag to change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.compat_server import CompatServer
from tests.test_blackbox_operator import agentbot


@pytest.fixture
async def server() -> AsyncIterator[CompatServer]:
    async with CompatServer() as srv:
        yield srv


def env(srv: CompatServer, **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": srv.url, "AGENT_MODEL": "m", "MEMORY_ENABLED": "false"} | extra


async def test_vllm_without_auto_tool_choice_is_named_by_doctor_and_ask(
    server: CompatServer, tmp_path: Path
) -> None:
    # `vllm serve m` without --enable-auto-tool-choice lists m and answers a plain chat, so doctor said
    # ok; every run then failed at its first step with "this server or model may not support tools".
    server.vllm_auto_tools = False
    quick = {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off"}
    code, out, err = await agentbot(tmp_path, "doctor", env=env(server, **quick))
    line = next((x for x in out.splitlines() if "provider openai" in x), out + err)
    assert line.startswith("FAIL") and "--enable-auto-tool-choice" in line, out + err[-1500:]
    assert "--tool-call-parser" in line, line
    code, out, err = await agentbot(tmp_path, "ask", "What is 2**32?", env=env(server))
    assert code == 1 and out == "", err[-1500:]
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "start vLLM with --enable-auto-tool-choice" in line, line
    assert "may not support tools" not in line, line
