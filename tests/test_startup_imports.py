"""What ``agentbot`` loads at start-up: every command pays for each module at every start (the suite
starts ~210 of them). One process, as the installed command starts: no other import before ``bot.cli``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import sys
import bot.cli  # first, as the `agentbot` command imports it
import httpx, structlog  # imported by every command that does more than --help
import agent.ask  # `ask`: rich loads for the terminal's progress lines
unused = [m for m in ("rich.traceback", "rich.pretty", "pygments", "attr", "httpx._main", "click") if m in sys.modules]
print("unused loaded:", unused)
print("rich loaded:", "rich.console" in sys.modules)
import agent.memory.chroma_store  # chromadb loads with the first client, not with the store's modules
print("chromadb loaded:", "chromadb" in sys.modules)

from agent.logs import configure_logging, register_secret
register_secret("sk-startup-secret-0001")
configure_logging("INFO", "console", stream=sys.stdout)
def fails(key):
    raise RuntimeError("boom " + key)
try:
    fails("sk-startup-secret-0001")
except RuntimeError:
    structlog.get_logger("t").exception("crashed")
"""


def test_start_up_skips_structlogs_and_httpxs_unused_extras_and_tracebacks_still_draw(tmp_path: Path) -> None:
    # Before: structlog brought rich's traceback and pretty-printer (attrs, pygments) and httpx its
    # command-line client (click, rich, pygments) into every start, ~50 ms of CPU each.
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT], stdout=out, stderr=subprocess.STDOUT, timeout=60
        )
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())  # the console log's colours
    assert proc.returncode == 0, text[-3000:]
    assert "unused loaded: []" in text, text[-3000:]
    assert "rich loaded: True" in text, text[-3000:]
    assert "chromadb loaded: False" in text, text[-3000:]
    # The console log's traceback is still rich's (boxed, locals shown), with the secret redacted.
    assert "Traceback (most recent call last)" in text and "key = '***'" in text, text[-3000:]
    assert "sk-startup-secret-0001" not in text, text[-3000:]
