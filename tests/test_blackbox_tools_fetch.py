"""fetch_url as users and hostile pages meet it, through the installed ``agentbot ask`` against pages
served on 127.0.0.1 (FETCH_ALLOW_LOOPBACK=1 lets the first hop reach them; every other rule holds)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.served import served
from tests.test_blackbox_operator import agentbot


@asynccontextmanager
async def pages(routes: dict[str, Callable[[], web.StreamResponse]]) -> AsyncIterator[str]:
    app = web.Application()
    for path, answer in routes.items():

        async def page(
            _r: web.Request, answer: Callable[[], web.StreamResponse] = answer
        ) -> web.StreamResponse:
            got = answer()
            return await got if inspect.isawaitable(got) else got

        app.router.add_get(path, page)
    async with served(app) as url:
        yield url


async def fetch_once(llm: FakeLLM, tmp_path: Path, url: str) -> str:
    """One fetch_url step through `agentbot ask`: what the model read."""
    llm.script(tool_call("fetch_url", {"url": url}), text("Done."))
    env = {
        "OPENAI_BASE_URL": llm.base_url,
        "AGENT_MODEL": "llama3.1",
        "PYTHON_SANDBOX": "off",
        "FETCH_ALLOW_LOOPBACK": "1",
    }
    code, out, err = await agentbot(tmp_path, "ask", "Read it", env=env)
    assert (code, out) == (0, "Done.\n"), err[-3000:]
    return str(llm.requests[1]["messages"][-1]["content"])


async def test_fetch_redirect_to_an_ipv6_site_local_address_is_refused(llm: FakeLLM, tmp_path: Path) -> None:
    # fec0::/10 is IPv6's old private range (RFC 3879 deprecated it; networks still route it inside a
    # site), and Python's ipaddress calls it global: the guard let the bot connect there.
    def hop() -> web.Response:
        return web.Response(status=302, headers={"Location": "http://[fec0::1]:8080/admin"})

    async with pages({"/go": hop}) as base:
        seen = await fetch_once(llm, tmp_path, f"{base}/go")
    assert "refused to connect to fec0::1" in seen and "site-local" in seen, seen
