"""What ``agentbot ask`` prints, and where, when its output goes to a script, a pipe or a file."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from pathlib import Path

import pytest
from aiohttp import web

from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.served import served
from tests.test_blackbox_ask_tools import ask_cli


async def test_an_answer_that_cannot_be_written_is_one_line_and_the_run_is_still_summed_up(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # `agentbot ask ... > answer.md` on a full disk: a traceback (exit 120) and no tokens or cost said.
    llm.script(text("The answer.", prompt_tokens=1000, completion_tokens=100))
    with open("/dev/full", "w") as full:
        code, _, err = await ask_cli(llm, tmp_path, "question", stdout=full)
    assert code == 1 and "Traceback" not in err and "Exception ignored" not in err, err
    lines = err.strip().splitlines()
    assert lines[-2].startswith("1 step · 1,000 prompt + 100 completion tokens"), err
    assert lines[-1] == "agentbot: cannot write the answer to standard output (No space left on device)", err


async def test_names_and_links_with_brackets_are_shown_as_they_are(llm: FakeLLM, tmp_path: Path) -> None:
    # The summary went through rich markup unescaped: "[disambiguation]" in a source vanished, so the
    # link shown led elsewhere, and a server-reported model name holding "[/]" crashed the run with a
    # MarkupError traceback after the answer.
    link = "https://en.wikipedia.org/wiki/Otter_[disambiguation]"
    app = web.Application()
    app.router.add_get(
        "/search",
        lambda _r: web.json_response({"results": [{"url": link, "title": "Otter", "content": "x"}]}),
    )
    llm.script(
        tool_call("web_search", {"query": "otter"}, model="team[/]llama"),
        text("Otters.", model="team[/]llama"),
    )
    async with served(app) as searx:
        env = {"SEARCH_BACKEND": "searxng", "SEARXNG_URL": searx}
        code, out, err = await ask_cli(llm, tmp_path, "otters?", env=env)
    assert (code, out) == (0, "Otters.\n"), err
    assert f"sources: {link}" in err, err
    assert "models team[/]llama · " in err, err


async def test_control_sequences_from_pages_and_the_model_never_reach_the_terminal(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # A page (through a tool's output) or the model could retitle the window, clear the screen or,
    # with OSC 52, write the user's clipboard: every escape reached stderr and stdout as bytes.
    hostile = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b]0;owned\x07\x1b[2J\x9b31m\r"
    app = web.Application()
    app.router.add_get(
        "/search",
        lambda _r: web.json_response(
            {
                "results": [
                    {"url": "https://otters.example/", "title": "Otters", "content": f"sea {hostile}otters"}
                ]
            }
        ),
    )
    llm.script(tool_call("web_search", {"query": "otter"}), text(f"Sea {hostile}otters\tholt\n"))
    async with served(app) as searx:
        env = {"SEARCH_BACKEND": "searxng", "SEARXNG_URL": searx}
        code, out, err = await ask_cli(llm, tmp_path, "otters?", "--show-text", env=env)
    assert code == 0, err
    for said in (out, err):
        assert not any(c in said for c in "\x1b\x07\x9b\r"), repr(said)
    assert out == "Sea ]52;c;ZWNobyBwd25lZA==]0;owned[2J31motters\tholt\n"  # the rest of the answer as is
    assert "sea ]52;c" in err and "Sea ]52;c" in err  # the tool's output and the streamed words


def test_streamed_words_are_written_as_they_come_without_a_rich_render_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `--show-text` printed a 200 KB answer in 6.6 s instead of 0.7 s: each of its ~30,000 deltas went
    # through rich's Console.print (~0.25 ms a call). A count, not a timing: the cost was per call.
    from rich.console import Console

    from agent.events import TextDelta
    from agent.terminal import TerminalRenderer

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    printed = []
    real_print = Console.print
    monkeypatch.setattr(
        Console, "print", lambda self, *a, **k: printed.append(a) or real_print(self, *a, **k)
    )
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    for err, dim in ((io.StringIO(), ""), (Tty(), "\x1b[2m")):
        renderer = TerminalRenderer(err, show_text=True)
        words = ["Otters ", "[hold] ", "hands\x1b]0;x\x07 ", "while ", "asleep."] * 200
        for word in words:
            renderer.render(TextDelta(step=1, text=word))
        assert printed == [], printed[:3]  # written as they come, not rendered
        shown = err.getvalue()
        assert shown.replace(dim, "").replace("\x1b[0m", "") == "".join(words).replace("\x1b]0;x\x07", "]0;x")
        assert shown.startswith(f"{dim}Otters ")  # dimmed on a terminal, as rich's style="dim" did


async def test_closed_and_narrow_outputs_are_one_line_or_quiet_and_the_answer_goes_where_it_can(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # Each was a Python traceback: `>&-` after the run was paid for (AttributeError), an ASCII or
    # Latin-1 terminal (UnicodeEncodeError, the answer lost), `| head -1` ("cannot write" as an error),
    # a stderr whose reader went away ended the run at its first progress line, answer lost, and
    # with stderr closed (`2>&-`) the progress lines went into the answer on stdout.
    answer = "Café ✓ 中文\n"
    llm.script(*[text(answer)] * 4)
    gone_out, gone_err = os.pipe(), os.pipe()
    os.close(gone_out[0])
    os.close(gone_err[0])
    (tmp_path / "a").mkdir()
    closed, ascii_, piped, no_err, err_closed = await asyncio.gather(
        ask_cli(llm, tmp_path / "a", "q", preexec_fn=lambda: os.close(1)),
        ask_cli(llm, tmp_path, "q", env={"PYTHONIOENCODING": "ascii"}),
        ask_cli(llm, tmp_path, "q", stdout=gone_out[1]),
        ask_cli(llm, tmp_path, "q", "--show-text", stderr=gone_err[1]),
        ask_cli(llm, tmp_path, "q", preexec_fn=lambda: os.close(2)),
    )
    os.close(gone_out[1])
    os.close(gone_err[1])
    assert closed[0] == 2 and closed[2] == (
        "agentbot: standard output is closed, so the answer has nowhere to go: redirect it, e.g. > answer.md\n"
    )
    assert ascii_[:2] == (0, "Caf\\xe9 \\u2713 \\u4e2d\\u6587\n"), ascii_[2]
    assert "the answer has 4 characters that standard output's encoding (ascii) cannot carry" in ascii_[2]
    assert piped[0] == 141 and "Traceback" not in piped[2] and "agentbot:" not in piped[2], piped[2]
    assert piped[2].strip().splitlines()[-1].startswith("1 step · 100 prompt")  # what it cost, still said
    assert no_err[:2] == err_closed[:2] == (0, answer)
    assert len(llm.requests) == 4  # `>&-` is said before the run, never paid for


async def test_show_text_without_streaming_says_why_it_shows_no_words(llm: FakeLLM, tmp_path: Path) -> None:
    # With AGENT_STREAM=false (a server that cannot stream), `--show-text` silently showed nothing.
    from agent.ask import ask
    from agent.config import AgentSettings

    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-t", AGENT_STREAM=False, DATA_DIR=str(tmp_path)
    )
    llm.script(text("Whole."))
    out, err = io.StringIO(), io.StringIO()
    await ask("q", settings, show_text=True, out=out, err=err)
    assert out.getvalue() == "Whole.\n"
    assert err.getvalue().startswith(
        "! --show-text shows no words while AGENT_STREAM=false asks for whole replies\n"
    )


async def test_a_long_answer_reaches_a_non_blocking_stdout_whole(llm: FakeLLM, tmp_path: Path) -> None:
    # A terminal a crashed program left O_NONBLOCK, or a parent's non-blocking pipe: Python's stdout
    # dropped what the pipe could not take at once, silently, so 64 KB of the answer arrived, exit 0.
    import fcntl
    import termios

    answer = "".join(f"line {i:06d} of a long answer\n" for i in range(10_000))  # 300 KB, > a pipe
    llm.script(text(answer, fragment=50_000))
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    os.set_blocking(read_end, False)
    run = asyncio.ensure_future(ask_cli(llm, tmp_path, "q", stdout=write_end))

    def queued() -> int:
        return int.from_bytes(fcntl.ioctl(read_end, termios.FIONREAD, b"\0\0\0\0"), "little")

    got, full = bytearray(), False
    for _ in range(6000):  # at most a minute, in 10 ms polls
        full = full or queued() >= 65_536  # once the pipe is full, the writer must wait for us
        if full:
            with contextlib.suppress(BlockingIOError):
                got += os.read(read_end, 1 << 20)
        if run.done() and not queued():
            break
        await asyncio.sleep(0.01)
    os.close(read_end)
    os.close(write_end)
    code, _, err = await run
    assert code == 0 and got.decode() == answer, (len(got), err)
