"""What a user reads at the end of a run, through the installed ``agentbot ask`` against scripted
endpoints on 127.0.0.1 that end their replies the ways real servers do."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from tests.fakes import anthropic_server as gem
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.llm_server import FakeLLM, text
from tests.test_blackbox_operator import agentbot


async def test_an_answer_cut_off_at_the_output_cap_says_so(llm: FakeLLM, tmp_path: Path) -> None:
    # finish_reason "length": the model hit max_tokens mid-sentence (Anthropic's "max_tokens" maps here too).
    cut = "The three main causes were, first, the drought of 1931; second, the"
    llm.script(text(cut, finish="length"))
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1", "AGENT_MAX_TOKENS": "20"}
    code, out, err = await agentbot(tmp_path, "ask", "Why did the Dust Bowl happen?", env=env)
    assert code == 0, err
    assert out.startswith(cut)
    note = out.removeprefix(cut)
    assert "cut off" in note.lower() and "AGENT_MAX_TOKENS" in note, out  # not passed off as the whole answer


async def test_a_whole_answer_carries_no_cut_off_note(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(text("Paris.", finish="eos"))  # some local servers send their own reason names
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1"}
    code, out, err = await agentbot(tmp_path, "ask", "Capital of France?", env=env)
    assert (code, out) == (0, "Paris.\n"), err


async def test_an_answer_blocked_by_the_providers_filter_says_so_at_once(tmp_path: Path) -> None:
    async with FakeGemini() as gemini:
        gemini.script(*[gem.Reply(text="", finish="SAFETY")] * 2)
        env = {
            "GEMINI_BASE_URL": gemini.base_url,
            "GEMINI_API_KEY": "gm-test-key-123456789",
            "AGENT_MODEL": "gemini:gemini-2.5-flash",
        }
        code, out, err = await agentbot(tmp_path, "ask", "a question the filter blocks", env=env)
    assert code == 1 and out == ""
    assert "content filter" in err, err  # not "returned an empty answer twice"
    assert len(gemini.requests) == 1  # the same blocked request is not paid for again


async def test_a_thinking_model_that_spends_its_whole_cap_names_agent_max_tokens(
    llm: FakeLLM, tmp_path: Path
) -> None:
    llm.script(*[text("", finish="length", reasoning_tokens=20)] * 2)
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1", "AGENT_MAX_TOKENS": "20"}
    code, out, err = await agentbot(tmp_path, "ask", "Prove it.", env=env)
    assert code == 1 and out == ""
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "AGENT_MAX_TOKENS" in line, err
    assert len(llm.requests) == 1


async def test_a_stream_cut_before_its_end_is_retried_not_passed_off_as_the_answer(tmp_path: Path) -> None:
    # A proxy's read timeout ends the chunked body cleanly: no finish_reason, no [DONE].
    calls = 0

    async def chat(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        pieces = [("The whole ans", None)] if calls == 1 else [("The whole answer.", None), ("", "stop")]
        for piece, finish in pieces:
            delta = {"content": piece} if piece else {}
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": "llama3.1"}
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if calls > 1:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "AGENT_MODEL": "llama3.1"}
        code, out, err = await agentbot(tmp_path, "ask", "hello", env=env)
    finally:
        await runner.cleanup()
    assert (code, out) == (0, "The whole answer.\n"), err
    assert calls == 2 and "retrying" in err


async def test_a_cheap_priced_call_never_shows_as_free(llm: FakeLLM, tmp_path: Path) -> None:
    # 100 + 20 tokens of gpt-4o-mini cost $0.000027: rounded to 4 places that read "$0.0000".
    llm.script(text("Paris.", prompt_tokens=100, completion_tokens=20))
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-test-key-0001",
        "AGENT_MODEL": "gpt-4o-mini",
    }
    code, out, err = await agentbot(tmp_path, "ask", "Capital of France?", env=env)
    assert (code, out) == (0, "Paris.\n"), err
    assert "$0.0000 " not in err and "$0.0000\n" not in err, err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("1 step · "), summary  # not "1 steps"
    shown = float(summary.split("cost $")[1].split()[0])
    assert 0 < shown < 0.0001, summary
