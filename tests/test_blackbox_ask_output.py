"""What ``agentbot ask`` prints, and where, when its output goes to a script, a pipe or a file."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.llm_server import FakeLLM, text
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
    assert lines[-2].startswith("1 step · 1000 prompt + 100 completion tokens"), err
    assert lines[-1] == "agentbot: cannot write the answer to standard output (No space left on device)", err
