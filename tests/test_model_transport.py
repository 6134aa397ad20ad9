"""The shared model client (agent.models.http.make_client) against every way a model server answers
or fails: whole answers streamed or not, status errors with their headers, a connection cut
mid-answer, an unreachable server, a read timeout, a compressed body, and connections kept open
between calls."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agent.messages import Message
from agent.models.base import ModelError, ModelResponse, ModelSettings, RetryNotice, final_response
from agent.models.http import make_client
from agent.models.openai import OpenAIChatModel
from tests.fakes.llm_server import FakeLLM, error, text, tool_call

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _model(base_url: str, client: object, attempts: int = 1) -> OpenAIChatModel:
    return OpenAIChatModel(
        "gpt-4o-mini",
        base_url=base_url,
        api_key="sk-test-transport-0001",
        client=client,  # type: ignore[arg-type]
        max_attempts=attempts,
        backoff_initial=0.01,
    )


async def _ask(model: OpenAIChatModel, stream: bool, limit: float | None = None) -> Message:
    settings = ModelSettings(stream=stream, timeout=limit)
    response = await final_response(model, [Message("user", "add 2 and 3")], settings)
    assert response is not None
    return response.message


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)


async def _raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A hand-written HTTP server on 127.0.0.1; yields its base URL and a list counting connections."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", connections
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("stream", [True, False])
async def test_answers_and_tool_calls_arrive_whole(stream: bool) -> None:
    async with FakeLLM() as llm, make_client() as client:
        llm.script(
            tool_call("calculator", {"expression": "2+3"}, split_writes=True),
            text("Cinq : 5 ✓ " * 40, split_writes=True),
        )
        model = _model(llm.base_url, client)
        first = await _ask(model, stream)
        second = await _ask(model, stream)
        assert [(c.name, json.loads(c.arguments)) for c in first.tool_calls] == [
            ("calculator", {"expression": "2+3"})
        ]
        assert second.content == "Cinq : 5 ✓ " * 40
        assert llm.requests[0]["messages"] == [{"role": "user", "content": "add 2 and 3"}]
        assert llm.auth_headers[:2] == ["Bearer sk-test-transport-0001"] * 2


async def test_a_status_error_keeps_its_retry_after_header() -> None:
    async with FakeLLM() as llm, make_client() as client:
        llm.script(error(429, "slow down", headers={"retry-after-ms": "50"}), text("fine"))
        model = _model(llm.base_url, client, attempts=2)
        chunks = [c async for c in model.stream([Message("user", "hi")], [], ModelSettings(stream=True))]
    notice = next(c for c in chunks if isinstance(c, RetryNotice))
    assert notice.delay >= 0.05 and "slow down" in notice.error
    assert isinstance(chunks[-1], ModelResponse) and chunks[-1].message.content == "fine"


async def test_a_connection_cut_mid_answer_is_a_retryable_drop() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'20\r\ndata: {"choices":[{"delta":{}}]}\n\n\r\n'
        )
        await writer.drain()

    async for base_url, _ in _raw_server(cut):
        async with make_client() as client:
            with pytest.raises(ModelError) as caught:
                await _ask(_model(base_url, client), stream=True)
    assert caught.value.retryable
    assert "dropped the connection mid-answer" in str(caught.value), str(caught.value)


async def test_an_unreachable_server_is_named_with_its_setting() -> None:
    async for url, _ in _raw_server(_read_request):  # type: ignore[arg-type]
        base_url = url  # the port is closed again after the loop
    async with make_client() as client:
        with pytest.raises(ModelError) as caught:
            await _ask(_model(base_url, client), stream=True)
    assert caught.value.retryable
    assert "could not be reached" in str(caught.value) and "OPENAI_BASE_URL" in str(caught.value)


async def test_a_server_that_never_answers_times_out() -> None:
    async with FakeLLM() as llm, make_client() as client:
        llm.script(text("never", hang=True))
        with pytest.raises(ModelError) as caught:
            await _ask(_model(llm.base_url, client), stream=True, limit=0.3)
    assert caught.value.retryable and "timed out" in str(caught.value)


async def test_a_compressed_body_is_decoded_and_the_connection_kept() -> None:
    body = gzip.compress(
        json.dumps(
            {"choices": [{"message": {"content": "sept"}, "finish_reason": "stop"}], "usage": {}}
        ).encode()
    )

    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: several requests on one connection
            await _read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()

    async for base_url, connections in _raw_server(gzipped):
        async with make_client() as client:
            model = _model(base_url, client)
            answers = [(await _ask(model, stream=False)).content for _ in range(3)]
        assert answers == ["sept"] * 3
        assert len(connections) == 1


async def test_a_cookie_the_server_sets_is_sent_back() -> None:
    """A load balancer's affinity cookie still reaches the next call (the client's jar skips only
    responses that set none)."""
    body = json.dumps({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}).encode()
    seen: list[bytes] = []

    async def sticky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
            seen.append(next((h for h in head.split(b"\r\n") if h.lower().startswith(b"cookie:")), b""))
            cookie = b"Set-Cookie: lb=node-7; Path=/\r\n" if len(seen) == 1 else b""
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + cookie
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()

    async for base_url, _ in _raw_server(sticky):
        async with make_client() as client:
            model = _model(base_url, client)
            for _ in range(3):
                await _ask(model, stream=False)
    assert seen == [b"", b"Cookie: lb=node-7", b"Cookie: lb=node-7"]


async def test_each_call_sends_its_own_tool_specs() -> None:
    """Tool specs are encoded once and reused (agent.models.openai_wire._tools_text): a call with other
    specs, or the same schema under a new description, still sends exactly its own."""
    schema = {"type": "object", "properties": {"expression": {"type": "string"}}}
    calc = {"name": "calculator", "description": "Evaluate", "parameters": schema}
    clock = {"name": "current_time", "description": "Now", "parameters": {"type": "object"}}
    offered = [[calc, clock], [calc], [calc, clock], [dict(calc, description="Evaluate exactly"), clock]]
    async with FakeLLM() as llm, make_client() as client:
        llm.script(*(text("ok") for _ in offered))
        model = _model(llm.base_url, client)
        for tools in offered:
            async for _ in model.stream([Message("user", "hi")], tools, ModelSettings(stream=True)):
                pass
    assert [[t["function"] for t in r["tools"]] for r in llm.requests] == offered
    assert llm.requests[0]["messages"] == [{"role": "user", "content": "hi"}]
