"""web_search as users meet it when the search service answers oddly, through the installed
``agentbot ask`` with SEARCH_BACKEND=searxng pointing at a scripted SearxNG on 127.0.0.1."""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.served import served
from tests.test_blackbox_operator import agentbot


@asynccontextmanager
async def searxng(answer: Callable[[], web.StreamResponse]) -> AsyncIterator[str]:
    app = web.Application()

    async def search(_r: web.Request) -> web.StreamResponse:
        got = answer()
        return await got if inspect.isawaitable(got) else got

    app.router.add_get("/search", search)
    async with served(app) as url:
        yield url


async def search_once(llm: FakeLLM, tmp_path: Path, url: str) -> tuple[str, str]:
    """One web_search step through `agentbot ask`: (what the model read, stderr)."""
    llm.script(tool_call("web_search", {"query": "otters"}), text("Done."))
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "llama3.1",
        "PYTHON_SANDBOX": "off",
        "SEARCH_BACKEND": "searxng",
        "SEARXNG_URL": url,
    }
    code, out, err = await agentbot(tmp_path, "ask", "Find otters", env=env)
    assert (code, out) == (0, "Done.\n"), err[-3000:]
    seen: Any = llm.requests[1]["messages"][-1]["content"]
    return seen, err


async def test_search_one_malformed_result_does_not_lose_the_others(llm: FakeLLM, tmp_path: Path) -> None:
    # Engines behind a SearxNG pass on what sites publish: a port out of range, a broken IPv6 host, a
    # number as a title. Each one made the whole search fail with a ValueError/TypeError.
    results = [
        {"url": "http://otters.example:99999/a", "title": "Bad port", "content": "x"},
        {"url": "http://[::1/b", "title": "Bad host", "content": "x"},
        {"url": "https://otters.example/2024", "title": 2024, "content": ["not", "text"]},
        {"url": "https://otters.example/ok", "title": "Otters are back", "content": "Four hundred pairs."},
    ]
    async with searxng(lambda: web.json_response({"results": results})) as url:
        seen, _ = await search_once(llm, tmp_path, url)
    assert "error" not in seen, seen
    assert "Otters are back" in seen and "https://otters.example/2024" in seen
    assert "99999" not in seen and "[::1" not in seen


async def test_search_json_without_a_results_object_is_a_clear_error(llm: FakeLLM, tmp_path: Path) -> None:
    async with searxng(
        lambda: web.Response(text=json.dumps(["a", "list"]), content_type="application/json")
    ) as url:
        seen, _ = await search_once(llm, tmp_path, url)
    assert "AttributeError" not in seen and "SearxNG" in seen, seen


async def test_search_endless_answer_is_cut_off_not_read_whole(llm: FakeLLM, tmp_path: Path) -> None:
    # A public SearxNG instance (run by anyone) that never stops answering: the bot read it all.
    sent = 0

    class Endless(web.StreamResponse):
        async def prepare(self, request: web.BaseRequest) -> Any:
            nonlocal sent
            writer = await super().prepare(request)
            await self.write(b'{"results": [{"title": "')
            with contextlib.suppress(ConnectionError, RuntimeError):
                while sent < 2**30:
                    await self.write(b"x" * 2**20)
                    sent += 2**20
            return writer

    async with searxng(lambda: Endless(headers={"Content-Type": "application/json"})) as url:
        seen, _ = await search_once(llm, tmp_path, url)
    assert sent < 64 * 2**20, f"the bot read {sent >> 20} MiB of one search answer"
    assert "search service" in seen and "4 MiB" in seen, seen


@pytest.mark.usefixtures("fast_write_window")
async def test_search_result_urls_cannot_write_links_into_the_footer(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # Result URLs go to the answer's Sources as <url>. One holding '>' and a line break (from a
    # SearxNG instance anyone may run) ended the <...> and put a masked link in the bot's own voice.
    evil = "https://otters.example/a>\n[Claim your free Nitro](https://phish.example/login)"
    results = [{"url": evil, "title": "Otters", "content": "x"}]
    llm.script(tool_call("web_search", {"query": "otters"}), text("Otters are back."))
    async with searxng(lambda: web.json_response({"results": results})) as url:
        env = {"SEARCH_BACKEND": "searxng", "SEARXNG_URL": url}
        async with running_bot(fake, llm, tmp_path, guild, agent_env=env) as bot:
            general = guild.channel("general")
            fake.inject_interaction("research", {"task": "otters"}, user="alice", channel=general)
            thread = await fake.wait_for_thread(parent=general)
            await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
            await wait_idle(fake, bot)
    shown = "\n".join(m.content for m in fake.messages(thread))
    assert "[Claim your free Nitro](" not in shown, shown  # no masked link: the URL is shown whole
    assert not any(line.startswith("[Claim") for line in shown.splitlines()), shown
    assert "<https://otters.example/a%3E%0A[Claim%20your%20free%20Nitro]" in shown, shown
