"""``agentbot doctor`` in a real process against the fake Discord and the scripted LLM."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.warm_agentbot import agentbot_process

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord([FakeGuild.create("Lab")]) as server:
        yield server


async def doctor(fake: FakeDiscord, llm: FakeLLM, tmp_path: Path, **extra: str) -> tuple[int, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "DISCORD_", "ANTHROPIC_", "GEMINI_"))
    }
    env |= {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-doctor-good-key-1",
        "DATA_DIR": str(tmp_path),
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "MEMORY_ENABLED": "false",
    } | extra
    code, out, _ = await agentbot_process("doctor", cwd=tmp_path, env=env, stderr_to_stdout=True)
    return code, out.decode()


async def test_doctor_all_good_exits_0(fake: FakeDiscord, llm: FakeLLM, tmp_path: Path) -> None:
    llm.api_key = "sk-doctor-good-key-1"
    code, out = await doctor(fake, llm, tmp_path)
    assert code == 0, out
    assert (
        "ok   discord: token accepted" in out and "ok   database:" in out and "ok   provider openai:" in out
    )
    assert "ok   router: ROUTER_CLASSIFIER=embedding: a test ask routed complex (embedding)" in out
    assert "research tiers: off" in out  # one model on every tier: nothing to hand over to
    assert "ok   provider openai: serves every model the tiers name: gpt-4o-mini" in out
    assert (tmp_path / "agentbot.sqlite3").exists()


async def test_doctor_names_each_model_the_endpoint_does_not_serve(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    llm.known_models = {"llama3.1"}  # an Ollama-like endpoint that serves one model
    quick = {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off"}  # checks this test is not about
    code, out = await doctor(fake, llm, tmp_path, AGENT_MODEL="llama3.1", **quick)
    assert code == 0, out
    assert "ok   provider openai: serves every model the tiers name: llama3.1" in out
    code, out = await doctor(fake, llm, tmp_path, AGENT_MODEL="llama3.1", ROUTER_TIERS_FILE="hosted", **quick)
    assert code == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("FAIL provider openai"))
    assert "does not serve gpt-4.1-nano (simple); gpt-5-mini (medium); gpt-5 (complex)" in line
    assert "ROUTER_TIERS_FILE" in line and "llama3.1" in line


async def test_doctor_probes_models_when_the_server_has_no_model_list(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    llm.known_models = {"llama3.1"}
    llm.models_route = False  # e.g. llama.cpp builds without GET /v1/models: a one-token call per model
    llm.responder = lambda body: text("pong")
    quick = {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off"}
    code, out = await doctor(fake, llm, tmp_path, AGENT_MODEL="llama3.1", **quick)
    assert code == 0, out
    f = tmp_path / "tiers.toml"
    f.write_text('[tiers]\ncomplex = ["qwen2.5:32b"]\n')
    code, out = await doctor(fake, llm, tmp_path, AGENT_MODEL="llama3.1", ROUTER_TIERS_FILE=str(f), **quick)
    assert code == 1 and "does not serve qwen2.5:32b (complex)" in out


async def test_doctor_names_what_to_fix_without_printing_secrets(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    llm.api_key = "sk-the-real-key-0000"
    code, out = await doctor(
        fake,
        llm,
        tmp_path,
        DISCORD_TOKEN="wrong-discord-token-123",
        AGENT_MAX_STEPS="12",
    )
    assert code == 1
    assert "FAIL discord: Discord rejected DISCORD_TOKEN (401)" in out
    assert "FAIL provider openai:" in out and "rejected the API key" in out
    assert "wrong-discord-token-123" not in out and "sk-doctor-good-key-1" not in out
    code, out = await doctor(fake, llm, tmp_path, AGENT_MAX_STEPS="many")
    assert code == 1 and "AGENT_MAX_STEPS='many'" in out
    code, out = await doctor(fake, llm, tmp_path, ROUTER_RESEARCH_TIERS="complex=complex")
    assert code == 1 and "FAIL settings: ROUTER_RESEARCH_TIERS='complex=complex'" in out
    assert "must be below complex" in out


async def agentbot_run(llm: FakeLLM, tmp_path: Path, **extra: str) -> tuple[int, str]:
    """``agentbot run`` in a real process until it exits; (exit code, everything it printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_", "ANTHROPIC_"))}
    env |= {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-doctor-good-key-1",
        "DATA_DIR": str(tmp_path),
        "MEMORY_ENABLED": "false",
        "PYTHON_SANDBOX": "off",
    } | extra
    code, out, _ = await agentbot_process("run", cwd=tmp_path, env=env, stderr_to_stdout=True)
    return code, out.decode()


async def test_cli_run_with_a_rejected_token_exits_1_and_says_what_to_do(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    code, out = await agentbot_run(
        llm,
        tmp_path,
        DISCORD_TOKEN="not-the-right-token-42",
        DISCORD_API_BASE_URL=fake.api_url,
        DISCORD_GATEWAY_URL=fake.gateway_url,
    )
    assert code == 1
    assert "Discord rejected DISCORD_TOKEN" in out and "not-the-right-token-42" not in out


async def test_cli_run_with_discord_unreachable_exits_1_and_says_so(llm: FakeLLM, tmp_path: Path) -> None:
    code, out = await agentbot_run(
        llm, tmp_path, DISCORD_TOKEN="some-token-123456", DISCORD_API_BASE_URL="http://127.0.0.1:9/api/v10"
    )
    assert code == 1
    assert "could not reach Discord" in out and "Traceback" not in out


async def test_cli_run_with_an_unusable_reader_model_exits_2_naming_it(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    code, out = await agentbot_run(
        llm,
        tmp_path,
        DISCORD_TOKEN=fake.token,
        DISCORD_API_BASE_URL=fake.api_url,
        DISCORD_GATEWAY_URL=fake.gateway_url,
        READER_MODEL="anthropic:claude-haiku-4-5",
    )
    assert code == 2 and "Traceback" not in out
    assert "READER_MODEL='anthropic:claude-haiku-4-5' cannot be used" in out and "ANTHROPIC_API_KEY" in out
