"""``agentbot ask`` driven as terminal users drive it (fourth QA pass): what the terminal says when a run
is stopped or summed up, against the scripted model and pages on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pty
import sys
from pathlib import Path

import pytest
from aiohttp import web

from agent.events import Cost, ToolCallEvent, ToolResultEvent, Usage
from agent.messages import ToolCall
from agent.tools.builtin import calculator
from agent.tools.registry import ToolContext, ToolRegistry
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.served import served


async def test_ctrl_c_while_the_page_reader_reads_says_its_call_is_not_counted(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # READER_MODEL set, Ctrl-C while it read a long page: the summary counted the steps so far and said
    # nothing of the reader's call under way, which the provider may still bill (README: "with a note
    # when a model call was under way and so is not counted"); only the agent's own calls were tracked.
    from agent.ask import ask
    from agent.config import AgentSettings

    app = web.Application()

    async def notes(_: web.Request) -> web.Response:
        return web.Response(text="Otters swim. " * 800)

    app.router.add_get("/notes.txt", notes)
    async with served(app) as site:
        llm.script(tool_call("fetch_url", {"url": f"{site}/notes.txt"}), text("notes", hang=True))
        settings = AgentSettings(  # type: ignore[call-arg]
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="sk-t",
            DATA_DIR=str(tmp_path),
            READER_MODEL="gpt-4.1-nano",
            FETCH_ALLOW_LOOPBACK=True,
            PYTHON_SANDBOX="off",
        )
        err = io.StringIO()
        run = asyncio.ensure_future(ask("Summarise the notes", settings, out=io.StringIO(), err=err))
        for _ in range(3000):  # until the reader's call has reached the server (30 s at most)
            if len(llm.requests) == 2:
                break
            await asyncio.sleep(0.01)
        assert [r["model"] for r in llm.requests] == ["gpt-4o-mini", "gpt-4.1-nano"], err.getvalue()
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    lines = err.getvalue().splitlines()
    assert "status: cancelled" in lines[-2] and "→ fetch_url" in lines[-3], lines
    # The reader's cut call is counted by estimate with the agent's step, at gpt-4.1-nano's price.
    assert "estimated: " in lines[-2] and "models gpt-4o-mini, gpt-4.1-nano" in lines[-2], lines
    assert lines[-1] == "estimated: the model call in progress when stopped", lines


async def test_the_total_cost_keeps_the_precision_of_the_step_costs_it_sums(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # Five steps of gpt-4o-mini, each said as $0.000027, were summed up as "cost $0.0001": the total read
    # 26% under what the steps add up to ($0.000135), since amounts from $0.0001 kept only four places.
    from agent.ask import ask
    from agent.config import AgentSettings

    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-t", DATA_DIR=str(tmp_path), PYTHON_SANDBOX="off"
    )
    llm.script(*[tool_call("calculator", {"expression": f"{i}*7"}) for i in range(4)], text("Done."))
    err = io.StringIO()
    await ask("Times seven, four times", settings, out=io.StringIO(), err=err)
    lines = err.getvalue().splitlines()
    assert [line.strip() for line in lines if "tokens, $" in line] == ["100+20 tokens, $0.000027"] * 5
    assert lines[-1].startswith("5 steps · 500 prompt + 100 completion tokens · cost $0.00014 · "), lines


async def test_read_file_shows_the_whole_window_it_says_it_read(llm: FakeLLM, tmp_path: Path) -> None:
    # A 30,000-character file: read_file said "[characters 0-20000 of 30000; read_file again with
    # start=20000 for more]", but the tool's output cap (8,000, the default for every tool) cut the
    # window there, so a model paging as told never read characters 8,000-20,000 (a PDF attachment's
    # text in the bot lost the same).
    from agent.ask import ask
    from agent.config import AgentSettings

    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-t", DATA_DIR=str(tmp_path), PYTHON_SANDBOX="off"
    )
    lines = "".join(f"line {i:05d}\n" for i in range(2500))  # 11 characters a line: 27,500 in all
    llm.script(
        tool_call("write_file", {"path": "notes.txt", "content": lines}),
        tool_call("read_file", {"path": "notes.txt"}),
        text("Read."),
    )
    await ask("Read the notes", settings, out=io.StringIO(), err=io.StringIO())
    told = llm.requests[2]["messages"][-1]["content"]
    assert "read_file again with start=20000" in told and "truncated" not in told, told[-300:]
    assert told.endswith(lines[:20000]), told[-300:]  # line 01818, cut at character 20,000


async def _calculate(expression: str) -> str:
    call = ToolCall(id="c", name="calculator", arguments=json.dumps({"expression": expression}))
    return (await ToolRegistry([calculator]).execute(call, ToolContext())).output


async def test_the_calculator_answers_decimal_sums_as_a_calculator_shows_them() -> None:
    # "Evaluate an arithmetic expression exactly", the model is told, and README says "exact arithmetic":
    # 100*1.1 came back 110.00000000000001 and 0.1+0.2 as 0.30000000000000004 (binary floats), which
    # the model passed on to the user; an overflow came back as "inf", an answer, not an error.
    shown = {e: await _calculate(e) for e in ("0.1+0.2", "100*1.1", "3.3/1.1", "19.99*3", "2**0.5", "1/3")}
    assert shown == {
        "0.1+0.2": "0.3",
        "100*1.1": "110",
        "3.3/1.1": "3",
        "19.99*3": "59.97",
        "2**0.5": "1.4142135623731",
        "1/3": "0.333333333333333",
    }
    for overflow in ("1e308*10", "1e308*10 - 1e308*10"):
        assert "too large" in await _calculate(overflow), overflow


async def test_a_result_too_long_to_print_is_said_in_the_calculators_words() -> None:
    # 10**5000 (allowed: under the 10,000-digit bound) came back "ValueError: Exceeds the limit (4300
    # digits) for integer string conversion; use sys.set_int_max_str_digits()", advice to the model.
    assert await _calculate("10**5000") == '{"error": "the result has more than 4,300 digits"}'
    assert len(await _calculate("7**4000")) == 3381  # shorter ones are shown whole


async def test_a_search_shows_the_model_every_result_the_operator_allows(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # SEARCH_MAX_RESULTS=20 (its documented top) and the model asking for 20: the tool's fixed 6,000-
    # character cap cut the list after 11 ordinary results, while the run's sources listed all 20.
    from agent.ask import ask
    from agent.config import AgentSettings

    async def search(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "results": [
                    {
                        "url": f"https://news{i}.example.org/2024/03/baltic-otters-return",
                        "title": f"Otters return to the Baltic coast ({i})",
                        "content": "Surveys counted four hundred breeding pairs along the coast. " * 6,
                    }
                    for i in range(20)
                ]
            }
        )

    app = web.Application()
    app.router.add_get("/search", search)
    async with served(app) as searx:
        settings = AgentSettings(  # type: ignore[call-arg]
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="sk-t",
            DATA_DIR=str(tmp_path),
            PYTHON_SANDBOX="off",
            SEARCH_BACKEND="searxng",
            SEARXNG_URL=searx,
            SEARCH_MAX_RESULTS=20,
        )
        llm.script(tool_call("web_search", {"query": "baltic otters", "max_results": 20}), text("Otters."))
        result = await ask("Baltic otters?", settings, out=io.StringIO(), err=io.StringIO())
    told = llm.requests[1]["messages"][-1]["content"]
    assert "truncated" not in told and "news19.example.org" in told, told[-300:]
    assert len(result.sources) == 20


def test_a_task_typed_at_the_terminal_after_a_dash_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `agentbot ask -` at a prompt waited for standard input without a word, as if it hung: nothing
    # said that it reads the task as typed until Ctrl-D.
    from bot.ask_input import task_text

    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"What is 2+2?\n\x04")  # the line, then Ctrl-D at the start of the next
        with open(terminal, closefd=False) as typed:  # the test closes the terminal itself
            monkeypatch.setattr(sys, "stdin", typed)
            assert task_text("-") == "What is 2+2?\n"
    finally:
        os.close(controller)
        os.close(terminal)
    assert capsys.readouterr().err == "agentbot: type the task, then Ctrl-D on a line of its own\n"


class _SlowToStop:
    """The operator's MCP servers as ``ask`` sees them, one of which takes its time to stop (a server
    run with ``docker run -i``, or one that ignores the end of its input: the SDK then waits, sends
    SIGTERM and waits again, seconds in all)."""

    problems: dict[str, str] = {}

    def __init__(self) -> None:
        self.stopping = asyncio.Event()

    def tools(self) -> list[object]:
        return []

    async def aclose(self) -> None:
        self.stopping.set()
        await asyncio.sleep(3600)


async def test_the_answer_is_out_before_mcp_servers_are_stopped(
    llm: FakeLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With an MCP server slow to stop, the paid answer waited on stdout for seconds after it arrived,
    # and a Ctrl-C meanwhile ended the command with "interrupted" alone: no answer, no tokens or cost.
    import agent.ask
    from agent.config import AgentSettings

    servers = _SlowToStop()

    async def operator_mcp(_: object) -> _SlowToStop:
        return servers

    monkeypatch.setattr(agent.ask, "operator_mcp", operator_mcp)
    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-t", DATA_DIR=str(tmp_path), PYTHON_SANDBOX="off"
    )
    llm.script(text("Otters hold hands."))
    out, err = io.StringIO(), io.StringIO()
    run = asyncio.ensure_future(agent.ask.ask("Otters?", settings, out=out, err=err))
    await asyncio.wait_for(servers.stopping.wait(), 30)
    run.cancel()  # Ctrl-C while the servers stop
    with contextlib.suppress(asyncio.CancelledError):
        await run
    assert out.getvalue() == "Otters hold hands.\n"
    assert err.getvalue().splitlines()[-1].startswith("1 step · 100 prompt + 20 completion tokens"), err


def test_the_page_readers_tokens_are_said_as_the_readers() -> None:
    # READER_MODEL set: under "step 1 · gpt-4o-mini" came "100+20 tokens" and then, between the page's
    # call and its result, "5000+300 tokens, $0.0006" with no name: read as the step's model's, and not
    # to be found in that model's usage at the provider.
    from agent.events import StepStarted, UsageEvent
    from agent.terminal import TerminalRenderer

    err = io.StringIO()
    renderer = TerminalRenderer(err)
    for ev in (
        StepStarted(step=1, model="gpt-4o-mini"),
        UsageEvent(step=1, model="gpt-4o-mini", usage=Usage(100, 20), cost=Cost(0.000027)),
        ToolCallEvent(
            step=1, call_id="a", name="fetch_url", arguments={"url": "https://a.example/"}, raw_arguments=""
        ),
        UsageEvent(step=1, model="gpt-4.1-nano", usage=Usage(5000, 300), cost=Cost(0.00062)),
        ToolResultEvent(
            step=1, call_id="a", name="fetch_url", output="notes", read_by="gpt-4.1-nano", source_chars=46135
        ),
    ):
        renderer.render(ev)
    lines = [line.strip() for line in err.getvalue().splitlines()]
    assert lines[1] == "100+20 tokens, $0.000027"
    assert lines[3] == "gpt-4.1-nano (page reader): 5,000+300 tokens, $0.00062", lines
