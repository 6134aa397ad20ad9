"""MCP servers as operators meet them when a server is broken or hostile, through the installed
``agentbot ask`` with MCP_SERVERS_FILE naming a real stdio MCP server (tests/fakes/mcp_hostile.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from aiohttp import web

from agent.tools.registry import ToolRefused
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.mcp_hostile import FloodingHttpMcp
from tests.fakes.served import served
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


async def test_mcp_http_server_flooding_an_answer_is_cut_off_not_held_in_memory(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # Its answer never ends: the bot read all of it until the call's timeout (1.9 GB in 8 s, where a
    # /config mcp server's call may take 30 s), so one server's admin could take the bot down for all.
    llm.script(tool_call("fl__flood", {"text": "go"}), tool_call("fl__echo", {"text": "hi"}), text("Done."))
    async with FloodingHttpMcp() as server:
        servers = tmp_path / "mcp.toml"
        servers.write_text(f'[servers.fl]\nurl = "{server.url}"\ntimeout = 3\n')
        env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1", "MCP_SERVERS_FILE": str(servers)}
        code, out, err = await agentbot(tmp_path, "ask", "Flood me", env=env)
    assert (code, out) == (0, "Done.\n"), err[-3000:]
    assert server.sent < 64 * 2**20, f"the bot read {server.sent >> 20} MiB of one answer"
    flood, echo = (m["content"] for m in llm.requests[2]["messages"] if m["role"] == "tool")
    assert "error" in flood and echo == "echo: hi"  # the call failed; the server's other tools still work


async def test_mcp_schema_regexes_cannot_freeze_the_bot(llm: FakeLLM, tmp_path: Path) -> None:
    # The schema's "^(a+)+$" (as pattern, and as a patternProperties name under additionalProperties
    # false) ran on the bot's event loop: 30 a's and a '!' froze every run of every server for minutes.
    attack = "a" * 30 + "!"
    llm.script(tool_call("h__find", {"text": attack, "b" * 30 + "!": "x"}), text("Done."))
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "llama3.1",
        "PYTHON_SANDBOX": "off",
        "MCP_SERVERS_FILE": str(hostile_file(tmp_path, "h")),
    }
    code, out, err = await agentbot(tmp_path, "ask", "Find it", env=env)
    assert (code, out) == (0, "Done.\n"), err[-3000:]
    assert f"find: {attack}" in llm.requests[1]["messages"][-1]["content"]  # the server judged it


async def test_mcp_schema_refs_to_urls_are_never_fetched_by_the_bot(llm: FakeLLM, tmp_path: Path) -> None:
    # jsonschema fetched a "$ref": "http://..." with urllib, on the event loop, without the SSRF guard
    # or a timeout: a server's schema could make the bot GET its metadata or internal addresses, or
    # freeze it on an address that never answers.
    fetched: list[str] = []

    async def schema(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.json_response({"type": "string"})

    app = web.Application()
    app.router.add_get("/latest/meta-data/", schema)
    async with served(app) as base:
        servers = hostile_file(tmp_path, "h")
        servers.write_text(
            servers.read_text().replace(" }", f', HOSTILE_REF = "{base}/latest/meta-data/" }}')
        )
        llm.script(tool_call("h__ref", {"text": "x"}), text("Done."))
        env = {
            "OPENAI_BASE_URL": llm.base_url,
            "AGENT_MODEL": "llama3.1",
            "PYTHON_SANDBOX": "off",
            "MCP_SERVERS_FILE": str(servers),
        }
        code, out, err = await agentbot(tmp_path, "ask", "Use ref", env=env)
    assert (code, out) == (0, "Done.\n"), err[-3000:]
    assert fetched == []
    said = llm.requests[1]["messages"][-1]["content"]
    assert "error" in said and base.removeprefix("http://") in said, said  # the model is told why


async def test_mcp_http_answer_that_cannot_be_read_fails_the_call_at_once(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # A proxy's HTML error page sent as application/json: the SDK drops the answer and the call waited
    # for its whole timeout (30 s by default), on every call, stalling the run.
    llm.script(tool_call("fl__garbage", {"text": "x"}), tool_call("fl__echo", {"text": "hi"}), text("Done."))
    async with FloodingHttpMcp() as server:
        servers = tmp_path / "mcp.toml"
        servers.write_text(f'[servers.fl]\nurl = "{server.url}"\ntimeout = 20\n')
        env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1", "MCP_SERVERS_FILE": str(servers)}
        code, out, err = await agentbot(tmp_path, "ask", "Try it", env=env)
    assert (code, out) == (0, "Done.\n"), err[-3000:]
    garbage, echo = (m["content"] for m in llm.requests[2]["messages"] if m["role"] == "tool")
    assert "could not be read" in garbage and "timed out" not in garbage, garbage
    assert echo == "echo: hi"


async def test_mcp_server_restarted_between_turns_works_again(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # A server's own MCP server was redeployed: its new process does not know the bot's session, and
    # every later call answered "Session terminated" until the bot itself was restarted.
    from tests.fakes.mcp_server import HttpMcpServer
    from tests.test_e2e_config import run

    llm.script(
        tool_call("inv__add", {"a": 1, "b": 2}),
        text("It is 3."),
        tool_call("inv__add", {"a": 20, "b": 22}),
        text("It is 42."),
    )
    env = {"FETCH_ALLOW_LOOPBACK": True}
    general = guild.channel("general")
    async with running_bot(fake, llm, tmp_path / "data", guild, agent_env=env) as bot:
        with HttpMcpServer() as server:
            await run(fake, guild, "config mcp", {"name": "inv", "url": server.url})
            fake.inject_interaction("research", {"task": "What is 1 + 2?"}, user="alice", channel=general)
            thread = await fake.wait_for_thread(parent=general)
            await fake.wait_for_message(thread, lambda m: "It is 3." in m.content, within=30)
            await wait_idle(fake, bot)
        with HttpMcpServer(server.port):  # the same address, a new process
            fake.inject_message(thread, "alice", "And 20 + 22?")
            await fake.wait_for_message(thread, lambda m: "It is 42." in m.content, within=30)
            await wait_idle(fake, bot)
    step = [m.content for m in fake.messages(thread) if "inv__add" in m.content][-1]
    assert "a=20" in step and "42" in step and "Session terminated" not in step, step


async def test_mcp_tools_closed_with_the_bot_never_start_their_server_again(tmp_path: Path) -> None:
    # A call still running while the bot shuts down finds its server closed: it must not reconnect
    # (for stdio: spawn the server again) after the bot has let go of it.
    from agent.tools.mcp import McpTools, load_servers

    mcp = McpTools(load_servers(hostile_file(tmp_path, "h")))
    await mcp.connect()
    echo = next(t for t in mcp.tools() if t.name == "h__echo")
    assert (await echo.fn(text="a")).text == "echo: a"
    await mcp.aclose()
    with pytest.raises(ToolRefused, match="unavailable"):
        await echo.fn(text="b")
    await mcp.aclose()  # nothing was started again: nothing to wait for
