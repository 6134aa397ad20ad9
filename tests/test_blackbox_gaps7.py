"""The agent-side gaps the last closing note named, each driven as its user meets it: a start-up stopped
while an MCP server is slow to answer, a provider's error text in the bot's voice, an answer far past
``max_tokens``, a timed-out ``run_python`` in ``ask``, a failure at step 1, and an empty variable that
hides ``.env``'s key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from agent.messages import Message
from agent.models.base import ModelResponse, ModelSettings
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, error, text, tool_call
from tests.test_blackbox_ask_tools import AGENTBOT, ask_cli, ask_env


def _processes_naming(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # it ended while we looked
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def _slow_server_file(tmp_path: Path, marker: str) -> Path:
    """An operator's stdio MCP server started through a wrapper (as ``npx``/``uvx``/``sh -c`` start
    theirs) that never answers its handshake within the start-up."""
    inner = f"{sys.executable} -c 'import time; time.sleep(300)' {marker}; true"
    servers = tmp_path / "mcp.toml"
    servers.write_text(
        f'[servers.slow]\ncommand = "sh"\nargs = ["-c", {json.dumps(inner)}]\nconnect_timeout = 120\n'
    )
    return servers


@pytest.mark.parametrize("command", ["ask", "run"])
@pytest.mark.usefixtures("fast_write_window")
async def test_a_start_up_stopped_while_an_mcp_server_handshakes_leaves_no_server_process(
    command: str, llm: FakeLLM, fake: FakeDiscord, tmp_path: Path
) -> None:
    """Ctrl-C in ``ask`` (SIGTERM in ``run``) while a wrapped stdio server had not answered: the
    wrapper was killed, the server it started kept running after ``agentbot`` exited (1 of 2 processes
    left each time, for good)."""
    marker = f"slow-mcp-{uuid.uuid4().hex}"
    env = ask_env(llm, tmp_path) | {"MCP_SERVERS_FILE": str(_slow_server_file(tmp_path, marker))}
    if command == "run":
        env |= {
            "DISCORD_TOKEN": fake.token,
            "DISCORD_API_BASE_URL": fake.api_url,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
        }
    log = tmp_path / "agentbot.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            AGENTBOT,
            command,
            *(["hello"] if command == "ask" else []),
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    try:
        for _ in range(600):  # both the wrapper and the server it started are up
            if len(_processes_naming(marker)) == 2 or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert len(_processes_naming(marker)) == 2, log.read_text()[-3000:]
        proc.send_signal(signal.SIGINT if command == "ask" else signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            raise AssertionError(
                f"agentbot {command} still running 60 s after the signal: {log.read_text()[-3000:]}"
            ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        left = _processes_naming(marker)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    said = log.read_text()
    assert left == [], f"MCP server processes left after agentbot {command} exited: {said[-3000:]}"
    assert code == (130 if command == "ask" else 0) and "Traceback" not in said, said[-3000:]
    assert llm.requests == []


async def test_a_stdio_server_writing_without_end_is_left_out_with_the_reason() -> None:
    """A stdio server that wrote 3 MiB without a newline: the SDK's transport held all it wrote (its
    buffer grew without a bound). It is cut at 2 MiB and the server left out, saying why."""
    from agent.tools.mcp import McpServer, McpTools

    flood = "head -c 3145728 /dev/zero | tr '\\0' x; sleep 60"
    async with McpTools([McpServer("flood", command="sh", args=("-c", flood), connect_timeout=10)]) as mcp:
        assert mcp.tools() == []
        assert "message of more than 2,097,152 bytes" in mcp.problems["flood"], mcp.problems


SLEEPER = "import time\ntime.sleep(60)"
PROVIDER_SAID = "**PWNED** [click here](https://evil.example) <@&123456789012345678> @everyone"


@pytest.mark.usefixtures("fast_write_window")
async def test_a_providers_error_text_shows_as_written_and_a_failure_at_step_1_is_said(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """A provider (or a proxy before it) answering 400 with Markdown in its error body: the thread's
    error note rendered it in the bot's voice (bold, a masked link, a role and @everyone mentions); the
    footer summed the run up as "0 steps". The bot's own words around it still render."""
    llm.script(error(400, PROVIDER_SAID), tool_call("run_python", {"code": SLEEPER}), text("It slept."))
    async with running_bot(fake, llm, tmp_path, guild, agent_env={"PYTHON_TIMEOUT": 1}) as bot:
        general = guild.channel("general")
        shown, steps = [], []
        for n, task in enumerate(("Summarise otters", "Sleep a while"), 1):
            fake.inject_interaction("research", {"task": task}, user="alice", channel=general)
            await fake.wait_for(lambda n=n: len(fake.threads(general)) == n, what=f"thread {n}")
            thread = fake.threads(general)[-1]
            await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=30)
            await wait_idle(fake, bot)
            (shown if not shown else steps).extend(m.content for m in fake.messages(thread))
    # The second run's timed-out code is a failed call here as in `ask` (below): ⚠️, not ↳.
    step = next(c for c in steps if "run_python" in c)
    assert "\n⚠️ " in step and "did not finish" in step, step
    note = next(c for c in shown if c.startswith("⚠️"))
    assert (
        "\\*\\*PWNED\\*\\* \\[click here](https://evil.example) <@\u200b&123456789012345678> @\u200beveryone"
        in note
    ), note
    assert note.startswith("⚠️ gpt-4o-mini: HTTP 400 (test) from http://127.0.0.1:"), note
    footer = next(c for c in shown if c.startswith("-# "))
    assert "· stopped at step 1 by the error above · 0 tokens (0 in, 0 out)" in footer, footer
    assert "· no model answered ·" in footer, footer
    assert "0 steps" not in footer, footer


