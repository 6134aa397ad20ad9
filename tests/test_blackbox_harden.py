"""Security principles that did not hold yet, each driven where a hostile member or server meets it:
an MCP URL whose name points inside, a model answer read whole past its bound, a stdio MCP server whose
children leave its process group, and what probing the same rooms found. In-process where possible."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from mcp.client.stdio import StdioServerParameters, get_default_environment
from structlog.testing import capture_logs

from agent.config import AgentSettings
from agent.embeddings.base import EmbeddingError
from agent.embeddings.openai_compat import OpenAIEmbedding
from agent.messages import Message
from agent.models.anthropic import AnthropicModel
from agent.models.base import ModelError, ModelSettings, final_response
from agent.models.http import make_client
from agent.models.openai import OpenAIChatModel
from agent.tools import mcp_stderr, mcp_stdio
from agent.tools.fetch import FetchSettings, PageFetcher
from agent.tools.mcp_stderr import StderrTail
from bot import doctor
from bot import guild_mcp as guild_mcp_module
from bot.guild_mcp import GuildMcp
from tests.fakes.served import served


def _resolver(answers: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A stand-in for DNS: each name answers the addresses given, any other has no such name."""

    async def resolve(host: str, port: int) -> list[str]:
        if host == "hangs.example":  # its name server never answers
            await asyncio.Event().wait()
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "no such name")
        return answers[host]

    return resolve


