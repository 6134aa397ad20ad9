"""What a user reads at the end of a run, through the installed ``agentbot ask`` against scripted
endpoints on 127.0.0.1 that end their replies the ways real servers do."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.llm_server import FakeLLM, text
from tests.test_blackbox_operator import agentbot


async def test_an_answer_cut_off_at_the_output_cap_says_so(llm: FakeLLM, tmp_path: Path) -> None:
    # finish_reason "length": the model hit max_tokens mid-sentence (Anthropic's "max_tokens" maps here too).
    cut = "The three main causes were, first, the drought of 1931; second, the"
    llm.script(text(cut, finish="length"))
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1", "AGENT_MAX_TOKENS": "20"}
    code, out, err = await agentbot(tmp_path, "ask", "Why did the Dust Bowl happen?", env=env)
    assert code == 0, err
    assert out.startswith(cut)
    note = out.removeprefix(cut)
    assert "cut off" in note.lower() and "AGENT_MAX_TOKENS" in note, out  # not passed off as the whole answer


async def test_a_whole_answer_carries_no_cut_off_note(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(text("Paris.", finish="eos"))  # some local servers send their own reason names
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1"}
    code, out, err = await agentbot(tmp_path, "ask", "Capital of France?", env=env)
    assert (code, out) == (0, "Paris.\n"), err
