"""`agentbot ask`'s research tools against what a hostile server answers, in process (the model and the
terminal both read the same tool outcome): keys echoed back in a result, an error or a cited link are
masked; a page's or a search result's huge title, or a huge MCP error, leaves the model a bounded
result; an MCP call answered with an HTTP error, bytes that are not UTF-8 or an unreadable answer ends
at once with a clear reason instead of waiting out the server's timeout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from agent.logs import redact
from agent.messages import ToolCall
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.mcp import McpServer, McpTools
from agent.tools.netguard import LazyClient
from agent.tools.registry import ToolContext, ToolRegistry
from agent.tools.web_search import MAX_RAW, SearchSettings, parse_duckduckgo, search_tools
from tests.fakes.served import served

_OBJ = {"type": "object", "properties": {}}


def _echoing_mcp() -> web.Application:
    """A streamable-HTTP MCP server whose tools answer with the headers it was sent, as a server saying
    "invalid token <what you sent>" does: ``echo`` as a result, ``fail`` as an error result."""

    async def post(request: web.Request) -> web.Response:
        msg = await request.json()
        rid = msg.get("id")
        if rid is None:
            return web.Response(status=202)
        result: dict[str, Any]
        if msg["method"] == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "echo", "version": "1"},
            }
        elif msg["method"] == "tools/call" and msg["params"]["name"] == "down":  # a proxy's 502
            return web.Response(status=502, text="Bad Gateway")
        elif msg["method"] == "tools/call":
            h = request.headers
            said = (
                f"invalid token {h.get('Authorization', '-').split()[-1]}; "
                f"key {h.get('X-Api-Key')}; client {h.get('X-Client')}; query {request.query_string}"
            )
            failed = msg["params"]["name"] == "fail"
            result = {"content": [{"type": "text", "text": said}], "isError": failed}
            if msg["params"]["name"] == "links":  # cited resources, one naming the key, one of 100 KB
                result["content"] = [
                    {
                        "type": "resource_link",
                        "uri": f"https://docs.example/r?{request.query_string}",
                        "name": "r",
                    },
                    {"type": "resource_link", "uri": "https://docs.example/" + "x" * 100_000, "name": "big"},
                    {"type": "resource_link", "uri": "https://docs.example/guide", "name": "guide"},
                ]
            if msg["params"]["name"] == "huge":  # an error answer of 1.5 MB
                result = {"content": [{"type": "text", "text": "E" * 1_500_000}], "isError": True}
        else:
            tools = ("echo", "fail", "links", "huge", "down")
            result = {"tools": [{"name": n, "inputSchema": _OBJ} for n in tools]}
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

    app = web.Application()
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", lambda _r: web.Response(status=405))
    app.router.add_delete("/mcp", lambda _r: web.Response(status=200))
    return app


async def test_an_mcp_server_echoing_its_key_shows_the_model_and_terminal_no_key() -> None:
    # Before: the answer "invalid token ghp_..." went to the model (and the terminal's result line)
    # whole: neither the headers' keys nor the URL's ?api_key= (registered, but only for logs) were masked.
    async with served(_echoing_mcp()) as base:
        server = McpServer(
            "echo",
            url=f"{base}/mcp?api_key=QRYKEY-5d1e77a0",
            headers={
                "Authorization": "Bearer ghp_ECHOTOKEN4f2a91c7",
                "X-Api-Key": "XKEY-0b9e33d1c2",
                "X-Client": "research-agent-7",
            },
            connect_timeout=10,
        )
        async with McpTools([server]) as mcp:
            tools = ToolRegistry(mcp.tools())
            ok = await tools.execute(ToolCall("a", "echo__echo", "{}"), ToolContext())
            bad = await tools.execute(ToolCall("b", "echo__fail", "{}"), ToolContext())
            links = await tools.execute(ToolCall("c", "echo__links", "{}"), ToolContext())
    for out in (ok, bad):
        seen = out.output + (out.full_text or "")
        for key in ("ghp_ECHOTOKEN4f2a91c7", "XKEY-0b9e33d1c2", "QRYKEY-5d1e77a0"):
            assert key not in seen, seen
        # What is not a secret still reads as the server wrote it.
        assert "invalid token ***" in seen and "client research-agent-7" in seen, seen
    assert not ok.is_error and bad.is_error
    # The sources a run cites (the terminal's "sources:" line, the thread's) are masked too, and a
    # 100 KB "URL" is no citation: it was printed whole.
    assert links.sources == ["https://docs.example/r?***", "https://docs.example/guide"], links.sources


async def test_a_page_with_a_100_kb_title_still_shows_its_url_and_text() -> None:
    # Before: "Title: TTTT..." filled the whole result (cut at FETCH_MAX_CHARS + 1000 = 3000 here, with
    # "[output truncated ...]"): the model had no URL to cite and not one word of the article.
    body = (
        f"<html><head><title>{'T' * 100_000}</title></head><body><article><p>"
        + "Otters came back to the Baltic rivers in 2023. " * 20
        + "</p></article></body></html>"
    )
    app = web.Application()
    app.router.add_get("/p", lambda _r: web.Response(text=body, content_type="text/html"))
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, max_bytes=400_000, max_chars=2_000))
    try:
        async with served(app) as base:
            tools = ToolRegistry(fetch_tools(fetcher))
            call = ToolCall("c", "fetch_url", json.dumps({"url": f"{base}/p"}))
            out = await tools.execute(call, ToolContext(session_id="s"))
    finally:
        await fetcher.aclose()
    assert not out.is_error and not out.truncated, out.output[-300:]
    head = out.output.splitlines()
    assert head[0] == f"Title: {'T' * 300}… (title cut)" and head[1] == f"URL: {base}/p", head[:2]
    assert "Otters came back to the Baltic rivers in 2023." in out.output


async def test_a_search_result_with_a_100_kb_title_or_url_leaves_the_others_seen() -> None:
    # Before: the first result's 100 KB title filled web_search's 8000 characters ("[output truncated"),
    # so the model saw one result of the 5 it asked for; a 60 KB URL did the same.
    results = [
        {"title": "A" * 100_000, "url": "https://a.example/one", "content": "first"},
        {"title": "Long", "url": "https://b.example/" + "x" * 60_000, "content": "second"},
    ] + [{"title": f"R{i}", "url": f"https://r.example/{i}", "content": "more"} for i in range(10_000)]
    app = web.Application()
    app.router.add_get("/search", lambda _r: web.json_response({"results": results}))
    async with served(app) as base, httpx.AsyncClient(timeout=5) as http:
        settings = SearchSettings(backend="searxng", searxng_url=base, timeout=5)
        tools = ToolRegistry(search_tools(settings, LazyClient(lambda: http)))
        ctx = ToolContext(session_id="s", services={"http": http})
        call = ToolCall("c", "web_search", json.dumps({"query": "otters", "max_results": 5}))
        out = await tools.execute(call, ctx)
    assert not out.is_error and not out.truncated, out.output[-300:]
    assert out.output.startswith(f"1. {'A' * 200}…\n   https://a.example/one\n   first\n"), out.output[:300]
    assert "b.example" not in out.output  # a URL no browser would open is no citation
    assert out.sources == ["https://a.example/one"] + [f"https://r.example/{i}" for i in range(4)]
    assert "5. R3\n   https://r.example/3" in out.output


async def test_an_mcp_error_answer_of_1_5_mb_reaches_the_model_cut_at_the_tools_cap() -> None:
    # Before: a result was cut at the server's max_output (8000) but an isError answer was not: 1.5 MB
    # went to the model, and again with every later step of the run.
    async with served(_echoing_mcp()) as base:
        mcp = McpTools([McpServer("echo", url=f"{base}/mcp", connect_timeout=10)])
        async with mcp:
            out = await ToolRegistry(mcp.tools()).execute(ToolCall("h", "echo__huge", "{}"), ToolContext())
    assert out.is_error and out.truncated and len(out.output) < 8_200, len(out.output)
    error = json.loads(out.output)["error"]
    assert error.startswith("the echo MCP server answered with an error: EEE"), error[:100]
    assert error.endswith("[output truncated: showing the first 8000 of 1500044 characters]"), error[-100:]


async def test_an_mcp_call_answered_http_502_fails_at_once_naming_the_status() -> None:
    # Before: the HTTP error ended the SDK's transport but not the call, which waited out the server's
    # whole timeout (30 s) and said "echo__down timed out after 30 s": a proxy's 502 read as a slow server.
    async with served(_echoing_mcp()) as base:
        mcp = McpTools([McpServer("echo", url=f"{base}/mcp", connect_timeout=10)])
        async with mcp:
            out = await ToolRegistry(mcp.tools()).execute(ToolCall("d", "echo__down", "{}"), ToolContext())
    assert out.is_error and "timed out" not in out.output, out.output
    assert "the echo MCP server's answer could not be read" in out.output and "502 Bad Gateway" in out.output


_LATIN1_SERVER = r"""
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("id") is None:
        continue
    rid, method = json.dumps(msg["id"]).encode(), msg["method"]
    if method == "initialize":
        v = json.dumps(msg["params"]["protocolVersion"]).encode()
        result = b'{"protocolVersion":' + v + b',"capabilities":{"tools":{}},"serverInfo":{"name":"l","version":"1"}}'
    elif method == "tools/list":
        result = b'{"tools":[{"name":"read","inputSchema":{"type":"object"}}, {"name":"odd","inputSchema":{"type":"object"}}]}'
    elif msg["params"]["name"] == "odd":  # a log line on stdout, then an answer without "jsonrpc"
        sys.stdout.write("starting the odd tool\n" + json.dumps({"id": msg["id"], "result": {}}) + "\n")
        sys.stdout.flush()
        continue
    else:  # Latin-1, as a server passing on a legacy file's bytes writes it
        result = b'{"content":[{"type":"text","text":"caf\xe9 cr\xe8me"}]}'
    sys.stdout.buffer.write(b'{"jsonrpc":"2.0","id":' + rid + b',"result":' + result + b"}\n")
    sys.stdout.flush()
