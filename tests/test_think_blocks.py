"""A reasoning model's ``<think>`` block (DeepSeek-R1, Qwen3 on vLLM, llama.cpp, older Ollama) is never
shown: not in the answer, and not live while the answer streams (the thread's preview and ``agentbot
ask``'s terminal both draw the run's TextDelta events)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace

import httpx
import pytest

from agent import ToolRegistry
from agent.events import TextDelta
from agent.loop import Agent
from agent.models.openai import OpenAIChatModel
from agent.models.openai_wire import HOLD_CHARS, HOLD_SECONDS, ThinkFilter
from agent.terminal import TerminalRenderer
from agent.tools.builtin import builtin_tools
from tests.fakes.llm_server import FakeLLM, text, tool_call

CASES = [
    # (reply as the server sends it, the answer)
    ("<think>\nThe user wants a capital.\n</think>\n\nParis.", "Paris."),
    ("\n\n  <think>hidden</think>Paris.", "Paris."),  # a block after leading whitespace still opens the reply
    ("<think>cut off at the output cap, never clos", ""),
    ("Paris, no thinking at all.", "Paris, no thinking at all."),
    ("  Indented answer.\n", "  Indented answer.\n"),
    ("<thin", "<thin"),  # only looked like the start of a tag
    (
        "R1 writes <think> and </think> around its reasoning.",
        "R1 writes <think> and </think> around its reasoning.",
    ),
    ("<think>a</think>It ends with </think> here.", "It ends with </think> here."),
]


def pieces(reply: str) -> list[list[str]]:
    """The reply whole, one character at a time, and cut in two at every place (tags split across chunks)."""
    return [[reply], list(reply), *([reply[:i], reply[i:]] for i in range(1, len(reply)))]


@pytest.mark.parametrize(("reply", "answer"), CASES)
def test_the_live_text_and_the_answer_drop_the_same_think_block_however_it_is_chunked(
    reply: str, answer: str
) -> None:
    for chunks in pieces(reply):
        f = ThinkFilter()
        live = "".join(f.feed(c) for c in chunks) + f.end()
        assert (live, f.text) == (answer, answer), chunks


def test_a_bare_closing_tag_drops_r1s_reasoning_and_a_model_known_for_it_is_held_back_live() -> None:
    # R1's template opens <think> in the prompt, so only the closing tag comes: the first such reply's
    # reasoning streamed live (to the thread's preview and `ask --show-text`) before the tag told it apart.
    for chunks in pieces("Okay, the capital.\n</think>\n\nParis."):
        f = ThinkFilter()
        live = "".join(f.feed(c) for c in chunks) + f.end()
        assert (live, f.text, f.bare_close) == ("Paris.", "Paris.", True), chunks
    for reply, answer in [
        ("Hmm, add them.</think>\n4", "4"),
        ("No thinking this time.", "No thinking this time."),
    ]:
        for chunks in pieces(reply):
            f = ThinkFilter(opened=True)
            live = "".join(f.feed(c) for c in chunks) + f.end()
            assert (live, f.text) == (answer, answer), chunks


def test_a_reply_that_never_closes_a_block_is_held_back_only_up_to_a_bound() -> None:
    # Holding every plain reply back until its end would leave a model that never thinks unseen while
    # it writes: past HOLD_CHARS characters or HOLD_SECONDS the text is shown as it comes.
    line = "An answer, no thinking at all.\n"
    f = ThinkFilter(clock=lambda: 0.0)  # the characters' bound alone
    held = HOLD_CHARS // len(line)  # lines that fit in the bound
    shown = [f.feed(line) for _ in range(held + 3)]
    assert not any(shown[:held]) and shown[held] == line * (held + 1) and shown[-1] == line
    assert f.end() == "" and f.text == "".join(shown) == line * len(shown)
    now = [100.0]  # the time's bound: a slow model's first words are seen within HOLD_SECONDS
    f = ThinkFilter(clock=lambda: now[0])
    assert f.feed("Slowly ") == "" and f.feed("written ") == ""
    now[0] += HOLD_SECONDS
    assert f.feed("words.") == "Slowly written words." and f.feed(" More.") == " More."
    # Thinking longer than the bound shows live (nothing told it apart), yet never reaches the answer.
    f = ThinkFilter()
    live = f.feed("x" * (HOLD_CHARS + 1)) + f.feed("</think>Paris.") + f.end()
    assert (live, f.text) == ("x" * (HOLD_CHARS + 1) + "Paris.", "Paris.")


async def test_a_think_block_never_streams_into_the_live_view_or_the_terminal(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    secret = "SECRET-REASONING"
    step = tool_call("calculator", {"expression": "2+2"}, fragment=3)
    llm.script(
        replace(step, text=f"<think>\n{secret} one\n</think>\n"),
        # The same model now closes a block its template opened in the prompt (R1): its text before the
        # bare </think> streamed live (to the thread's preview and the terminal); known from step 3 on.
        replace(step, text=f"{secret} two</think>\n"),
        text(f"{secret} three</think>\n\n2+2 is 4.", fragment=3),
    )
    model = OpenAIChatModel("qwen3", base_url=llm.base_url, api_key="sk-test", client=http, max_attempts=1)
    term = io.StringIO()
    renderer = TerminalRenderer(term, show_text=True)
    async with contextlib.aclosing(Agent(model, ToolRegistry(builtin_tools())).run("What is 2+2?")) as events:
        seen = [e async for e in events]
    for ev in seen[:-1]:
        renderer.render(ev)
    live = {ev.step: "" for ev in seen if isinstance(ev, TextDelta)}
    for ev in seen:
        if isinstance(ev, TextDelta):
            live[ev.step] += ev.text
    assert seen[-1].result.text == "2+2 is 4."
    shown = term.getvalue()
    assert "think>" not in shown and secret not in shown, shown
    assert 1 not in live and 2 not in live  # nothing but thinking before the tool calls
    assert live[3] == "2+2 is 4."
