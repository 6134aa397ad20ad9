"""Small holes other engineers found and left: each test fails without its fix."""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest
from aiohttp import web

import agent.models.http
from agent.events import StepStarted, TextDelta, ToolCallEvent
from agent.messages import Message, ToolCall
from agent.models.base import ModelSettings, ModelUnavailableError, final_response
from agent.models.http import make_client
from agent.models.openai import OpenAIChatModel
from agent.setting_parsers import Rate
from agent.tools.mcp import McpTools
from agent.tools.mcp_config import McpServer
from agent.tools.ratelimit import RateLimitGuard
from agent.tools.registry import ToolContext, ToolRegistry, tool
from agent.toolset import limit_mcp_tools
from bot.notes import McpLeftOut
from bot.progress import ProgressRenderer
from bot.store.settings_schema import SettingError, SettingsSchema
from tests.fakes.served import served


@tool
def mcp_stand_in(query: str) -> str:
    """A stand-in for a tool an MCP server lists."""
    return query


async def test_mcp_tool_names_do_not_pile_up_in_the_rate_table_and_keep_their_limit() -> None:
    """A hostile MCP server renaming its tools each listing (or servers added and removed) must not grow
    the process-wide rate table; each tool still gets the 30-per-minute default, and TOOL_RATE_LIMITS
    naming one still wins."""
    guard = RateLimitGuard({"srv_pinned": Rate(1, 60.0)}, clock=lambda: 1000.0)
    base = ToolRegistry([], guards=[guard])
    for i in range(2000):
        limit_mcp_tools(base, [dataclasses.replace(mcp_stand_in, name=f"srv_t{i}")])
    assert guard.limits == {"srv_pinned": Rate(1, 60.0)}

    fresh = [dataclasses.replace(mcp_stand_in, name=n) for n in ("srv_renamed", "srv_pinned")]
    limit_mcp_tools(base, fresh)
    registry = ToolRegistry(fresh, base.guards)
    ctx = ToolContext(session_id="s", namespace="g1", user_id="alice")

    async def call(name: str) -> bool:
        return (await registry.execute(ToolCall("c", name, json.dumps({"query": "q"})), ctx)).is_error

    assert [await call("srv_renamed") for _ in range(31)] == [False] * 30 + [True]
    assert [await call("srv_pinned") for _ in range(2)] == [False, True]


async def test_a_gzipped_model_answer_is_capped_after_inflating_and_plain_gzip_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model client counted MAX_RESPONSE_BYTES of raw bytes while httpx inflated gzip with no limit
    after that count: 20 KB of gzip became 20 MB of answer (a 128 MiB cap let a few MB of stacked gzip
    become gigabytes). Decoded bytes are counted now; an ordinary gzipped answer still reads."""
    monkeypatch.setattr(agent.models.http, "MAX_RESPONSE_BYTES", 2**20)  # 128 MiB in production
    event = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "blah " * 200}}]}) + "\n\n"
    bomb = gzip.compress((event * 20_000).encode())  # 20 MB inside, about 60 KB on the wire
    ok = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "zipped hello"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    bodies = {
        "bomb": ({"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}, bomb),
        "plain": (
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            gzip.compress(json.dumps(ok).encode()),
        ),
        "stacked": (
            {"Content-Type": "application/json", "Content-Encoding": "gzip, gzip"},
            gzip.compress(gzip.compress(json.dumps(ok).encode())),
        ),
    }

    async def chat(request: web.Request) -> web.Response:
        headers, body = bodies[request.match_info["kind"]]
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_post("/{kind}/v1/chat/completions", chat)
    async with served(app) as base, make_client() as client:

        def model(kind: str) -> OpenAIChatModel:
            return OpenAIChatModel(
                "m", base_url=f"{base}/{kind}/v1", api_key="sk-x", client=client, max_attempts=1
            )

        hi = [Message("user", "hi")]
        answer = await final_response(model("plain"), hi, ModelSettings(stream=False))
        assert answer.message.content == "zipped hello"
        with pytest.raises(ModelUnavailableError, match="sent more than 1 MiB in one answer"):
            await final_response(model("bomb"), hi, ModelSettings(stream=True))
        with pytest.raises(ModelUnavailableError, match="sent a body encoded gzip, gzip, which this client"):
            await final_response(model("stacked"), hi, ModelSettings(stream=False))


class _Shown:
    """What the renderer hands the thread streamer: the live preview's texts and the blocks."""

    def __init__(self) -> None:
        self.lives: list[str] = []
        self.blocks: list[str] = []

    def live(self, text: str) -> None:
        self.lives.append(text)

    def end_live(self) -> str:
        return ""

    def add(self, kind: str, text: str, **_: object) -> str:
        self.blocks.append(text)
        return text

    def update(self, block: object, text: str) -> None:
        self.blocks.append(text)


def test_the_live_preview_costs_the_same_per_piece_however_long_the_answer() -> None:
    """Each streamed piece rebuilt the whole text so far for the preview (the streamer keeps its last
    1,900 characters): CPU in the square of the answer's length. The preview shows the same tail, and a
    step's thought is still the whole text."""
    shown = _Shown()
    renderer = ProgressRenderer(shown)  # type: ignore[arg-type]
    renderer.feed(StepStarted(step=1, model="m"))
    for _ in range(20_000):
        renderer.feed(TextDelta(step=1, text="word "))
    full = "✍️ " + "word " * 20_000
    assert max(len(t) for t in shown.lives) <= 2_100
    assert shown.lives[-1][-1900:] == full[-1900:]
    renderer.feed(ToolCallEvent(step=1, call_id="c", name="clock", arguments={}, raw_arguments="{}"))
    assert "💭 word word" in shown.blocks[-1] and "(cut, 99,999 chars)" in shown.blocks[-1]


