"""A light OpenAI-compatible ``/v1/embeddings`` server for ``bench/bot_load.py --scaled``, in its own process.

    .venv/bin/python bench/fake_embeddings.py   # prints {"url": "http://127.0.0.1:PORT/v1"} and serves

The scaled deployment moves embeddings out of the bot (``MEMORY_EMBEDDING=openai``, README: Scaling); this
stands in for that service so the bench can measure what the bot process itself spends on memory then.
Each text becomes a hashed bag of its words (384 dimensions, like MiniLM): texts that share words are
near, the same text gives the same vector, so memory's duplicate check and recall behave as with a model.
It costs its own process a few tens of microseconds a text, none of it the bot's.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from typing import Any

from aiohttp import web

DIM = 384
WORD = re.compile(r"\w+")


def vector(text: str) -> list[float]:
    v = [0.0] * DIM
    for word in WORD.findall(text.lower()):
        h = zlib.crc32(word.encode())
        v[h % DIM] += 1.0 if h & 0x80000000 else -1.0
    if not any(v):
        v[0] = 1.0
    return v


async def embeddings(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    texts = body.get("input") or []
    if isinstance(texts, str):
        texts = [texts]
    data = [{"object": "embedding", "index": i, "embedding": vector(str(t))} for i, t in enumerate(texts)]
    out = {"object": "list", "data": data, "model": body.get("model", "fake"), "usage": {"prompt_tokens": 0}}
    return web.Response(text=json.dumps(out), content_type="application/json")


async def serve() -> None:
    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"url": f"http://127.0.0.1:{port}/v1"}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve())
