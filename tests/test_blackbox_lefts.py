"""Leftovers QA named: each test failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
from pathlib import Path

import httpx
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from agent.messages import Message
from agent.models.base import ContextOverflowError, ModelSettings
from agent.models.openai import OpenAIChatModel
from agent.terminal import TerminalRenderer
from agent.tools.fetch import FetchSettings, PageFetcher
from bot import app, cli
from bot.store.db import Database, StoreError
from bot.store.migrations import Migration
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, error, text, tool_call
from tests.fakes.served import served
from tests.fakes.web_server import FakeWeb
from tests.test_blackbox_ask_tools import AGENTBOT, ask_env
from tests.test_reader import agent_with_reader
from tests.test_reader import run as run_agent

# What self-hosted and hosted OpenAI-compatible servers answer when the conversation outgrew the model,
# as their sources word it; the router moves such a run to a bigger tier only when it recognises one.
_OVERFLOWS = {
    "tgi-total (Together, HF router)": (
        422,
        {
            "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
            "Given: 4000 `inputs` tokens and 512 `max_new_tokens`",
            "error_type": "validation",
        },
    ),
    "tgi-input": (
        422,
        {"error": "Input validation error: `inputs` must have less than 4095 tokens. Given: 5000"},
    ),
    "vllm-decoder-prompt": (
        400,
        {
            "object": "error",
            "message": "The decoder prompt (length 9000) is longer than the maximum model length of 8192. "
            "Make sure that `max_model_len` is no smaller than the number of text tokens.",
            "type": "BadRequestError",
        },
    ),
    "vllm-max-context": (
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 8192 tokens. However, you requested 9000 "
            "tokens (8000 in the messages, 1000 in the completion).",
            "type": "BadRequestError",
        },
    ),
    "llama.cpp": (
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
            }
        },
    ),
    "ollama": (400, {"error": "the input length exceeds the context length"}),
    "lm-studio": (
        400,
        {
            "error": "Trying to keep the first 5000 tokens when context the overflows. However, the model is "
            "loaded with context length of only 4096 tokens, which is not enough."
        },
    ),
}


@pytest.mark.parametrize("server", list(_OVERFLOWS))
async def test_every_servers_context_overflow_wording_is_a_context_overflow(
    http: httpx.AsyncClient, server: str
) -> None:
    status, body = _OVERFLOWS[server]

    async def chat(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app) as url:
        model = OpenAIChatModel("m", base_url=f"{url}/v1", client=http, max_attempts=1)
        with pytest.raises(
            ContextOverflowError, match=r"too long|past the context this server was started with"
        ):
            async for _ in model.stream([Message("user", "x")], [], ModelSettings(stream=False)):
                pass


async def test_a_full_disk_at_start_up_says_to_check_free_space_on_data_dir(tmp_path: Path) -> None:
    # A full disk at start-up said only SQLite's "database or disk is full" or, for an existing store,
    # "... is not an agentbot database (SQLite says: disk I/O error)" (seen on a full tmpfs DATA_DIR). A
    # page limit makes real SQLite refuse to grow the file here as a full disk does.
    full = Migration(1, "needs more pages than the disk has", "PRAGMA max_page_count = 2;" + _TABLES)
    with pytest.raises(StoreError) as refused:
        await Database.open(tmp_path / "agentbot.sqlite3", migrations=[full])
    said = str(refused.value)
    assert (
        "database or disk is full" in said and f"free space on the disk holding DATA_DIR ({tmp_path}" in said
    )


_TABLES = "".join(f"CREATE TABLE t{i} (x TEXT);" for i in range(8))


async def test_a_turn_failed_for_a_workspace_that_cannot_be_made_offers_no_retry(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # DATA_DIR/workspaces unwritable (full disk, read-only, foreign owner; a file in its place fails the
    # same mkdir as root can): the failed turn offered Retry, which could only fail the same way.
    (tmp_path / "workspaces").write_text("not a directory")
    llm.script(text("Paris."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        note = await fake.wait_for_message(
            thread, lambda m: m.content.startswith("This turn failed"), within=15
        )
        await wait_idle(fake, bot)
    assert "admin" in note.content and note.components == [], (note.content, note.components)
    assert llm.requests == []


@pytest.mark.usefixtures("fast_write_window")
async def test_shutdown_on_sigterm_logs_its_start_and_end_with_the_runs_it_paused(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `agentbot run` said nothing between SIGTERM and exit: an operator could not tell a stop from a hang,
    # nor whether runs were paused for the next start.
    llm.script(text("Paris.", delay=2))
    with capture_logs() as logs:
        monkeypatch.setattr(app, "log", structlog.get_logger("bot.app"))
        async with running_bot(fake, llm, tmp_path, guild, BOT_SHUTDOWN_GRACE_SECONDS=0) as bot:
            general = guild.channel("general")
            fake.inject_interaction("research", {"task": "Capital of France?"}, user="alice", channel=general)
            await fake.wait_for(lambda: len(llm.requests) == 1, what="the model call")
            cli._stop(bot, signal.SIGTERM)
            await bot._stopping
    said = [
        (rec["event"], rec.get("reason"), rec.get("paused_runs"))
        for rec in logs
        if "shutdown" in rec["event"]
    ]
    assert said == [("shutdown_started", "SIGTERM received", None), ("shutdown_done", None, 1)], said


async def test_sigterm_while_ask_waits_for_standard_input_is_interrupted_in_one_line(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # `agentbot ask < fifo` (or a pipe whose writer stalls), then `kill`: SIGTERM's default ended it
    # silently (-15), where Ctrl-C says "agentbot: interrupted" and exits 130.
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        "ask",
        env=ask_env(llm, tmp_path),
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    status = Path(f"/proc/{proc.pid}/status")
    sigterm_caught = 1 << (signal.SIGTERM - 1)
    for _ in range(600):  # until it handles SIGTERM, i.e. it waits on standard input
        caught = next(ln for ln in status.read_text().splitlines() if ln.startswith("SigCgt:"))
        if int(caught.split()[1], 16) & sigterm_caught:
            break
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, out) == (130, b""), err
    assert err.decode().strip().splitlines()[-1] == "agentbot: interrupted", err
    assert llm.requests == []


async def test_a_failing_page_reader_is_one_progress_line_in_ask(
    llm: FakeLLM, http: httpx.AsyncClient, web: FakeWeb
) -> None:
    # READER_MODEL refusing a page was only logged, and ask shows logs only with LOG_LEVEL=DEBUG: the run
    # went on with the whole page (paid at the agent model's price) without a word on the terminal.
    llm.script(tool_call("fetch_url", {"url": web.url("/long")}), text("ok"))
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=5, max_chars=2_000, reader_chars=60_000))
    async with FakeLLM() as reader_llm, contextlib.aclosing(fetcher):
        reader_llm.script(error(400, "model overloaded with nonsense"))
        events = await run_agent(agent_with_reader(llm, reader_llm, http, fetcher))
    err = io.StringIO()
    renderer = TerminalRenderer(err)
    for ev in events:
        renderer.render(ev)
    lines = [ln for ln in err.getvalue().splitlines() if "reader" in ln]
    assert len(lines) == 1 and "READER_MODEL" in lines[0] and "overloaded with nonsense" in lines[0], lines
    assert events[-1].result.ok
