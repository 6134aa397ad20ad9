"""``agentbot ask`` in a real subprocess against the scripted server: what a terminal user sees."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.warm_agentbot import agentbot_process

AGENTBOT = str(Path(sys.executable).with_name("agentbot"))


async def run_cli(
    llm: FakeLLM, *args: str, tmp_path: Path, key: str = "sk-cli-test-key-0001"
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENT_"))}
    env |= {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": key,
        "LOG_FORMAT": "json",
        "NO_COLOR": "1",
        "DATA_DIR": str(tmp_path),
        "COLUMNS": "200",
    }
    code, out, err = await agentbot_process("ask", *args, cwd=tmp_path, env=env)
    return code, out.decode(), err.decode()


async def test_cli_ask_runs_a_multi_step_tool_session(llm: FakeLLM, tmp_path: Path) -> None:
    answer = "# Result\n\n**6 × 7 = 42**, and it is now 12:00 somewhere.\n"
    llm.script(
        tool_call("calculator", {"expression": "6*7"}),
        tool_call("current_time", {"timezone": "Asia/Tokyo"}),
        text(answer, prompt_tokens=500, completion_tokens=50),
    )
    code, out, err = await run_cli(llm, "what is 6*7 and the time in Tokyo?", tmp_path=tmp_path)
    assert code == 0, err
    assert out == answer  # printed verbatim, no extra decoration
    assert "step 1" in err and "step 3" in err
    assert "calculator" in err and 'expression="6*7"' in err and "42" in err
    assert "current_time" in err
    assert "prompt" in err and "$0.0" in err  # tokens and cost
    assert llm.auth_headers[0] == "Bearer sk-cli-test-key-0001"


async def test_cli_ask_reports_a_bad_key_without_printing_it(llm: FakeLLM, tmp_path: Path) -> None:
    llm.api_key = "the-right-key-123456"
    code, out, err = await run_cli(llm, "hello", tmp_path=tmp_path, key="sk-wrong-key-987654321")
    assert code == 1
    assert "rejected the API key" in err and "OPENAI_API_KEY" in err
    assert "sk-wrong-key-987654321" not in out + err
    assert out == ""  # the error is never the answer `$(agentbot ask ...)` captures
    assert err.count("rejected the API key") == 1  # said once: no log line repeating the progress line


async def test_cli_ask_says_each_retry_once_and_prints_its_version(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply(status=503, error_body={"error": {"message": "overloaded"}}), text("Fine now."))
    code, out, err = await run_cli(llm, "hello", tmp_path=tmp_path)
    assert (code, out) == (0, "Fine now.\n")
    assert err.count("retrying") == 1 and err.count("overloaded") == 1, err
    assert '"level"' not in err  # no JSON log lines beside the progress lines
    proc = await asyncio.create_subprocess_exec(AGENTBOT, "--version", stdout=asyncio.subprocess.PIPE)
    version, _ = await proc.communicate()
    assert proc.returncode == 0 and version.decode().startswith("agentbot 0.")
    code, raw, _ = await agentbot_process("ask", "--help", cwd=tmp_path, env=dict(os.environ))
    assert code == 0
    help_text = " ".join(raw.decode().replace("│", " ").split())  # rich wraps and boxes the help
    assert "defaults to 12" in help_text and "3 `ask` stopped at the step limit" in help_text, help_text


async def test_cli_ask_max_steps(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(*[tool_call("calculator", {"expression": "1+1"}) for _ in range(3)])
    code, out, _err = await run_cli(llm, "loop", "--max-steps", "2", tmp_path=tmp_path)
    assert code == 3  # documented: stopped by the step limit, so a script can tell
    assert out.startswith("Stopped after 2 steps without a final answer.")
    assert len(llm.requests) == 2


async def _run_cmd(*args: str, env_extra: dict[str, str], cwd: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_", "AGENT_"))}
    env |= {"DATA_DIR": str(cwd), "NO_COLOR": "1"} | env_extra
    code, out, _ = await agentbot_process(*args, cwd=cwd, env=env, stderr_to_stdout=True)
    return code, out.decode()


async def test_cli_run_refuses_to_start_without_a_token_or_a_model(tmp_path: Path) -> None:
    code, out = await _run_cmd("run", env_extra={}, cwd=tmp_path)
    assert code != 0 and "OPENAI_API_KEY is not set" in out
    code, out = await _run_cmd("run", env_extra={"OPENAI_API_KEY": "sk-some-key-0001"}, cwd=tmp_path)
    assert code != 0 and "DISCORD_TOKEN is not set" in out
    code, out = await _run_cmd(
        "run", env_extra={"OPENAI_API_KEY": "sk-some-key-0001", "BOT_WRITES_PER_5S": "9"}, cwd=tmp_path
    )
    assert code != 0 and "BOT_WRITES_PER_5S='9'" in out and "less than or equal to 5" in out
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv-0001\nQUOTA_TOKENS_PER_DAY=lots\n")
    code, out = await _run_cmd(
        "run", env_extra={}, cwd=tmp_path
    )  # .env is read, and every module's keys checked
    assert code != 0 and "QUOTA_TOKENS_PER_DAY" in out and "'lots'" in out


async def test_cli_ask_counts_tokens_a_server_does_not_report(llm: FakeLLM, tmp_path: Path) -> None:
    # llama-cpp-python's server sends no usage in streams: the run is counted locally and says so,
    # instead of "0 prompt + 0 completion tokens" and a cost of $0 for a model with a known price.
    llm.report_usage = False
    llm.script(tool_call("calculator", {"expression": "6*7"}), text("It is 42. " * 20))
    code, _out, err = await run_cli(llm, "what is 6*7?", tmp_path=tmp_path)
    assert code == 0, err
    summary = next(x for x in err.splitlines() if "completion tokens" in x)
    found = re.search(r"([\d,]+) prompt \+ ([\d,]+) completion tokens", summary)
    assert found, summary
    prompt, completion = (int(found[i].replace(",", "")) for i in (1, 2))
    assert summary.lstrip().startswith("2 steps · estimated: ") and prompt > 100 and completion >= 50
    assert "cost estimated: $0.0" in summary and "$0.0000" not in summary
