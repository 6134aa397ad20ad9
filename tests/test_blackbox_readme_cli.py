"""README's command lines run as written, through the installed ``agentbot`` in a temp working directory
with only the environment the operator set (tests.test_blackbox_operator.agentbot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_blackbox_operator import agentbot

BAD = {"AGENT_MAX_STEPS": "0", "MEMORY_ENABLED": "false"}


@pytest.mark.parametrize(
    "args", [["sync"], ["backup", "bk"], ["restore", "bk"], ["migrate-store", "--to", "postgresql://u@h/db"]]
)
async def test_a_bad_setting_stops_every_command_in_one_line_with_exit_2(
    args: list[str], tmp_path: Path
) -> None:
    # README "Mistakes are one line": one line naming the setting and what is allowed, exit code 2.
    code, out, err = await agentbot(tmp_path, *args, env=BAD)
    assert code == 2 and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1 and "AGENT_MAX_STEPS" in err and "1" in err


async def test_doctor_reports_a_bad_setting_as_its_failing_check_and_exits_1(tmp_path: Path) -> None:
    code, out, err = await agentbot(tmp_path, "doctor", env=BAD)
    assert code == 1, (code, out, err)
    assert any(line.startswith("FAIL settings") and "AGENT_MAX_STEPS" in line for line in out.splitlines())


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["ask", "hi", "--max-steps", "0"], "--max-steps"),  # README: --max-steps 1-100
        (["ask", "hi", "--max-steps", "101"], "--max-steps"),
        (["ask", "hi", "--max-steps", "many"], "--max-steps"),
        (["ask"], "TASK"),
        (["ask", "hi", "--steps", "3"], "--steps"),
        (["restore"], "SRC"),
    ],
)
async def test_a_wrong_option_is_one_line_naming_it_with_exit_2(
    args: list[str], named: str, tmp_path: Path
) -> None:
    # README, `agentbot ask` exit codes: "2 a setting or option is wrong (one line naming it)".
    code, out, err = await agentbot(tmp_path, *args, env={"MEMORY_ENABLED": "false"})
    assert code == 2 and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1 and named.lower() in err.lower(), err


async def test_no_command_still_shows_the_help(tmp_path: Path) -> None:
    code, out, err = await agentbot(tmp_path)
    assert code == 2 and "Usage" in out + err and "ask" in out + err and "migrate-store" in out + err