"""


async def test_a_stdio_mcp_answer_not_utf_8_or_unreadable_is_never_waited_out(tmp_path: Path) -> None:
    # Before: a Latin-1 answer was dropped as unreadable and its call waited out the server's timeout
    # ("lat__read timed out after 30 s"); now the bytes read as U+FFFD and the rest of the answer stands.
    script = tmp_path / "latin1_server.py"
    script.write_text(_LATIN1_SERVER)
    server = McpServer("lat", command=sys.executable, args=(str(script),), connect_timeout=20)
    async with McpTools([server]) as mcp:
        assert mcp.problems == {}
        tools = ToolRegistry(mcp.tools())
        out = await tools.execute(ToolCall("l", "lat__read", "{}"), ToolContext())
        odd = await tools.execute(ToolCall("o", "lat__odd", "{}"), ToolContext())
        again = await tools.execute(ToolCall("a", "lat__read", "{}"), ToolContext())
    assert (out.is_error, out.output) == (False, "caf\ufffd cr\ufffdme"), out.output
    # An answer the SDK cannot read fails its call at once, as over HTTP ("timed out after 30 s" before);
    # the log line before it failed nothing, and the server still answers.
    assert odd.is_error and "the lat MCP server's answer could not be read (ValidationError" in odd.output, (
        odd
    )
    assert (again.is_error, again.output) == (False, "caf\ufffd cr\ufffdme"), again.output


async def test_a_page_of_hyphenated_words_and_an_at_sign_is_read_not_stalled() -> None:
    # Tool results are redacted now, and the URL-password pattern tried every word of "a-a-a-...@" to
    # the text's end: the 60,000 characters the page reader gets took ~9 s of the event loop (80 KB, 16 s).
    # The pattern is bounded (a scheme has at most 31 characters); what it masks is unchanged.
    assert redact(f"{'a-' * 20}x://u:pw@host") == f"{'a-' * 20}x://***@host"
    assert redact(f"{'s' * 40}://u:pw@host") == f"{'s' * 40}://u:pw@host"  # no scheme is that long
    body = "a-" * 100_000 + "@ and http://bob:hunter2@db.example/ at the end"
    app = web.Application()
    app.router.add_get("/p", lambda _r: web.Response(text=body, content_type="text/plain"))
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, max_bytes=400_000, max_chars=2_000))
    try:
        async with served(app) as base:
            tools, ctx = ToolRegistry(fetch_tools(fetcher)), ToolContext(session_id="s")
            first = await tools.execute(ToolCall("c", "fetch_url", json.dumps({"url": f"{base}/p"})), ctx)
            end = json.dumps({"url": f"{base}/p", "start": 199_991})
            last = await tools.execute(ToolCall("d", "fetch_url", end), ctx)
    finally:
        await fetcher.aclose()
    assert not first.is_error and "[characters 0-2000 of 200047;" in first.output, first.output[:300]
    assert first.full_text is not None and len(first.full_text) > 60_000  # what a page reader reads
    assert last.output.endswith("@ and http://***@db.example/ at the end"), last.output[-200:]


def test_a_results_page_of_25000_results_is_read_for_its_first_hundred() -> None:
    # A DuckDuckGo-style answer (DUCKDUCKGO_URL may name any server) of 25,000 results: each was parsed,
    # cleaned and de-duplicated on the event loop (0.85 s a search, every run of the bot waiting), to show
    # at most 20. The first MAX_RAW are read, in order.
    one = '<div class="result"><a class="result__a" href="https://e.example/{0}">Title {0}</a></div>'
    page = "<html><body>" + "".join(one.format(i) for i in range(25_000)) + "</body></html>"
    results = parse_duckduckgo(page)
    assert [r.url for r in results] == [f"https://e.example/{i}" for i in range(MAX_RAW)]
