"""Settings mistakes an operator makes, met through the installed ``agentbot`` command against loopback
servers: what was pasted, typed or mixed up, and what the command says about it."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.llm_server import FakeLLM, text
from tests.test_blackbox_operator import agentbot


async def test_a_key_pasted_with_a_trailing_newline_or_space_still_works(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # `echo sk-... > key; OPENAI_API_KEY=$(cat key)` is fine, but docker's env files, YAML blocks and
    # copied terminal lines keep a trailing newline or space, which no HTTP header may carry.
    llm.api_key = "sk-test-key-0001"
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "gpt-4o-mini", "MEMORY_ENABLED": "false"}
    for pasted in ("sk-test-key-0001\n", " sk-test-key-0001 ", "Bearer sk-test-key-0001"):
        llm.script(text("pong"))
        code, out, err = await agentbot(tmp_path, "ask", "ping", env=env | {"OPENAI_API_KEY": pasted})
        assert (code, out) == (0, "pong\n"), err[-1500:]
    # A line break inside the key is a mistake to name at once, not 16 s of "could not be reached".
    code, out, err = await agentbot(
        tmp_path, "ask", "ping", env=env | {"OPENAI_API_KEY": "sk-test\nkey-0001"}
    )
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and "OPENAI_API_KEY" in err and "key-0001" not in err, err


async def test_an_anthropic_or_gemini_only_setup_starts_and_a_bare_claude_name_is_pointed_out(
    tmp_path: Path,
) -> None:
    base = {"MEMORY_ENABLED": "false"}
    for key, spec in (
        ("ANTHROPIC_API_KEY", "anthropic:claude-sonnet-4-5"),
        ("GEMINI_API_KEY", "gemini:gemini-2.5-flash"),
    ):
        env = base | {key: "sk-ant-test-0001" if "ANTHROPIC" in key else "AIzaTest0001", "AGENT_MODEL": spec}
        code, _, err = await agentbot(tmp_path, "run", env=env)
        # No OpenAI key is needed for a model on another API: the next thing missing is the Discord token.
        assert code == 2 and "DISCORD_TOKEN is not set" in err, err
        assert "OPENAI_API_KEY" not in err, err
    # The key is there but the name has no prefix, so it would go to OPENAI_BASE_URL: say how to write it.
    env = base | {"ANTHROPIC_API_KEY": "sk-ant-test-0001", "AGENT_MODEL": "claude-sonnet-4-5"}
    for command in ("ask", "run"):
        code, out, err = await agentbot(tmp_path, command, *(["hi"] if command == "ask" else []), env=env)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "anthropic:claude-sonnet-4-5" in err, err
    # A provider's model without that provider's key names the key, for ask and run alike.
    env = base | {"AGENT_MODEL": "gemini:gemini-2.5-flash"}
    for command in ("ask", "run"):
        code, out, err = await agentbot(tmp_path, command, *(["hi"] if command == "ask" else []), env=env)
        assert code == 2 and "GEMINI_API_KEY is not set" in err and "OPENAI_API_KEY" not in err, err


async def test_price_and_tier_files_saved_by_windows_editors_are_read_or_named(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # Notepad saves UTF-8 with a byte-order mark; a Latin-1 editor writes "é" as one byte.
    prices = '{"models": {"my-llama": {"input": 1000, "output": 2000, "source": "GPU bill, café"}}}'
    tiers = '[tiers]\nsimple = ["my-llama"]  # café\nmedium = ["my-llama"]\ncomplex = ["my-llama"]\n'
    (tmp_path / "bom-prices.json").write_bytes(b"\xef\xbb\xbf" + prices.encode())
    (tmp_path / "bom-tiers.toml").write_bytes(b"\xef\xbb\xbf" + tiers.encode())
    (tmp_path / "latin1-prices.json").write_bytes(prices.encode("latin-1"))
    (tmp_path / "latin1-tiers.toml").write_bytes(tiers.encode("latin-1"))
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "my-llama",
        "MEMORY_ENABLED": "false",
        "PRICES_FILE": str(tmp_path / "bom-prices.json"),
        "ROUTER_TIERS_FILE": str(tmp_path / "bom-tiers.toml"),
    }
    llm.script(text("pong", prompt_tokens=100, completion_tokens=20))
    code, out, err = await agentbot(tmp_path, "ask", "ping", env=env)
    assert (code, out) == (0, "pong\n"), err[-1500:]
    assert "cost $0.1400" in err, err  # 100 x $1000/M + 20 x $2000/M, from the file
    for setting, name in (("PRICES_FILE", "latin1-prices.json"), ("ROUTER_TIERS_FILE", "latin1-tiers.toml")):
        bad = env | {setting: str(tmp_path / name)}
        code, out, err = await agentbot(tmp_path, "ask", "ping", env=bad)
        assert code == 2 and out == "" and "Traceback" not in err, err[-1500:]
        assert len(err.strip().splitlines()) == 1 and setting in err and "UTF-8" in err, err
        if setting == "ROUTER_TIERS_FILE":  # the one that was a traceback in doctor too
            code, out, err = await agentbot(tmp_path, "doctor", env=bad)
            assert code == 1 and "Traceback" not in out + err, err[-1500:]
            assert f"FAIL settings: {setting}" in out and "UTF-8" in out, out


async def test_a_discord_token_pasted_with_its_bot_prefix_is_accepted(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    # The HTTP header is "Authorization: Bot <token>", and guides show it so; pasting it whole was
    # "Discord rejected DISCORD_TOKEN (401): reset the token", which does not help.
    env = {
        "DISCORD_TOKEN": f"Bot {fake.token}",
        "DISCORD_API_BASE_URL": fake.api_url,
        "MEMORY_ENABLED": "false",
        "PYTHON_SANDBOX": "off",
        "ROUTER_CLASSIFIER": "heuristic",
    }
    _, out, err = await agentbot(tmp_path, "doctor", env=env)
    line = next(x for x in out.splitlines() if x.split(":")[0].endswith("discord"))
    assert line.startswith("ok"), line + err


async def test_a_model_slower_than_the_read_timeout_names_model_timeout(llm: FakeLLM, tmp_path: Path) -> None:
    # A CPU-only Ollama reading a long prompt (or loading a model) sends nothing for minutes; the fixed
    # 120 s wait said "check OPENAI_BASE_URL and that the server runs", and nothing could lengthen it.
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "llama3.1",
        "MEMORY_ENABLED": "false",
        "MODEL_MAX_ATTEMPTS": "1",
        "MODEL_TIMEOUT": "1",
    }
    llm.script(text("late", delay=2.5))
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=env)
    assert code == 1 and out == "", err[-1500:]
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "MODEL_TIMEOUT" in line and "1 s" in line, line
    llm.script(text("late", delay=2.5))
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=env | {"MODEL_TIMEOUT": "10"})
    assert (code, out) == (0, "late\n"), err[-1500:]


async def test_a_provider_prefix_written_with_a_capital_is_still_that_provider(tmp_path: Path) -> None:
    env = {"AGENT_MODEL": "Gemini:gemini-2.5-flash", "MEMORY_ENABLED": "false"}
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=env)
    assert code == 2 and out == "" and "GEMINI_API_KEY is not set" in err, err  # not OPENAI_API_KEY


async def test_run_with_a_health_port_in_use_names_health_port_not_discord(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "gpt-4o-mini",
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "MEMORY_ENABLED": "false",
        "HEALTH_PORT": str(port),
    }
    try:
        code, _, err = await agentbot(tmp_path, "run", env=env)
    finally:
        taken.close()
    assert code == 2 and "Traceback" not in err, err[-1500:]
    line = err.strip().splitlines()[-1]
    assert "HEALTH_PORT" in line and str(port) in line and "Discord" not in line, line


async def test_an_empty_task_is_refused_before_any_paid_call(llm: FakeLLM, tmp_path: Path) -> None:
    # `agentbot ask "$QUESTION"` with the variable unset sent an empty message and paid for the reply.
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1", "MEMORY_ENABLED": "false"}
    for task in ("", "  \n"):
        code, out, err = await agentbot(tmp_path, "ask", task, env=env)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "task" in err, err
    assert llm.requests == []


async def test_price_and_tier_files_given_from_the_home_directory_are_found(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # A .env line is not expanded by a shell: PRICES_FILE=~/prices.json was "No such file" (MCP_SERVERS_FILE
    # already took ~).
    (tmp_path / "prices.json").write_text('{"models": {"my-llama": {"input": 1000, "output": 2000}}}')
    (tmp_path / "tiers.toml").write_text('[tiers]\nsimple = ["my-llama"]\n')
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "my-llama",
        "MEMORY_ENABLED": "false",
        "PRICES_FILE": "~/prices.json",  # HOME is tmp_path
        "ROUTER_TIERS_FILE": "~/tiers.toml",
    }
    llm.script(text("pong", prompt_tokens=100, completion_tokens=20))
    code, out, err = await agentbot(tmp_path, "ask", "ping", env=env)
    assert (code, out) == (0, "pong\n"), err[-1500:]
    assert "cost $0.1400" in err, err