async def test_ask_says_a_failure_at_step_1_as_such_not_as_0_steps(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(error(400, PROVIDER_SAID))
    code, out, err = await ask_cli(llm, tmp_path, "Summarise otters")
    said = err.strip().splitlines()
    assert code == 1 and out == "", err
    assert said[-2].startswith("error: gpt-4o-mini: HTTP 400 (test) from http://127.0.0.1:"), err
    assert said[-2].endswith(PROVIDER_SAID), err  # a terminal renders no Markdown: shown as written
    assert said[-1].startswith("stopped at step 1 by the error above · 0 prompt + 0 completion"), err
    assert "status: error" in said[-1], err


@pytest.mark.parametrize("command", ["ask", "run"])
async def test_a_key_set_empty_in_the_environment_is_named_as_hiding_the_one_in_env(
    command: str, tmp_path: Path
) -> None:
    """``export OPENAI_API_KEY=`` (or a Compose ``${DISCORD_TOKEN}`` of a shell without it) hides the
    value in .env, as README's rule says; the error said "put your key in .env", where it was."""
    name = "OPENAI_API_KEY" if command == "ask" else "DISCORD_TOKEN"
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-in-dotenv-0001\nDISCORD_TOKEN=token-in-dotenv\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path / "data"), name: ""}
    log = tmp_path / "agentbot.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            AGENTBOT,
            command,
            *(["hello"] if command == "ask" else []),
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
        code = await asyncio.wait_for(proc.wait(), 60)
    said = log.read_text()
    assert code == 2 and len(said.strip().splitlines()) == 1, said[-3000:]
    assert f"{name} is set but empty in the environment, which hides its value in .env" in said, said
    assert f"unset {name}" in said and "put your key in .env" not in said, said
    assert "sk-in-dotenv" not in said and "token-in-dotenv" not in said, said


async def test_ask_shows_run_python_code_that_did_not_finish_as_failed(llm: FakeLLM, tmp_path: Path) -> None:
    """Code stopped at PYTHON_TIMEOUT showed "✓ run_python 1.2s: did not finish": the tool worked, the
    code did not. It is ✗ now, as the thread shows it ⚠️ (above); the model reads the same text."""
    llm.script(tool_call("run_python", {"code": SLEEPER}), text("It slept."))
    code, out, err = await ask_cli(llm, tmp_path, "Sleep a while", env={"PYTHON_TIMEOUT": "1"})
    assert code == 0 and out == "It slept.\n", err
    (line,) = [x for x in err.splitlines() if "run_python " in x and "s: " in x]
    assert line.lstrip().startswith("✗ run_python") and ": did not finish" in line, err
    assert "did not finish" in llm.requests[1]["messages"][-1]["content"]


