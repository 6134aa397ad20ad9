"""The figures ``agentbot ask`` prints (tokens, cost) for models an operator really runs, against a
scripted OpenAI-compatible endpoint on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.llm_server import FakeLLM, text
from tests.test_blackbox_operator import agentbot


def _summary(err: str) -> str:
    return err.strip().splitlines()[-1]


async def test_a_local_model_with_an_ollama_tag_is_not_priced_as_a_hosted_api(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # `ollama run deepseek-r1:7b` is a 7B distillation on the operator's own GPU, not DeepSeek's API.
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "deepseek-r1:7b", "MEMORY_ENABLED": "false"}
    llm.script(text("Paris.", prompt_tokens=1000, completion_tokens=100))
    code, out, err = await agentbot(tmp_path, "ask", "Capital of France?", env=env)
    assert (code, out) == (0, "Paris.\n"), err[-1500:]
    assert "cost unknown (no price for deepseek-r1:7b)" in _summary(err), err
    # Its price comes from PRICES_FILE when the operator gives one.
    (tmp_path / "prices.json").write_text('{"models": {"deepseek-r1:7b": {"input": 100, "output": 1000}}}')
    llm.script(text("Paris.", prompt_tokens=1000, completion_tokens=100))
    env |= {"PRICES_FILE": str(tmp_path / "prices.json")}
    code, out, err = await agentbot(tmp_path, "ask", "Capital of France?", env=env)
    assert code == 0 and "cost $0.2000" in _summary(err), err


async def test_a_model_priced_in_prices_file_stays_priced_when_the_server_reports_another_name(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # vLLM started with --served-model-name team-llama llama answers "team-llama" to a call for "llama";
    # LiteLLM and LM Studio report their own names for an alias too. The operator priced what they call.
    (tmp_path / "prices.json").write_text('{"models": {"llama": {"input": 100, "output": 1000}}}')
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "llama",
        "PRICES_FILE": str(tmp_path / "prices.json"),
        "MEMORY_ENABLED": "false",
    }
    llm.script(text("Paris.", prompt_tokens=1000, completion_tokens=100, model="team-llama"))
    code, out, err = await agentbot(tmp_path, "ask", "Capital of France?", env=env)
    assert (code, out) == (0, "Paris.\n"), err[-1500:]
    assert "cost $0.2000" in _summary(err), err  # not "unknown (no price for team-llama)"
