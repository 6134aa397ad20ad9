"""Money and tokens spent but not counted (session 13, charge2): each test runs the real adapters over
real HTTP on 127.0.0.1 against a scripted OpenAI-compatible server whose streams can break off, and
reads what a member (footer, ``agentbot ask``'s summary) and an operator (``/usage server``, the
ledger in a real SQLite file) would see. Each failed before the fix its docstring names."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from agent.loop import Agent
from agent.models.openai import OpenAIChatModel
from agent.models.router import Router
from agent.tools.fetch import FetchSettings, PageFetcher
from bot.limits import Limits
from bot.store import QuotaStore, open_database
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.fakes.served import served
from tests.fakes.web_server import FakeWeb
from tests.test_blackbox_charge import _stop
from tests.test_e2e_config import flat, run
from tests.test_reader import TASK, agent_with_reader, tool_message

TIERS = {"simple": ["gpt-4.1-nano"], "medium": ["gpt-4o-mini"], "complex": ["gpt-4o"]}
BROKEN = "Tides rise. " * 333 + "Ti"  # 4,000 characters: ~1,000 tokens by the local count


def _sse(model: str, delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    data = {"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": choices}
    return b"data: " + json.dumps(data | ({"usage": usage} if usage else {})).encode() + b"\n\n"


def broken(text: str = BROKEN) -> Callable[[str], bytes]:
    """An answer that breaks off (a proxy's timeout): words, then the body ends without a finish."""
    return lambda model: _sse(model, {"role": "assistant", "content": text})


def answer(text: str, prompt: int = 100, completion: int = 20) -> Callable[[str], bytes]:
    return lambda model: (
        _sse(model, {"role": "assistant", "content": text}, "stop")
        + _sse(model, {}, usage={"prompt_tokens": prompt, "completion_tokens": completion})
        + b"data: [DONE]\n\n"
    )


class Scripted:
    """An OpenAI-compatible streaming server answering each request with the next scripted body."""

    def __init__(self) -> None:
        self.script: list[Callable[[str], bytes]] = []
        self.models: list[str] = []
        self.base_url = ""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.models.append(body["model"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(self.script.pop(0)(body["model"]))
        await resp.write_eof()
        return resp


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    s = Scripted()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", s.chat)
    async with served(app) as site:
        s.base_url = f"{site}/v1"
        yield s


@pytest.fixture
async def fetcher() -> AsyncIterator[PageFetcher]:
    f = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, max_chars=2_000, reader_chars=60_000))
    yield f
    await f.aclose()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


def _router(server: Scripted, client: httpx.AsyncClient, **kw: Any) -> Router:
    def build(spec: str) -> OpenAIChatModel:
        return OpenAIChatModel(
            spec,
            base_url=server.base_url,
            api_key="sk-t",
            client=client,
            max_attempts=2,
            backoff_initial=0.01,
        )

    return Router(TIERS, build, **kw)


async def test_a_researchers_answer_that_broke_off_before_its_retry_is_charged(
    server: Scripted, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A complex run researches on gpt-4o-mini (research tiers): its first attempt wrote 4,000 characters
    and broke off (a proxy's timeout), and was retried. The researcher's words are held back from the
    thread, so the run never saw them: the footer and /usage counted 100 + 20 and 100 + 20 tokens for the
    two calls, not estimated, though the provider billed the broken attempt too (~1,000 tokens of output
    at gpt-4o-mini's price). Now those words are counted as they stream, so the attempt is charged by
    estimate under gpt-4o-mini, as it is without a research tier."""
    server.script = [broken(), answer("I have what is needed."), answer("Tides follow the moon.")]
    async with await open_database(str(tmp_path / "q.sqlite3")) as db:
        store = QuotaStore(db, None, Limits.unlimited())
        model = _router(server, client, research={"complex": "medium"}).at_tier("complex")
        result = await Agent(model, max_iterations=4).ask("why do tides rise", budget=store.budget(1, 10))
        await store.flush()
        usage = await store.server_usage(1)
    assert server.models == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"], server.models
    assert result.text == "Tides follow the moon.", result
    booked = {m.model: (m.calls, m.estimated_calls) for m in usage.models}
    assert booked == {"gpt-4o-mini": (2, 1), "gpt-4o": (1, 0)}, booked
    assert result.usage.estimated and result.usage.completion_tokens == 20 + 20 + 1_000, result.usage


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",), admins=("admin",))


@pytest.mark.usefixtures("fast_write_window")
async def test_a_follow_up_stopped_while_the_judge_routes_it_is_charged_the_judges_prompt(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """With ROUTER_CLASSIFIER=judge, alice's follow-up is routed by a judge call as its turn starts; she
    pressed Stop while that call was with the provider (which bills its prompt). The footer said "no
    model call" and /usage server counted gpt-4.1-nano's one call of the session's start: the stopped
    judge call was charged nothing, so Stop after Stop spent judge calls outside every limit. Now it is
    charged its prompt by estimate, at the judge's price, in the footer and /usage alike."""
    llm.script(
        Reply(text="simple", prompt_tokens=300, completion_tokens=1),  # the session's judge call
        Reply(text="Four."),
        Reply(hang=True),  # the follow-up's judge call, stopped
    )
    agent_env = {"ROUTER_CLASSIFIER": "judge", "ROUTER_JUDGE_MODEL": "gpt-4.1-nano"}
    async with running_bot(fake, llm, tmp_path, guild, agent_env=agent_env) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "what is 2+2"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Four.", within=15)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "alice", "and what is 3+3?")
        await fake.wait_for(lambda: len(llm.requests) == 3, what="the follow-up's judge call")
        footer = await _stop(fake, thread, "alice")
        await wait_idle(fake, bot)
        server = flat(await run(fake, guild, "usage server"))
    assert [r["model"] for r in llm.requests] == ["gpt-4.1-nano", "gpt-4o-mini", "gpt-4.1-nano"]
    assert re.search(r"`openai/gpt-4.1-nano`: 2 calls · ~[\d,]+ in", server), server
    assert "1 call this month was counted by estimate" in server, server
    # was "0 steps · 0 tokens · ... · no model call · ⏹️ stopped by alice"
    assert "estimated: " in footer.content and "· gpt-4.1-nano ·" in footer.content, footer.content
    assert "no model call" not in footer.content, footer.content


async def test_a_page_reader_that_wrote_no_notes_is_still_charged_its_call(
    llm: FakeLLM, http: httpx.AsyncClient, web: FakeWeb, fetcher: PageFetcher, tmp_path: Path
) -> None:
    """The page reader (gpt-4.1-nano) read 48,000 characters of a page and answered with no notes (a
    thinking model that spent its cap thinking, finish_reason length): the server reported 12,000 +
    900 tokens, billed, but the run counted none of it and /usage server did not list gpt-4.1-nano at
    all, since only a reading with notes was charged. Now the call is charged as reported (the agent
    still gets the page itself)."""
    async with FakeLLM() as reader_llm:
        llm.script(
            tool_call("fetch_url", {"url": web.url("/long")}, prompt_tokens=2000, completion_tokens=40),
            text("They swim in cold water.", prompt_tokens=2500, completion_tokens=30),
        )
        reader_llm.script(text("", prompt_tokens=12_000, completion_tokens=900, finish="length"))
        agent = agent_with_reader(llm, reader_llm, http, fetcher)
        async with await open_database(str(tmp_path / "r.sqlite3")) as db:
            store = QuotaStore(db, None, Limits.unlimited())
            result = await agent.ask(TASK, budget=store.budget(1, 10))
            await store.flush()
            usage = await store.server_usage(1)
    assert len(reader_llm.requests) == 1 and "Paragraph 0:" in tool_message(llm.requests[1])
    booked = {m.model: (m.calls, m.prompt_tokens, m.completion_tokens) for m in usage.models}
    assert booked == {"gpt-5": (2, 4500, 70), "gpt-4.1-nano": (1, 12_000, 900)}, booked
    assert result.usage.prompt_tokens == 16_500 and result.models == ["gpt-5", "gpt-4.1-nano"], result


def broken_call(chars: int = 4_000) -> Callable[[str], bytes]:
    """A tool call whose arguments (a long program) break off mid-stream: no finish, no [DONE]."""
    code = json.dumps({"code": "x = 1\n" * (chars // 6)})
    start = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "run_python", "arguments": ""},
    }
    return lambda model: (
        _sse(model, {"role": "assistant", "tool_calls": [start]})
        + b"".join(
            _sse(model, {"tool_calls": [{"index": 0, "function": {"arguments": code[i : i + 500]}}]})
            for i in range(0, len(code), 500)
        )
    )


async def test_an_attempt_that_broke_off_while_writing_a_tool_call_is_charged(
    server: Scripted, tmp_path: Path
) -> None:
    """gpt-4o-mini wrote 4,000 characters of a run_python call and its stream broke off (a proxy's
    timeout); the retry answered. `agentbot ask` said "1 step · 100 prompt + 20 completion tokens",
    not estimated: only a broken attempt's answer text was counted, never the tool call's arguments the
    provider billed as output (~1,000 tokens; a Stop while a call was written charged its prompt alone).
    Now the arguments count as they stream, so the attempt is charged by estimate like one of words."""
    from agent.ask import ask
    from agent.config import AgentSettings

    server.script = [broken_call(), answer("Tides.")]
    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="sk-t",
        DATA_DIR=str(tmp_path),
        PYTHON_SANDBOX="off",
        MEMORY_ENABLED=False,
    )
    out, err = io.StringIO(), io.StringIO()
    await ask("Why do tides rise?", settings, out=out, err=err)
    lines = err.getvalue().splitlines()
    summary = next((x for x in lines if "completion tokens" in x), "")
    assert server.models == ["gpt-4o-mini", "gpt-4o-mini"] and out.getvalue() == "Tides.\n", lines
    said = re.search(r"1 step · estimated: ([\d,]+) prompt \+ ([\d,]+) completion tokens", summary)
    assert said and int(said.group(2).replace(",", "")) >= 20 + 1_000, summary
    # The step's lines add up to the summary: the broken attempt has its own (it said only "100+20 tokens,
    # $0.000027" under a summary of 722 + 1,191 tokens and $0.00082).
    steps = [re.search(r"^  (?:estimated: )?([\d,]+)\+([\d,]+) tokens", x) for x in lines]
    counted = [tuple(int(n.replace(",", "")) for n in m.groups()) for m in steps if m]
    assert len(counted) == 2 and counted[1] == (100, 20), lines
    assert tuple(map(sum, zip(*counted, strict=True))) == tuple(
        int(n.replace(",", "")) for n in said.groups()
    ), lines


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


async def test_a_claude_attempt_that_broke_off_while_writing_a_tool_call_is_charged(
    client: httpx.AsyncClient,
) -> None:
    """The same on Claude's wire: claude-haiku-4-5 streamed 4,000 characters of a tool call's input and
    the server reported overloaded_error mid-stream; the retry answered with 100 + 20 tokens, and only
    those were counted. Now the broken attempt's input is charged by estimate too."""
    from agent.models.anthropic import AnthropicModel

    calls = 0
    code = json.dumps({"code": "x = 1\n" * 666})

    async def messages(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        usage = {"input_tokens": 100, "output_tokens": 1}
        start = {"message": {"id": "m", "role": "assistant", "model": "claude-haiku-4-5", "usage": usage}}
        out = [_event("message_start", start)]
        if calls == 1:
            block = {"type": "tool_use", "id": "toolu_1", "name": "run_python", "input": {}}
            out.append(_event("content_block_start", {"index": 0, "content_block": block}))
            out += [
                _event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "input_json_delta", "partial_json": p}},
                )
                for p in (code[i : i + 500] for i in range(0, len(code), 500))
            ]
            out.append(_event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}))
        else:
            text_block = {"type": "text", "text": ""}
            out.append(_event("content_block_start", {"index": 0, "content_block": text_block}))
            out.append(
                _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Tides."}})
            )
            out.append(_event("content_block_stop", {"index": 0}))
            out.append(
                _event(
                    "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 20}}
                )
            )
            out.append(_event("message_stop", {}))
        await resp.write(b"".join(out))
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    async with served(app) as site:
        model = AnthropicModel(
            "claude-haiku-4-5",
            api_key="sk-ant-t",
            base_url=site,
            client=client,
            max_attempts=2,
            backoff_initial=0.01,
        )
        result = await Agent(model, max_iterations=2).ask("Why do tides rise?")
    assert calls == 2 and result.text == "Tides.", result
    assert result.usage.estimated and result.usage.completion_tokens >= 20 + 1_000, result.usage


async def test_a_researcher_whose_last_step_is_the_runs_last_hands_over_so_the_answer_is_written(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    """A complex run (gpt-5-mini researches, gpt-5 writes) whose step limit came as the research ended:
    its last step went to the researcher, told not to write the answer, so the run ended "completed"
    with "I have what is needed." as its answer, all steps paid for and the writer never asked. Now the
    step before the last hands over, and the last step is the writer's: the answer is written."""
    from agent import ToolRegistry
    from agent.tools.builtin import builtin_tools
    from tests.test_router_escalation import TIERS as GPT5
    from tests.test_router_escalation import builder

    def respond(body: dict[str, Any]) -> Reply:
        if body["model"] == "gpt-5":
            return text("42.")
        done = any(m["role"] == "tool" for m in body["messages"])
        return text("I have what is needed.") if done else tool_call("calculator", {"expression": "6*7"})

    llm.responder = respond
    model = Router(GPT5, builder(llm, http), research={"complex": "medium"}).at_tier("complex")
    result = await Agent(model, ToolRegistry(builtin_tools()), max_iterations=2).ask("six times seven?")
    assert [r["model"] for r in llm.requests] == ["gpt-5-mini", "gpt-5"], result
    assert result.status == "completed" and result.text == "42.", result