def test_config_fetch_refuses_what_is_not_a_domain_and_names_it() -> None:
    """``/config fetch allow:exa mple.com`` stored the rules ``exa`` (a whole top-level domain) and
    ``mple.com``; ``@everyone`` (anything before an @ was dropped) stored ``everyone``."""
    schema = SettingsSchema(known_models=["m"], known_tools=["fetch_url"])
    refused = {
        "exa mple.com": "'exa mple.com' is not a domain name (a space inside it?); separate domains with commas",
        "docs.rs, exa mple.com": "'exa mple.com' is not a domain name",
        "@everyone": "'@everyone' is not a domain name (it holds an @",
        "admin@example.com": "'admin@example.com' is not a domain name",
        "a..b": "'a..b' is not a domain name",
    }
    for value, said in refused.items():
        with pytest.raises(SettingError) as caught:
            schema.validate("fetch.allow", value)
        assert said in str(caught.value) and "fetch.allow" in str(caught.value)
    # Valid lists read as before: commas, spaces between whole names, wildcards, IDNA, TLD rules, URLs.
    assert schema.validate("fetch.allow", "Example.COM, *.BÜCHER.de  docs.rs,gov, https://x.org/p") == [
        "docs.rs",
        "example.com",
        "gov",
        "x.org",
        "xn--bcher-kva.de",
    ]


def test_a_persona_with_text_direction_overrides_or_invisible_characters_is_refused() -> None:
    """A persona holding U+202E showed one text in /config and said another; zero-width and tag
    characters hid words altogether. Line breaks, emoji joiners and bidirectional writing still pass."""
    schema = SettingsSchema(known_models=["m"], known_tools=[])
    for key in ("persona", "channel_persona.123"):
        for hidden, code in (
            ("Be kind \u202eylno hsilgnE", "U+202E"),
            ("Be \u2067kind\u2069", "U+2067, U+2069"),
            ("Be\u200b kind", "U+200B"),
            ("Be kind\U000e0041", "U+E0041"),
        ):
            with pytest.raises(SettingError) as caught:
                schema.validate(key, hidden)
            assert f"{key} contains invisible characters ({code})" in str(caught.value)
    fine = "Answer briefly.\n\tUse 👨\u200d👩\u200d👧 emoji.\nمی\u200cخواهم \u200fשלום\u200e ok"
    assert schema.validate("persona", fine) == fine


async def test_an_mcp_servers_error_text_is_shown_not_rendered_in_the_thread() -> None:
    """The "left out of this run" note carried the server's own error text into the thread as Markdown:
    bold, a masked link to a page of its choosing, @everyone."""
    said = "**PWNED** [click here](https://evil.example) @everyone"

    async def rpc(request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405)
        msg = await request.json()
        error = {"code": -32000, "message": said}
        return web.json_response({"jsonrpc": "2.0", "id": msg.get("id"), "error": error})

    app = web.Application()
    app.router.add_route("*", "/mcp", rpc)
    async with served(app) as base:
        mcp = McpTools([McpServer("h", url=f"{base}/mcp", connect_timeout=5)])
        await mcp.connect()
        await mcp.aclose()
    (why,) = mcp.problems.values()
    shown = McpLeftOut("h", why).text
    assert shown == (
        "🔌 MCP server `h` is left out of this run: McpError: "
        "\\*\\*PWNED\\*\\* \\[click here](https://evil.example) @\u200beveryone"
    )


def test_a_saved_error_answer_delivered_after_a_restart_does_not_post_its_note_again() -> None:
    """A run ends in an error whose bot-side words hold backticks; the bot is killed after the note was
    posted and before the footer. The restart re-composed the note from the bare error, escaping the
    bot's own backticks too, so the thread's copy was not recognised and the note was posted twice."""
    from agent.events import Cost, ErrorEvent, RunResult, Usage
    from bot.turn_end import final_of, is_shown, result_of

    message = "the provider refused the call to `gpt-5`: **quota**"
    before = _Shown()
    live = ProgressRenderer(before)  # type: ignore[arg-type]
    live.feed(StepStarted(step=1, model="gpt-5"))
    live.feed(ErrorEvent(step=1, message=message, quoted=("**quota**",)))
    result = RunResult(message, "error", 0, Usage(), Cost(), ["gpt-5"], error=message)
    saved = final_of(result, error_note=live.error_note)
    (note,) = [b for b in before.blocks if b.startswith("⚠️")]
    assert "`gpt-5`" in note, note  # the bot's own words render as code; the provider's are escaped

    after = _Shown()
    restarted = ProgressRenderer(after)  # type: ignore[arg-type]

    class _State:  # what the checkpoint restores (bot.turn_end.result_of reads these)
        steps, usage, cost, models, sources, messages = 0, Usage(), Cost(), ["gpt-5"], [], []

    restarted.finish(
        result_of(_State(), saved),  # type: ignore[arg-type]
        shown=lambda text: is_shown(text, before.blocks),
        error_note=saved.get("error_note"),
    )
    assert not [b for b in after.blocks if b.startswith("⚠️")], after.blocks
    assert [b for b in after.blocks if "tokens" in b], after.blocks  # the footer still closes the turn
