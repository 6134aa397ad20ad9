"""Hostile members, pages, attachments, MCP servers and sandboxed code against the product's real entry
points (``agentbot ask`` in a subprocess, the fake Discord, servers on 127.0.0.1), found by the third
black-box security QA. Each test failed before the fix its comment names."""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentSettings
from bot.config import BotSettings
from bot.doctor import _check, _database
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.test_blackbox_ask_tools import ask_cli


async def test_deeply_nested_tool_arguments_are_an_observation_not_a_crash(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # A prompt-injected model sent calculator("[" * 100_000): json raises RecursionError (not a
    # ValueError), and the run died with a traceback on stderr (exit 1) instead of telling the model.
    llm.script(tool_call("calculator", "[" * 100_000), text("Done."))
    code, out, err = await ask_cli(llm, tmp_path, "add")
    assert (code, out) == (0, "Done.\n"), err[-2000:]
    told = llm.requests[1]["messages"][-1]["content"]
    assert "nested too deeply" in told and "Traceback" not in err


async def test_a_database_password_given_as_a_url_parameter_is_never_shown(tmp_path: Path) -> None:
    # libpq and asyncpg take ``?password=`` in DATABASE_URL; `agentbot doctor` printed it whole:
    # "FAIL database: DATABASE_URL: cannot connect to postgresql://***@.../db?password=S3CRET...".
    url = "postgresql://bob@127.0.0.1:1/agentbot?sslmode=disable&password=S3CRET-pg-0001"
    agent = AgentSettings.model_validate({"DATA_DIR": str(tmp_path)})
    check = await _check(
        "database", lambda: _database(agent, BotSettings.model_validate({"DATABASE_URL": url}))
    )
    assert not check.ok and "S3CRET" not in check.detail, check.detail
    assert "127.0.0.1:1/agentbot?sslmode=disable&password=***" in check.detail  # the rest stays readable
