"""Money and tokens spent but not counted (session 13, charge2): each test runs the real adapters over
real HTTP on 127.0.0.1 against a scripted OpenAI-compatible server whose streams can break off, and
reads what a member (footer, ``agentbot ask``'s summary) and an operator (``/usage server``, the
ledger in a real SQLite file) would see. Each failed before the fix its docstring names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from agent.loop import Agent
from agent.models.openai import OpenAIChatModel
from agent.models.router import Router
from bot.limits import Limits
from bot.store import QuotaStore, open_database
from tests.fakes.served import served

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
