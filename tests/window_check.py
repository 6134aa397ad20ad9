"""Which end-to-end tests may take ``fast_write_window`` (tests/conftest.py): those whose bot writes the very
same thing to Discord with the real 5 s window and with the short one.

Record each test's writes (every POST, PATCH, PUT and DELETE but typing, in order: route, status and text
with digits masked, since ids, ports and durations differ from run to run), once as the bots run and once
with the short window for every in-process bot, then compare::

    WRITES_TO=real.jsonl PYTHONPATH=. pytest -p tests.window_check -n 2 FILES
    WRITES_TO=fast.jsonl FAST_WINDOW_ALL=1 PYTHONPATH=. pytest -p tests.window_check -n 2 FILES
    python -m tests.window_check real.jsonl fast.jsonl     # the tests that wrote the same, then the others

Run the short one twice: a test whose writes depend on timing differs between two runs and keeps the
real window.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections import defaultdict
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from tests.fakes import discord_server

    if os.environ.get("FAST_WINDOW_ALL") == "1":
        import bot.runner
        from bot.write_window import WriteBudget
        from tests.conftest import FAST_WRITE_WINDOW

        bot.runner.WriteBudget = functools.partial(WriteBudget, per=FAST_WRITE_WINDOW)  # type: ignore[misc]
    closing = discord_server.FakeDiscord.__aexit__
    out = os.environ["WRITES_TO"]

    async def record(self: discord_server.FakeDiscord, *exc: Any) -> Any:
        writes = []
        for call in self.state.calls:
            if call.method == "GET" or (call.route or "").endswith("/typing"):
                continue
            body = call.json if isinstance(call.json, dict) else {}
            text = (body["data"] if isinstance(body.get("data"), dict) else body).get("content")
            masked = re.sub(r"\d+", "#", text) if isinstance(text, str) else text
            writes.append([call.method, call.route, call.status, masked])
        node = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
        with open(out, "a") as f:
            f.write(json.dumps({"node": node, "writes": writes}) + "\n")
        return await closing(self, *exc)

    discord_server.FakeDiscord.__aexit__ = record  # type: ignore[method-assign]


def _load(path: str) -> dict[str, list[Any]]:
    runs: dict[str, list[Any]] = defaultdict(list)
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            runs[row["node"]].append(row["writes"])
    return runs


if __name__ == "__main__":
    real, fast = _load(sys.argv[1]), _load(sys.argv[2])
    same = sorted(n for n in real if real[n] == fast.get(n))
    print("\n".join(same))
    print(f"# {len(same)} wrote the same; these did not:", *sorted(set(real) - set(same)), sep="\n# ")
