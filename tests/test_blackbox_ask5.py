"""``agentbot ask`` as a terminal user and in scripts (fifth round): the installed command against
loopback servers that answer as real local model servers do. Each test failed before the fix its commit
names."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent.messages import Message
from agent.models.base import ModelError, ModelSettings
from agent.models.openai import OpenAIChatModel
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
    assert "refused the request (HTTP 500): start llama-server with --jinja" in err, err


async def test_ollama_without_memory_for_the_model_is_said_at_once(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    # `ollama pull llama3.1:70b` on a 16 GB laptop: every call answers HTTP 500 "model requires more system
    # memory (40.1 GiB) than is available (11.2 GiB)", and each was retried for ~17 s before failing.
    llm.script(*[error(500, "model requires more system memory (40.1 GiB) than is available (11.2 GiB)")] * 3)
    model = OpenAIChatModel(
        "llama3.1:70b", base_url=llm.base_url, client=http, max_attempts=3, backoff_initial=0.01
    )
    with pytest.raises(ModelError) as failed:
        async for _ in model.stream([Message("user", "hi")], [], ModelSettings()):
            pass
    assert len(llm.requests) == 1 and not failed.value.retryable
    assert "too little memory for the model: use a smaller one" in str(failed.value), failed.value


async def test_openrouter_without_a_tool_provider_for_the_model_is_not_blamed_on_the_base_url(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    # OpenRouter answers HTTP 404 "No endpoints found that support tool use" for a model none of whose
    # providers takes tools (many :free ones): ask said "no Chat Completions API at URL (HTTP 404: its path
    # was not found): check OPENAI_BASE_URL", and the operator checked a base URL that was right.
    said = "No endpoints found that support tool use. To learn more about provider routing, visit: ..."
    llm.script(error(404, said))
    model = OpenAIChatModel("deepseek/deepseek-r1:free", base_url=llm.base_url, client=http, max_attempts=1)
    with pytest.raises(ModelError) as failed:
        async for _ in model.stream([Message("user", "hi")], [], ModelSettings()):
            pass
    assert "no provider of this model takes tools" in str(failed.value), failed.value
    assert "OPENAI_BASE_URL" not in str(failed.value) and not failed.value.retryable