async def test_an_answer_far_past_max_tokens_is_cut_and_marked_not_read_whole(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """A server ignoring max_tokens (AGENT_MAX_TOKENS=100) streamed 1 MB of tool-call arguments, then
    1 MB of answer: both were read whole (up to 128 MiB), kept, and the call run. Reading stops at 1,600
    characters (16 a token): the call is cut and not run, the answer is cut and says so."""
    big = 1_000_000
    llm.script(
        tool_call("write_file", {"path": "big.txt", "content": "x" * big}, fragment=8192),
        text("y" * big, fragment=8192),
    )
    code, out, err = await ask_cli(llm, tmp_path, "Write a lot", env={"AGENT_MAX_TOKENS": "100"})
    assert code == 0, err
    assert out.startswith("y" * 1_600 + "\n\n*(Cut off here"), (len(out), err[-2000:])
    assert out.rstrip().endswith("ask it to continue.)*"), out[-300:]
    assert "estimated: " in err.strip().splitlines()[-1], err  # counted from what was read
    fed_back = llm.requests[1]["messages"][-1]["content"]
    assert "not run: your reply reached its output limit" in fed_back, fed_back
    assert not list((tmp_path / "data").rglob("big.txt"))
    assert len(json.dumps(llm.requests[1]["messages"])) < 50_000  # the cut call was not sent back whole


@pytest.mark.parametrize("wire", ["anthropic", "gemini"])
async def test_other_wires_cut_an_answer_far_past_max_tokens(wire: str, http: httpx.AsyncClient) -> None:
    """The same bound on the Anthropic and Gemini wires: a 1 MB answer to max_tokens=100 ends cut
    (``length``, as the loop marks it) after about 1,600 characters, not read whole."""
    from agent.models.anthropic import AnthropicModel
    from agent.models.gemini import GeminiModel
    from tests.fakes import anthropic_server, gemini_server

    fake = anthropic_server if wire == "anthropic" else gemini_server
    async with anthropic_server.FakeAnthropic() if wire == "anthropic" else gemini_server.FakeGemini() as api:
        api.script(fake.Reply(text="y" * 1_000_000, fragment=8192))
        cls = AnthropicModel if wire == "anthropic" else GeminiModel
        name = "claude-haiku-4-5" if wire == "anthropic" else "gemini-2.0-flash"
        model = cls(name, api_key="test-key-0001", base_url=api.base_url, client=http, max_attempts=1)
        chunks = [c async for c in model.stream([Message("user", "hi")], [], ModelSettings(max_tokens=100))]
    response = chunks[-1]
    assert isinstance(response, ModelResponse) and response.finish_reason == "length"
    assert 1_600 < len(response.message.content) < 12_000, len(response.message.content)
    assert response.usage.estimated and response.usage.completion_tokens >= 400  # what was read, not 1


async def test_a_whole_answer_far_past_max_tokens_is_cut_too(llm: FakeLLM, tmp_path: Path) -> None:
    """AGENT_STREAM=false reads an answer whole (the 128 MiB body cap holds): 1 MB to a cap of 100
    tokens was printed, kept and checkpointed whole. It is cut at the same bound, marked as cut."""
    llm.script(text("z" * 1_000_000))
    env = {"AGENT_MAX_TOKENS": "100", "AGENT_STREAM": "false"}
    code, out, err = await ask_cli(llm, tmp_path, "Write a lot", env=env)
    assert code == 0, err
    assert out.startswith("z" * 1_600 + "\n\n*(Cut off here"), (len(out), err[-2000:])
    assert out.rstrip().endswith("ask it to continue.)*"), out[-300:]


def test_a_limit_stopped_turns_saved_answer_after_a_restart_says_the_limit_once_as_a_note() -> None:
    """A turn a limit stopped, killed after its end was saved and before it was posted: the restart
    posted the limit's note glued to the partial answer, as the answer (the note, shown before the
    kill, twice). The note is said once, as the note it was; the partial answer follows."""
    from agent.events import Cost, RunResult, Usage
    from bot.progress import ProgressRenderer
    from tests.test_blackbox_left import _Shown

    note = "This server's monthly budget is used up: $5.00 of $5.00. It resets <t:1767225600:R>."
    text = f"{note}\n\nBest partial answer so far:\n\nOtters **hold** hands."
    result = RunResult(text, "budget", 2, Usage(), Cost(), ["m"], error=note, stopped_at=3)
    for before_kill in ([], [f"⚠️ {note}"]):
        shown = _Shown()
        renderer = ProgressRenderer(shown)  # type: ignore[arg-type]
        renderer.finish(result, shown=lambda t, before=before_kill: t in before)
        notes = [f"⚠️ {note}"] if not before_kill else []
        assert shown.blocks[:-1] == [*notes, "Best partial answer so far:\n\nOtters **hold** hands."]
        assert "2 steps, stopped at step 3 by the limit above" in shown.blocks[-1], shown.blocks


async def test_the_judges_reported_model_name_never_reaches_the_routing_note(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    """The judge's routing reason named the model its server reported ("**x** [win](https://evil)"),
    shown in the thread's routing note as Markdown in the bot's words; it names the model called."""
    from agent.models.classifier import JudgeClassifier
    from agent.models.openai import OpenAIChatModel
    from bot.notes import Routed

    llm.script(text("simple", model="**PWNED** [win](https://evil.example)"))
    judge = OpenAIChatModel("gpt-4.1-nano", base_url=llm.base_url, api_key="sk-j-0001", client=http)
    decision = await JudgeClassifier(judge).classify("capital of Peru?")
    assert decision.reasons == ("gpt-4.1-nano said simple",)
    assert "PWNED" not in Routed("simple", "gpt-4.1-nano", reasons=decision.reasons).text
