"""``agentbot ask`` used as people use command-line tools (session 13): a model named with ``--model`` (or
``-m=``), an answer a provider's filter cut short, a terminal closed while it loads, a reader leaving an
unbuffered pipe, a task awaited on a silent pipe, and calls that break, only ping, or cannot get through a
proxy. Real ``agentbot`` processes (from a warm copy where start-up is not what is tested) or the agent in
process, against servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from asyncio.subprocess import DEVNULL, PIPE
from pathlib import Path

import httpx
from aiohttp import web

from agent import Agent, OpenAIChatModel
from agent.toolset import build_registry
from tests.fakes.llm_server import FakeLLM, text
from tests.fakes.served import served
from tests.test_blackbox_ask_tools import AGENTBOT, ask_env
from tests.test_blackbox_operator import agentbot


async def test_a_model_given_with_the_option_is_refused_naming_the_option(tmp_path: Path) -> None:
    # `agentbot ask -m ollama:llama3.1 ...` said "name the model alone: AGENT_MODEL=llama3.1": setting
    # it changes nothing while the option, which wins over AGENT_MODEL, is still typed. The same for a
    # LiteLLM spelling and for no OPENAI_API_KEY; a READER_MODEL was told to fix AGENT_MODEL.
    env = {"AGENT_MODEL": "gpt-4o-mini", "MEMORY_ENABLED": "false"}  # OpenAI's own endpoint, no key
    said = {
        "ollama:llama3.1": "name the model alone: --model llama3.1",
        "anthropic/claude-sonnet-4-5": "no such model: use --model anthropic:claude-sonnet-4-5",
        "gpt-4o": "name its model with --model",
    }
    for spec, advice in said.items():
        code, out, err = await agentbot(tmp_path, "ask", "-m", spec, "hi", env=env)
        assert (code, out) == (2, ""), err
        assert advice in err and "AGENT_MODEL" not in err, err
    # Without the option the setting is still what is named.
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=env | {"AGENT_MODEL": "ollama:llama3.1"})
    assert code == 2 and "name the model alone: AGENT_MODEL=llama3.1" in err, err
    reader = env | {"OPENAI_API_KEY": "sk-test", "READER_MODEL": "ollama:qwen3"}
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=reader)
    assert code == 2 and "name the model alone: READER_MODEL=qwen3" in err, err
    assert "AGENT_MODEL" not in err, err


async def test_an_answer_stopped_by_the_providers_content_filter_says_so(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # Azure OpenAI's filter (finish_reason content_filter; Gemini's SAFETY and Claude's refusal map to it)
    # stopping an answer part-way: its first words were printed as the whole answer, exit 0, nothing said.
    begun = "The reaction starts when the two compounds are mixed at"
    llm.script(text(begun, finish="content_filter"))
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "gpt-4o-mini", "OPENAI_API_KEY": "sk-test"}
    code, out, err = await agentbot(
        tmp_path, "ask", "How does it react?", env=env | {"MEMORY_ENABLED": "false"}
    )
    assert code == 0 and out.startswith(begun), err
    note = out.removeprefix(begun)
    assert "cut off" in note.lower() and "content filter" in note, out


SIGNAL_AT = """
import importlib.abc, os, signal, sys

