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
