"""Tools as a prompt-injected model drives them through ``agentbot ask`` (a subprocess, the scripted model
on 127.0.0.1), found by the second black-box security QA."""

from __future__ import annotations

import json
from pathlib import Path

from agent.tool_step import MAX_CALLS_PER_STEP
from tests.fakes.llm_server import FakeLLM, text, tool_call, tool_calls
from tests.test_blackbox_ask_tools import ask_cli


async def test_one_step_cannot_run_an_unbounded_number_of_tool_calls(llm: FakeLLM, tmp_path: Path) -> None:
    # A model asked for 200 read_file calls of a 200 KB file in one step: all ran at once and their
    # results made the next request over 1 MB, so the run failed ("the conversation is too long").
    # Nothing bounded calls per step (rate limits cover only web_search, fetch_url, run_python).
    llm.script(
        tool_call("write_file", {"path": "big.txt", "content": "word " * 40_000}),
        tool_calls(*[("read_file", {"path": "big.txt"})] * 200),
        text("Done."),
    )
    code, out, err = await ask_cli(llm, tmp_path, "read it")
    assert (code, out.strip()) == (0, "Done."), err
    results = [m for m in llm.requests[2]["messages"] if m["role"] == "tool"][1:]
    assert len(results) == 200  # every call is answered, in order
    ran = [r for r in results if "word word" in r["content"]]
    refused = [json.loads(r["content"])["error"] for r in results[len(ran) :]]
    assert len(ran) == MAX_CALLS_PER_STEP
    assert set(refused) == {
        f"not run: one step may make at most {MAX_CALLS_PER_STEP} tool calls; make the ones you still "
        "need in the next step"
    }