class _Hangup(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["SIGNAL_AT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGHUP)
        return None

sys.meta_path.insert(0, _Hangup())
"""


async def test_a_terminal_closed_while_ask_loads_ends_it_as_interrupted(llm: FakeLLM, tmp_path: Path) -> None:
    # SIGHUP (the terminal closed, `kill -HUP`) in the first second, while the command imports, killed it
    # with 129 and not a word; README promises 130, as for SIGTERM, which was already handled there.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SIGNAL_AT)
    env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "sk-test", "MEMORY_ENABLED": "false"}
    env |= {"PYTHONPATH": str(hook), "SIGNAL_AT": "agent.config"}
    code, out, err = await agentbot(tmp_path, "ask", "2+2?", env=env)
    assert (code, out, err) == (130, "", "agentbot: interrupted\n")
    assert llm.requests == []


async def test_an_unbuffered_ask_whose_reader_leaves_mid_answer_exits_141(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # PYTHONUNBUFFERED=1 (agentbot's own Docker image sets it): Python's unbuffered stdout dropped the
    # rest of a write the kernel cut short when the reader left, so `agentbot ask ... | head -1` ended 0,
    # not README's 141, and a script could not tell a lost answer from a whole one.
    llm.script(text("line\n" * 60_000))  # 300 KB: more than a pipe holds, so the write is under way
    read_end, write_end = os.pipe()
    log = tmp_path / "ask.err"
    env = ask_env(llm, tmp_path) | {"PYTHONUNBUFFERED": "1"}
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            AGENTBOT, "ask", "lines?", cwd=tmp_path, env=env, stdin=DEVNULL, stdout=write_end, stderr=err
        )
    os.close(write_end)
    first = await asyncio.to_thread(os.read, read_end, 5)  # what `head -1` reads before it leaves
    os.close(read_end)
    code = await asyncio.wait_for(proc.wait(), 60)
    assert (first, code) == (b"line\n", 141), log.read_text()[-2000:]


def _breaking_stream(said: list[str]) -> web.Application:
    """An OpenAI-compatible server whose every answer streams ``said`` and then ends cleanly, with no
    finish_reason and no [DONE] (a proxy's read timeout): the provider billed the call all the same."""

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in said:
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
            chunk["choices"] = [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def test_a_stream_broken_before_its_words_were_shown_is_still_charged(http: httpx.AsyncClient) -> None:
    # An answer's first words are held back (up to 2,000 characters or 3 s) in case it opens with a think
    # block, and a think block is never shown. A stream that broke there was charged nothing: ask summed
    # up "0 prompt + 0 completion tokens · cost $0.0000" for calls the provider billed, and the bot's
    # quotas never counted them. They are charged by estimate, as a break after shown words already was.
    for said in (["The answer is", " partly"], ["<think>The user wants", " a long answer..."]):
        async with served(_breaking_stream(said)) as base:
            model = OpenAIChatModel(
                "gpt-4o-mini", base_url=f"{base}/v1", api_key="sk-t", client=http, max_attempts=1
            )
            result = await Agent(model, build_registry(), max_iterations=2).ask("Explain it.")
        assert result.status == "error", result
        usage = result.usage
        assert usage.estimated and usage.prompt_tokens > 0 and usage.completion_tokens > 0, (said, usage)
        assert result.cost.known and result.cost.usd > 0, (said, result.cost)


async def test_a_server_sending_only_keep_alive_comments_times_out_as_a_silent_one() -> None:
    # A proxy keeping the stream open with SSE comments (": ping", OpenRouter's ": OPENROUTER
    # PROCESSING") while its upstream is stuck reset the read timeout with each one: `agentbot ask`
    # waited as long as the pings went on (killed by `timeout 25` with MODEL_TIMEOUT=3). MODEL_TIMEOUT
    # is how long the model may send nothing; comments are nothing from the model.
    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(600):  # a minute of pings, ten a second
            await resp.write(b": OPENROUTER PROCESSING\n\n")
            await asyncio.sleep(0.1)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app) as base, httpx.AsyncClient(timeout=httpx.Timeout(10, read=1)) as client:
        model = OpenAIChatModel(
            "gpt-4o-mini", base_url=f"{base}/v1", api_key="sk-t", client=client, max_attempts=1
        )
        result = await asyncio.wait_for(Agent(model, build_registry(), max_iterations=1).ask("Hi"), 45)
    assert result.status == "error", result
    assert "timed out: nothing for 1 s" in (result.error or "") and "MODEL_TIMEOUT" in (result.error or ""), (
        result
    )


async def test_a_task_awaited_on_a_silent_open_pipe_is_said_to_be_awaited(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # `ssh host agentbot ask`, `docker run -i ... agentbot ask` with the task forgotten: standard input is
    # a pipe left open, read without a word for as long as it stayed open, which looked like a model
    # that never answered. A line on stderr says what it waits for; the task then read is asked as usual.
    llm.script(text("4"))
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT, "ask", cwd=tmp_path, env=ask_env(llm, tmp_path), stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    assert proc.stdin is not None and proc.stderr is not None
    try:
        said = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert said.startswith(b"agentbot: waiting for the task on standard input"), said
        assert llm.requests == []
        proc.stdin.write(b"2+2?")
        proc.stdin.close()
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (proc.returncode, out) == (0, b"4\n"), err.decode()[-2000:]
    assert llm.requests[0]["messages"][-1]["content"] == "2+2?"


async def test_a_proxy_that_cannot_be_reached_is_named_not_the_base_url(tmp_path: Path) -> None:
    # HTTPS_PROXY (README: it carries calls to model providers) left pointing at a proxy that is down:
    # ask said "<base URL> could not be reached (ConnectError): check OPENAI_BASE_URL and that the
    # server runs", which sent the user to a setting that was right. The proxy is named, without the
    # password its URL may hold.
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "OPENAI_BASE_URL": "https://api.invalid/v1",  # never resolves: nothing leaves this machine either way
        "OPENAI_API_KEY": "sk-test",
        "AGENT_MODEL": "gpt-4o-mini",
        "MODEL_MAX_ATTEMPTS": "1",
        "MEMORY_ENABLED": "false",
        "HTTPS_PROXY": f"http://alice:s3cret-pw@127.0.0.1:{port}",
    }
    code, out, err = await agentbot(tmp_path, "ask", "hi", env=env)
    assert (code, out) == (1, ""), err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert f"through the proxy http://127.0.0.1:{port}" in line and "HTTPS_PROXY" in line, line
    assert "check OPENAI_BASE_URL" not in line and "s3cret-pw" not in err, err

    # A proxy that wants a password (407, the usual one behind a company proxy) is said in its words.
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
    async with proxy:
        port = proxy.sockets[0].getsockname()[1]
        code, out, err = await agentbot(
            tmp_path, "ask", "hi", env=env | {"HTTPS_PROXY": f"http://127.0.0.1:{port}"}
        )
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert (
        f"through the proxy http://127.0.0.1:{port} (ProxyError: 407 Proxy Authentication Required)" in line
    ), line


async def test_a_model_written_with_an_equals_sign_after_m_is_refused_before_any_call(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # `-m=gpt-4o-mini` (as --model=gpt-4o-mini is written) gave the model "=gpt-4o-mini": it was called,
    # refused as a model the server does not have, and the run failed with advice to check the name.
    llm.known_models = {"gpt-4o-mini"}  # as a real server: "=gpt-4o-mini" does not exist (HTTP 404)
    env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "sk-test", "MEMORY_ENABLED": "false"}
    code, out, err = await agentbot(tmp_path, "ask", "-m=gpt-4o-mini", "hi", env=env)
    assert (code, out) == (2, ""), err
    assert (
        err
        == "agentbot: -m=gpt-4o-mini names the model '=gpt-4o-mini': write -m gpt-4o-mini or --model=gpt-4o-mini\n"
    )
    assert llm.requests == []
