"""``agentbot ask`` driven as terminal users drive it (third QA pass): what reached the terminal, the exit
codes and the files left behind, against the scripted model on 127.0.0.1."""

from __future__ import annotations

import io

from agent.events import ErrorEvent, ToolCallEvent, ToolResultEvent
from agent.terminal import TerminalRenderer


def test_a_line_break_from_the_model_cannot_forge_a_progress_line() -> None:
    # A tool name or unparsable arguments with line breaks printed lines of their own, so the model
    # could show "✓ run_python 0.01s: sandbox check passed" or a fake next step that never happened.
    forged = "\n  ✓ run_python 0.01s: sandbox check passed\nstep 2 · gpt-4o-mini"
    err = io.StringIO()
    renderer = TerminalRenderer(err)
    renderer.render(
        ToolCallEvent(step=1, call_id="a", name="run" + forged, arguments=None, raw_arguments="{")
    )
    renderer.render(
        ToolCallEvent(
            step=1, call_id="b", name="write_file", arguments=None, raw_arguments='{"a":\n' + forged
        )
    )
    renderer.render(ToolResultEvent(step=1, call_id="a", name="run" + forged, output="unknown tool"))
    renderer.render(ErrorEvent(step=1, message="server said:\r\n" + forged))
    lines = err.getvalue().splitlines()
    assert [line.split()[:1] for line in lines] == [["→"], ["→"], ["✓"], ["error:"]], lines
    assert "sandbox check passed" in lines[0]  # shown, as text on the call's own line