async def test_config_mcp_refuses_a_name_that_resolves_to_a_private_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`/config mcp url:https://lan.example/mcp`, whose name answers 10.0.0.5 (or ::ffff:127.0.0.1), was
    accepted with a ✅ and then left out of every turn ("refused to connect"); only literal addresses were
    refused when added. A name with no address yet (not deployed), one whose name server does not answer
    (checked when a turn connects) and a public one are still accepted."""
    monkeypatch.setattr(guild_mcp_module, "LOOKUP_WAIT", 0.05)
    guild_mcp = GuildMcp(
        resolver=_resolver(
            {
                "lan.example": ["10.0.0.5"],
                "sneaky.example": ["93.184.216.34", "::ffff:127.0.0.1"],
                "public.example": ["93.184.216.34"],
            }
        )
    )
    lan = await guild_mcp.refusal("https://lan.example/mcp")
    assert lan is not None and "lan.example (which resolves to 10.0.0.5)" in lan, lan
    assert "private address" in lan, lan
    sneaky = await guild_mcp.refusal("http://sneaky.example:8080/mcp")
    assert sneaky is not None and "loopback address (wrapped in IPv6)" in sneaky, sneaky
    assert await guild_mcp.refusal("https://public.example/mcp") is None
    assert await guild_mcp.refusal("https://not-yet.example/mcp") is None
    assert await guild_mcp.refusal("https://hangs.example/mcp") is None


_FLOOD = 48 * 2**20
"""Bytes a server ignoring max_tokens sends as one whole answer: all of it was read before the cut."""


def _flooding_app(sent: dict[str, int], done: asyncio.Event) -> web.Application:
    """A provider whose every answer (or error) is one JSON body of 48 MiB, written until the client
    stops reading; ``sent`` counts what it managed to write, per kind."""

    async def answer(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        head, tail = {
            "openai": (
                b'{"choices":[{"message":{"role":"assistant","content":"',
                b'"},"finish_reason":"stop"}]}',
            ),
            "anthropic": (
                b'{"type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"',
                b'"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}',
            ),
            "error": (b'{"error":{"message":"', b'"}}'),
        }[kind]
        resp = web.StreamResponse(status=400 if kind == "error" else 200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        sent[kind] = 0
        chunk = b"x" * 2**16
        try:
            await resp.write(head)
            while sent[kind] < _FLOOD:
                await resp.write(chunk)
                sent[kind] += len(chunk)
            await resp.write(tail)
        except (ConnectionError, RuntimeError):  # the client stopped reading and closed
            pass
        finally:
            done.set()
        return resp

    app = web.Application()
    app.router.add_post("/{kind}/v1/chat/completions", answer)
    app.router.add_post("/{kind}/v1/messages", answer)
    return app


async def test_an_answer_read_whole_is_read_only_to_its_bound_not_to_128_mib() -> None:
    """With AGENT_STREAM=false (and from a server that answers a stream with one JSON body) an answer
    was read whole, up to the 128 MiB body cap, before it was cut to the answer bound: a server ignoring
    max_tokens=100 made the client take in 48 MiB (of which 1,600 characters were kept). It is read to
    the bound in JSON now (6 bytes a character plus 2 MiB) and refused past it, naming the way out; an
    error body is read to 1 MiB and its message still said."""
    sent: dict[str, int] = {}
    hi = [Message("user", "hi")]
    capped = ModelSettings(stream=False, max_tokens=100)
    async with served(_flooding_app(sent, done := asyncio.Event())) as base, make_client() as client:

        async def ask(model: OpenAIChatModel | AnthropicModel, settings: ModelSettings) -> str:
            done.clear()
            try:
                await final_response(model, hi, settings)
            except ModelError as e:
                return str(e)
            finally:
                await asyncio.wait_for(done.wait(), 60)  # the server saw the client go (or sent it all)
            return "answered"

        def openai(kind: str) -> OpenAIChatModel:
            return OpenAIChatModel(
                "m", base_url=f"{base}/{kind}/v1", api_key="sk-x", client=client, max_attempts=1
            )

        whole = await ask(openai("openai"), capped)
        json_for_a_stream = await ask(openai("openai"), dataclasses.replace(capped, stream=True))
        claude = AnthropicModel(
            "claude-x", base_url=f"{base}/anthropic/v1", api_key="k", client=client, max_attempts=1
        )
        anthropic = await ask(claude, capped)
        error = await ask(openai("error"), capped)
    for said in (whole, json_for_a_stream, anthropic):
        assert "in one answer read whole, past what its max_tokens allows" in said, said
        assert "AGENT_STREAM=true" in said, said
    assert "HTTP 400" in error or "400" in error, error
    assert all(n < _FLOOD // 2 for n in sent.values()), sent  # the rest was never read


def _processes_naming(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # it ended while we looked
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def _escaping_server(marker: str) -> StdioServerParameters:
    """A stdio server (behind ``sh``, as ``npx`` or ``uvx`` start theirs) whose children leave its process
    group: one calls ``setsid()``, one daemonizes with a double fork (its parent exits, so it is orphaned)."""
    py = sys.executable
    script = (
        f"{py} -c 'import os, time; os.setsid(); time.sleep(300)' {marker}-setsid & "
        f"{py} -c 'import os, time; os.fork() and os._exit(0); os.setsid(); time.sleep(300)' {marker}-daemon & "
        f"exec {py} -c 'import time; time.sleep(300)' {marker}-server"
    )
    return StdioServerParameters(command="sh", args=["-c", script], env=get_default_environment())


async def _until_up(marker: str, count: int, log: Path) -> None:
    for _ in range(400):  # /proc is the only place to see them start
        if len(_processes_naming(marker)) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server's processes did not start: {log.read_text()[-2000:]}")


async def test_a_stdio_mcp_servers_children_that_leave_its_process_group_end_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot ended a stdio MCP server by killing its process group: a child that called setsid() or
    daemonized with a double fork kept running after the server was closed (2 processes left per start,
    for good), and every server outlived a bot that was killed. Now a subreaper supervises it and ends
    every descendant, on a clean close (stdin, then SIGTERM) and on a cancelled one (at once)."""
    monkeypatch.setattr(mcp_stdio, "STOP_WAIT", 0.2)  # the clean close's waits, shortened
    log = tmp_path / "server-stderr.txt"
    left: dict[str, list[int]] = {}
    try:
        with log.open("w") as errlog:
            clean = f"clean-{uuid.uuid4().hex}"
            async with mcp_stdio.stdio_transport(_escaping_server(clean), errlog, max_line=2**20):
                await _until_up(clean, 3, log)
            left["clean"] = _processes_naming(clean)

            cancelled = f"cancel-{uuid.uuid4().hex}"
            up = asyncio.Event()

            async def held() -> None:
                async with mcp_stdio.stdio_transport(_escaping_server(cancelled), errlog, max_line=2**20):
                    await _until_up(cancelled, 3, log)
                    up.set()
                    await asyncio.Event().wait()

            task = asyncio.create_task(held())
            await asyncio.wait_for(up.wait(), 30)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            left["cancelled"] = _processes_naming(cancelled)
    finally:
        for pid in _processes_naming("clean-") + _processes_naming("cancel-"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == {"clean": [], "cancelled": []}, f"{left}: {log.read_text()[-2000:]}"


async def test_a_stdio_mcp_server_ends_when_the_bot_is_killed(tmp_path: Path) -> None:
    """`kill -9` of the bot (or the OOM killer) left every stdio MCP server it had started running: they
    are started in a session of their own, which nothing ended. The server's supervisor now ends it, and
    everything it started, when the bot dies."""
    marker = f"orphan-{uuid.uuid4().hex}"
    holder = tmp_path / "holder.py"
    holder.write_text(  # the bot's part alone: importing the test module (discord.py) took seconds
        "import asyncio, json, sys\n"
        "from mcp.client.stdio import StdioServerParameters\n"
        "from agent.tools import mcp_stdio\n"
        "async def main():\n"
        "    params = StdioServerParameters(**json.loads(sys.argv[1]))\n"
        "    with open(sys.argv[2], 'w') as errlog:\n"
        "        async with mcp_stdio.stdio_transport(params, errlog, max_line=2**20):\n"
        "            print('started', flush=True)\n"
        "            await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    log = tmp_path / "holder.txt"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(holder),
        _escaping_server(marker).model_dump_json(),
        str(tmp_path / "server-stderr.txt"),
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("wb"),
    )
    try:
        assert proc.stdout is not None
        said = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert said == b"started\n", log.read_text()[-2000:]
        await _until_up(marker, 3, log)
        proc.kill()
        await proc.wait()
        for _ in range(400):  # the supervisor's SIGTERM, then its STOP_WAIT at most
            if not _processes_naming(marker):
                break
            await asyncio.sleep(0.05)
        left = _processes_naming(marker)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in _processes_naming(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == [], log.read_text()[-2000:]


async def test_an_embedding_endpoints_gzip_answer_is_inflated_under_a_cap() -> None:
    """MEMORY_EMBEDDING=openai: the endpoint's answer (or a proxy's before it) was read by httpx, which
    inflates gzip with no limit: 40 KB on the wire became 40 MB in the worker thread (200 KB, 200 MB), and
    the answer was used. It is inflated under a cap from the texts asked for (16,384 numbers a text,
    1.5 MiB for one text) and refused past it, saying so; an ordinary gzipped answer still reads."""
    vector = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}]}
    small = json.dumps(vector).encode()
    padded = small[:-1] + b" " * (40 * 2**20) + b"}"  # still valid JSON, 40 MB inflated
    bodies = {"plain": gzip.compress(small), "bomb": gzip.compress(padded)}
    assert len(bodies["bomb"]) < 100_000

    async def embeddings(request: web.Request) -> web.Response:
        body = bodies[request.match_info["kind"]]
        return web.Response(
            body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    app = web.Application()
    app.router.add_post("/{kind}/v1/embeddings", embeddings)
    async with served(app) as base:

        def embed(kind: str) -> str:
            model = OpenAIEmbedding(f"{base}/{kind}/v1", "nomic-embed-text", max_attempts=1)
            try:
                return repr([[round(float(x), 2) for x in row] for row in model.embed_documents(["hello"])])
            except EmbeddingError as e:
                return str(e)
            finally:
                model.close()

        plain = await asyncio.to_thread(embed, "plain")
        bomb = await asyncio.to_thread(embed, "bomb")
    assert plain == "[[0.6, 0.8]]", plain
    assert "answered more than 1.5 MiB for 1 text" in bomb and "the rest was not read" in bomb, bomb


async def test_a_streamed_event_without_end_is_read_only_to_the_answer_bound() -> None:
    """A streaming server that sent one event line without an end (or an event of endless `data:` lines):
    the answer bound counts the text of events read, so the line was held whole, to the 128 MiB cap (40
    MiB here, for an answer of max_tokens=100). One event is read to the answer bound in JSON now, and the
    model counts as unavailable past it, as for an answer read whole; an ordinary stream still reads."""
    sent: dict[str, int] = {}
    done = asyncio.Event()
    ok_event = {"choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": "stop"}]}

    async def stream(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent[kind] = 0
        try:
            if kind == "ok":  # CRLF line ends, as some proxies write them
                await resp.write(f"data: {json.dumps(ok_event)}\r\n\r\ndata: [DONE]\r\n\r\n".encode())
                return resp
            await resp.write(b"data: " if kind == "line" else b"")
            piece = b"x" * 2**16 if kind == "line" else b"data: " + b"y" * 90 + b"\n"
            while sent[kind] < _FLOOD:
                await resp.write(piece * (2**16 // len(piece)))
                sent[kind] += 2**16
        except (ConnectionError, RuntimeError):  # the client stopped reading and closed
            pass
        finally:
            done.set()
        return resp

    app = web.Application()
    app.router.add_post("/{kind}/v1/chat/completions", stream)
    async with served(app) as base, make_client() as client:

        async def ask(kind: str) -> str:
            done.clear()
            model = OpenAIChatModel(
                "m", base_url=f"{base}/{kind}/v1", api_key="sk-x", client=client, max_attempts=1
            )
            try:
                return (
                    await final_response(model, [Message("user", "hi")], ModelSettings(max_tokens=100))
                ).message.content
            except ModelError as e:
                return str(e)
            finally:
                await asyncio.wait_for(done.wait(), 60)

        ok = await ask("ok")
        line = await ask("line")
        data_lines = await ask("data")
    assert ok == "hello", ok
    for said in (line, data_lines):
        assert "in one streamed event, past what its max_tokens allows" in said, said
    assert sent["line"] < _FLOOD // 2 and sent["data"] < _FLOOD // 2, sent


async def test_a_guard_opened_to_loopback_is_said_at_start_and_by_doctor() -> None:
    """FETCH_ALLOW_LOOPBACK=1 (a test setting) let every member's fetch_url and /config mcp server reach the
    bot host's own services (127.0.0.1, ::1), and nothing said so: not the start-up log, not `agentbot
    doctor`, whose every check passed. A security mode never degrades silently."""
    with capture_logs() as logs:
        for fetcher in (PageFetcher(FetchSettings(allow_loopback=True)), PageFetcher(FetchSettings())):
            await fetcher.aclose()
    warned = [e for e in logs if e["event"] == "ssrf_guard_weakened"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning", logs
    assert "FETCH_ALLOW_LOOPBACK=1" in warned[0]["reason"] and "127.0.0.1" in warned[0]["reason"], warned
    settings = AgentSettings(agent_model="m", fetch_allow_loopback=True)
    open_check = await doctor._check("fetch guard", lambda: doctor.fetch_guard(settings))
    closed = await doctor._check("fetch guard", lambda: doctor.fetch_guard(AgentSettings(agent_model="m")))
    assert not open_check.ok and "FETCH_ALLOW_LOOPBACK=1" in open_check.detail, open_check
    assert closed.ok, closed


async def test_a_stdio_servers_stderr_flood_cannot_hold_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stdio MCP server writing stderr as fast as it can (`cat /dev/zero >&2`) kept its pipe from ever
    being empty, and the bot read it until it was, on the event loop: every other server's turn stalled
    (0.3 s at a time, measured) for as long as the server wrote. One wake-up now reads at most 1 MiB; the
    last line is still what the server said last."""
    reads = 0
    real_read = os.read

    def never_empty(fd: int, n: int) -> bytes:  # a writer that always keeps up with the reader
        nonlocal reads
        reads += 1
        if reads > 1000:
            raise AssertionError("still reading one wake-up's stderr after 1000 reads (64 MiB)")
        try:
            return real_read(fd, n)
        except BlockingIOError:  # empty for a moment: the writer has already refilled it
            return b"noise\n" * (n // 6)

    tail = StderrTail()
    try:
        tail.file.write("npm ERR! 404 Not Found: @acme/weather-mcp\n")
        tail.file.flush()
        assert tail.last_line() == "npm ERR! 404 Not Found: @acme/weather-mcp"
        monkeypatch.setattr(mcp_stderr.os, "read", never_empty)
        tail._drain()  # what the event loop calls when the pipe is readable
        assert reads <= mcp_stderr.READS_PER_WAKE, reads
    finally:
        monkeypatch.undo()
        tail.close()
