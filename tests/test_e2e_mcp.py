"""MCP tools in the product, as operators and members meet them: the real bot and `agentbot ask` with
MCP_SERVERS_FILE naming a real MCP server (the official SDK's FastMCP) run as a stdio subprocess."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.warm_agentbot import agentbot_process

ROOT = Path(__file__).resolve().parents[1]


def servers_file(tmp_path: Path, *, down: bool = False) -> Path:
    f = tmp_path / "mcp.toml"
    body = (
        "[servers.lab]\n"
        f"command = {json.dumps(sys.executable)}\n"
        'args = ["-m", "tests.fakes.mcp_server"]\n'
        f"env = {{ PYTHONPATH = {json.dumps(str(ROOT))} }}\n"
    )
    if down:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        body += f'[servers.gone]\nurl = "http://127.0.0.1:{port}/mcp"\nconnect_timeout = 2\n'
    f.write_text(body)
    return f


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",), admins=("admin",))


async def research_thread(fake: FakeDiscord, guild: FakeGuild, bot: object, task: str) -> list[str]:
    """Alice's /research in #general, run to its footer: what the thread shows."""
    general = guild.channel("general")
    fake.inject_interaction("research", {"task": task}, user="alice", channel=general)
    thread = await fake.wait_for_thread(parent=general, name=None)
    await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
    await wait_idle(fake, bot)  # type: ignore[arg-type]
    return [m.content for m in fake.messages(thread)]


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_mcp_tool_streams_into_the_thread_like_any_step(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(tool_call("lab__lookup", {"code": "Q-9"}), text("Part Q-9 is on shelf B4 (12 in stock)."))
    env = {"MCP_SERVERS_FILE": str(servers_file(tmp_path, down=True))}
    async with running_bot(fake, llm, tmp_path / "data", guild, agent_env=env) as bot:
        assert set(bot.services.mcp.problems) == {"gone"}  # down: left out, the bot still starts
        assert "lab__lookup" in bot.services.tools.names()
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Where is part Q-9?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, name=None)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
        await wait_idle(fake, bot)
        contents = [m.content for m in fake.messages(thread)]
    step = next(c for c in contents if "lab__lookup" in c)
    assert "Q-9" in step and "shelf B4" in step  # the call and its result, shown as a step
    tools_sent = {t["function"]["name"] for t in llm.requests[0]["tools"]}
    assert "lab__lookup" in tools_sent and not any(n.startswith("gone__") for n in tools_sent)
    assert "12 in stock" in llm.requests[1]["messages"][-1]["content"]  # the model read the tool's answer


async def test_e2e_mcp_in_ask_and_a_missing_file_is_one_line(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(tool_call("lab__add", {"a": 20, "b": 22}), text("It is 42."))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-mcp-test-key-0001",
        "DATA_DIR": str(tmp_path / "data"),
        "PYTHON_SANDBOX": "off",
        "MCP_SERVERS_FILE": str(servers_file(tmp_path)),
    }
    code, out, err = await agentbot_process("ask", "What is 20 + 22?", cwd=tmp_path, env=env)
    assert code == 0, err.decode()
    assert out.decode().strip() == "It is 42." and "lab__add" in err.decode()
    env["MCP_SERVERS_FILE"] = str(tmp_path / "missing.toml")
    code, out, err = await agentbot_process("ask", "hi", cwd=tmp_path, env=env)
    lines = err.decode().strip().splitlines()
    assert code == 2 and out == b"" and len(lines) == 1 and "MCP_SERVERS_FILE" in lines[0]


async def test_e2e_config_mcp_adds_a_servers_own_http_mcp_tools(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    from tests.fakes.mcp_server import HttpMcpServer
    from tests.test_e2e_config import run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    llm.script(tool_call("inv__lookup", {"code": "R-2"}), text("R-2 is on shelf B4."))
    env = {"FETCH_ALLOW_LOOPBACK": True}  # the SSRF guard lets loopback through in tests only
    with HttpMcpServer() as server:
        async with running_bot(fake, llm, tmp_path / "data", guild, agent_env=env) as bot:
            ok = await run(fake, guild, "config mcp", {"name": "inv", "url": server.url})
            assert "mcp.inv" in ok.content or "inv" in ok.content, ok.content
            await run(fake, guild, "config mcp", {"name": "dead", "url": f"http://127.0.0.1:{closed}/mcp"})
            listing = await run(fake, guild, "config mcp")
            assert "`inv`" in listing.content and "`dead`" in listing.content
            refused = await run(fake, guild, "config mcp", {"name": "x", "url": "ftp://files"})
            assert "http://" in refused.content  # a clear refusal naming what is allowed
            contents = await research_thread(fake, guild, bot, "Where is R-2?")
    assert any("inv__lookup" in c and "shelf B4" in c for c in contents)  # the server's own tool ran
    assert sum("MCP server `dead` is left out" in c for c in contents) == 1  # said once, run went on
    assert "inv__lookup" in {t["function"]["name"] for t in llm.requests[0]["tools"]}


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_mcp_goes_through_the_ssrf_guard(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    from tests.fakes.mcp_server import HttpMcpServer
    from tests.test_e2e_config import run

    llm.script(text("Nothing to look up."))
    with HttpMcpServer() as server:
        async with running_bot(fake, llm, tmp_path / "data", guild) as bot:  # loopback not allowed
            # Refused where the admin adds it, in the guard's own words, and nothing is stored.
            said = await run(fake, guild, "config mcp", {"name": "inv", "url": server.url})
            listing = await run(fake, guild, "config mcp")
            await research_thread(fake, guild, bot, "anything")
    assert "not added" in said.content and "loopback" in said.content, said.content
    assert "`inv`" not in listing.content, listing.content
    assert not any(t["function"]["name"].startswith("inv__") for t in llm.requests[0].get("tools", []))
