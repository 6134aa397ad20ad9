"""Streams of the Anthropic and Gemini wire formats as servers and the proxies in front of them really
end them, over real HTTP on 127.0.0.1: an operator's ANTHROPIC_BASE_URL / GEMINI_BASE_URL is often a
gateway with its own read timeout, which ends the body cleanly in the middle of an answer."""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx
import pytest
from aiohttp import web

from agent.messages import Message
from agent.models.anthropic import AnthropicModel
from agent.models.base import ModelError, ModelResponse, ModelSettings
from agent.models.gemini import GeminiModel
from tests.fakes.served import served


def _anthropic_events() -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "model": "claude-sonnet-4-5",
            "content": [],
            "usage": {"input_tokens": 40, "output_tokens": 1},
        },
    }
    events = [
        ("message_start", start),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "The capital of France"},
            },
        ),
    ]
    return [f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in events]


def _gemini_events() -> list[bytes]:
    part = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "The capital of France"}]}, "index": 0}
        ]
    }
    return [f"data: {json.dumps(part)}\r\n\r\n".encode()]


async def _cut_short(events: Sequence[bytes], request: web.Request) -> web.StreamResponse:
    """The first events of a streamed answer, then the end of the body: no stop reason ever comes."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for e in events:
        await resp.write(e)
    return resp


@pytest.mark.parametrize("wire", ["anthropic", "gemini"])
async def test_a_stream_cut_short_by_a_proxy_is_retried_not_taken_as_the_answer(
    wire: str, http: httpx.AsyncClient
) -> None:
    asked = 0

    async def answer(request: web.Request) -> web.StreamResponse:
        nonlocal asked
        asked += 1
        return await _cut_short(_anthropic_events() if wire == "anthropic" else _gemini_events(), request)

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    app.router.add_post("/v1beta/models/{target}", answer)
    async with served(app) as url:
        kw = {"api_key": "k", "client": http, "max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.01}
        model = (
            AnthropicModel("claude-sonnet-4-5", base_url=url, **kw)
            if wire == "anthropic"
            else GeminiModel("gemini-2.5-flash", base_url=f"{url}/v1beta", **kw)
        )
        got: list[object] = []
        with pytest.raises(ModelError, match="stopped before the answer was finished"):
            async for chunk in model.stream([Message("user", "capital of France?")], [], ModelSettings()):
                got.append(chunk)
    assert not any(isinstance(c, ModelResponse) for c in got)  # the half sentence is no answer
    assert asked == 2  # retried, as a dropped connection is


async def test_an_anthropic_gateway_stream_ending_with_message_stop_but_no_stop_reason_is_the_answer(
    http: httpx.AsyncClient,
) -> None:
    # Some gateways in front of Claude leave stop_reason out of message_delta; message_stop still ends
    # the message, so the answer is whole and is not retried as cut short.
    async def answer(request: web.Request) -> web.StreamResponse:
        ending = [
            b'event: message_delta\ndata: {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 4}}\n\n'
        ]
        ending.append(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
        return await _cut_short([*_anthropic_events(), *ending], request)

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    async with served(app) as url:
        model = AnthropicModel("claude-sonnet-4-5", base_url=url, api_key="k", client=http, max_attempts=1)
        chunks = [c async for c in model.stream([Message("user", "capital of France?")], [], ModelSettings())]
    final = chunks[-1]
    assert isinstance(final, ModelResponse) and final.message.content == "The capital of France"
