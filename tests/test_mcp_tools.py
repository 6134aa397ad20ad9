"""MCP tools against a real MCP server built with the official SDK: as a stdio subprocess and over
streamable HTTP on 127.0.0.1, through the same registry and agent loop as built-in tools."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent import ToolRegistry
from agent.events import ToolCallEvent, ToolResultEvent
from agent.messages import ToolCall
from agent.tools.mcp import McpConfigError, McpServer, McpTools, load_servers
from agent.tools.registry import ToolContext
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.mcp_server import HttpMcpServer
from tests.test_agent_loop import collect, make_agent

ROOT = str(Path(__file__).resolve().parents[1])


def stdio_server(name: str = "lab", **kw: object) -> McpServer:
    return McpServer(
        name, command=sys.executable, args=("-m", "tests.fakes.mcp_server"), env={"PYTHONPATH": ROOT}, **kw
    )  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def call(reg: ToolRegistry, name: str, args: dict[str, object]) -> tuple[str, bool]:
    out = await reg.execute(ToolCall(id="c1", name=name, arguments=json.dumps(args)), ToolContext())
    return out.output, out.is_error


@pytest.fixture
async def stdio_tools() -> AsyncIterator[McpTools]:
    async with McpTools([stdio_server(max_output=2000)]) as m:
        yield m


async def test_mcp_stdio_tools_are_namespaced_with_their_schemas(stdio_tools: McpTools) -> None:
    reg = ToolRegistry(stdio_tools.tools())
    assert {"lab__add", "lab__lookup", "lab__broken", "lab__slow", "lab__picture"} <= set(reg.names())
    spec = reg.get("lab__add").spec()  # type: ignore[union-attr]
    assert spec["parameters"]["properties"].keys() == {"a", "b"} and set(spec["parameters"]["required"]) == {
        "a",
        "b",
    }
    assert spec["description"].startswith("[lab MCP server] Add two integers")
    assert await call(reg, "lab__add", {"a": 2, "b": 40}) == ("42", False)


async def test_mcp_bad_arguments_and_server_errors_become_observations(stdio_tools: McpTools) -> None:
    reg = ToolRegistry(stdio_tools.tools())
    out, err = await call(reg, "lab__add", {"a": "two", "b": 1})
    assert err and "invalid arguments for lab__add" in out and "'a'" in out
    out, err = await call(reg, "lab__broken", {})
    assert err and "inventory database is offline" in out
    out, err = await call(reg, "lab__huge", {})
    assert not err and len(out) < 2300 and "output truncated: showing the first 2000 of 50000" in out
    out, err = await call(reg, "lab__picture", {})
    assert not err and "image content (image/png) not shown" in out


async def test_mcp_http_server_works_and_a_slow_call_times_out_without_breaking_it() -> None:
    with HttpMcpServer() as server:
        async with McpTools([McpServer("inv", url=server.url, timeout=1.0)]) as m:
            reg = ToolRegistry(m.tools())
            assert await call(reg, "inv__lookup", {"code": "R-17"}) == (
                "part R-17: 12 in stock, shelf B4",
                False,
            )
            out, err = await call(reg, "inv__slow", {"seconds": 5})
            assert err and "timed out after 1 s" in out
            assert await call(reg, "inv__add", {"a": 1, "b": 1}) == ("2", False)


async def test_mcp_server_down_is_reported_once_and_left_out() -> None:
    servers = [
        McpServer("gone", url=f"http://127.0.0.1:{closed_port()}/mcp", connect_timeout=3),
        McpServer("nocmd", command="/nonexistent/mcp-server", connect_timeout=3),
        stdio_server(),
    ]
    async with McpTools(servers) as m:
        assert set(m.problems) == {"gone", "nocmd"}
        assert "Connect" in m.problems["gone"] or "connect" in m.problems["gone"]
        names = {t.name for t in m.tools()}
        assert "lab__add" in names and not any(n.startswith(("gone__", "nocmd__")) for n in names)


async def test_mcp_tool_streams_as_a_step_of_the_agent(
    stdio_tools: McpTools, llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    llm.script(tool_call("lab__lookup", {"code": "Q-9"}), text("Shelf B4 has 12 of part Q-9."))
    agent = make_agent(llm, http, stdio_tools.tools())
    events = await collect(agent, "Where is part Q-9?")
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert [c.name for c in calls] == ["lab__lookup"]
    assert "part Q-9: 12 in stock" in results[0].output and not results[0].is_error
    sent_tools = {t["function"]["name"] for t in llm.requests[0]["tools"]}
    assert "lab__lookup" in sent_tools


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[servers.Bad]\nurl='http://x/mcp'", "a server name is 1-24"),
        ("[servers.a]\nurl='http://x/mcp'\ncommand='x'", "exactly one of url"),
        ("[servers.a]\nurl='ftp://x'", "url must start with http"),
        ("[servers.a]\ncommand='x'\ntimeout=0", "timeout must be a number from 1 to 600"),
        ("[servers.a]\ncommand='x'\nargs='-v'", "args must be a list of strings"),
        ("[servers.a]\ncommand='x'\nbogus=1", "unknown key 'bogus'"),
        ("servers = [", "cannot read it as TOML"),
    ],
)
def test_mcp_config_errors_name_the_file_and_key(tmp_path: Path, body: str, expected: str) -> None:
    f = tmp_path / "mcp.toml"
    f.write_text(body)
    with pytest.raises(McpConfigError) as e:
        load_servers(f)
    assert expected in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(McpConfigError, match="no such file"):
        load_servers(tmp_path / "missing.toml")


def test_mcp_config_saved_by_windows_editors_is_read_or_named(tmp_path: Path) -> None:
    """Notepad's UTF-8 starts with a byte-order mark, which TOML refuses ("Invalid statement"); a Latin-1
    file is one line naming the setting, as PRICES_FILE and ROUTER_TIERS_FILE are."""
    f = tmp_path / "mcp.toml"
    f.write_text("[servers.a]\nurl = 'http://x/mcp'\n", encoding="utf-8-sig")
    assert [s.url for s in load_servers(f)] == ["http://x/mcp"]
    f.write_bytes(b"[servers.a]\nurl = 'http://x/caf\xe9'\n")
    with pytest.raises(McpConfigError, match=r"MCP_SERVERS_FILE=.*not UTF-8 text.*save it as UTF-8"):
        load_servers(f)


def test_mcp_config_reads_both_transports(tmp_path: Path) -> None:
    f = tmp_path / "mcp.toml"
    f.write_text(
        "[servers.files]\ncommand = 'npx'\nargs = ['-y', 'server-files']\nenv = { ROOT = '/srv' }\n"
        "[servers.inv]\nurl = 'https://mcp.example/mcp'\nheaders = { Authorization = 'Bearer t' }\n"
        "timeout = 20\ntools = ['lookup']\n"
    )
    files, inv = load_servers(f)
    assert (files.transport, files.args, dict(files.env)) == (
        "stdio",
        ("-y", "server-files"),
        {"ROOT": "/srv"},
    )
    assert (inv.transport, inv.timeout, inv.tools) == ("http", 20.0, ("lookup",))
