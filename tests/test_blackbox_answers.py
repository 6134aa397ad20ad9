"""What a user reads at the end of a run, through the installed ``agentbot ask`` against scripted
endpoints on 127.0.0.1 that end their replies the ways real servers do."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import anthropic_server as gem
from tests.fakes.gemini_server import FakeGemini
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


async def test_an_answer_blocked_by_the_providers_filter_says_so_at_once(tmp_path: Path) -> None:
    async with FakeGemini() as gemini:
        gemini.script(*[gem.Reply(text="", finish="SAFETY")] * 2)
        env = {
            "GEMINI_BASE_URL": gemini.base_url,
            "GEMINI_API_KEY": "gm-test-key-123456789",
            "AGENT_MODEL": "gemini:gemini-2.5-flash",
        }
        code, out, err = await agentbot(tmp_path, "ask", "a question the filter blocks", env=env)
    assert code == 1 and out == ""
    assert "content filter" in err, err  # not "returned an empty answer twice"
    assert len(gemini.requests) == 1  # the same blocked request is not paid for again


async def test_a_thinking_model_that_spends_its_whole_cap_names_agent_max_tokens(
    llm: FakeLLM, tmp_path: Path
) -> None:
    llm.script(*[text("", finish="length", reasoning_tokens=20)] * 2)
    env = {"OPENAI_BASE_URL": llm.base_url, "AGENT_MODEL": "llama3.1", "AGENT_MAX_TOKENS": "20"}
    code, out, err = await agentbot(tmp_path, "ask", "Prove it.", env=env)
    assert code == 1 and out == ""
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "AGENT_MAX_TOKENS" in line, err
    assert len(llm.requests) == 1
