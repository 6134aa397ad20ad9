"""`agentbot run` as an operator scaling out starts it (README: Scaling): mistakes in the scaled
settings end start-up with one line naming the setting, never a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from agent.logs import redact
from bot.store.pg import _redact
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.llm_server import FakeLLM
from tests.test_blackbox_operator import agentbot
from tests.test_doctor import AGENTBOT, agentbot_run


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_with_a_wrong_database_url_says_so_in_one_line(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    discord = {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "ROUTER_CLASSIFIER": "heuristic",
    }
    url = f"postgresql://agentbot:s3cret@127.0.0.1:{_closed_port()}/agentbot"
    code, out = await agentbot_run(llm, tmp_path, DATABASE_URL=url, **discord)
    assert code == 1, out
    assert "Traceback" not in out and "s3cret" not in out, out
    assert out.strip().splitlines()[-1].startswith("agentbot: DATABASE_URL: cannot connect to postgresql://")


async def test_a_shard_process_with_memory_in_its_own_data_dir_is_refused(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """README: every shard process uses the same Chroma server. With the embedded store each process kept
    its servers' memory in its own DATA_DIR, and a re-shard or a merge of processes lost it silently."""
    shard = {"DISCORD_TOKEN": "some-token-123456", "DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "1"}
    url = f"postgresql://agentbot@127.0.0.1:{_closed_port()}/agentbot"
    code, out = await agentbot_run(llm, tmp_path, DATABASE_URL=url, MEMORY_ENABLED="true", **shard)
    assert code == 2 and "Traceback" not in out, out
    assert out.strip().splitlines()[-1] == (
        "agentbot: DISCORD_SHARD_IDS names only some shards, so memory must live where every process reads "
        "it: set CHROMA_HOST to the Chroma server they share, or MEMORY_ENABLED=false (README: Scaling)"
    )


async def test_a_shard_id_listed_twice_is_named_instead_of_never_getting_ready(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """``DISCORD_SHARD_IDS=0,0,1`` (a copy-paste slip): the process connected and never became ready,
    its health check never passed, and nothing said why."""
    shard = {"DISCORD_TOKEN": "some-token-123456", "DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "0,0,1"}
    code, out = await agentbot_run(llm, tmp_path, **shard)
    assert code == 2 and "Traceback" not in out, out
    assert out.strip().splitlines()[-1] == (
        "agentbot: DISCORD_SHARD_IDS: [0] listed more than once; give each shard id once"
    )


async def test_a_database_password_with_a_raw_at_sign_is_named_and_never_printed(tmp_path: Path) -> None:
    """A password with an unencoded ``@`` (``Tr0ub@dor``): start-up said "cannot connect to
    postgresql://agentbot:***@dor@127.0.0.1..." (the rest of the password, on the terminal and in logs),
    and blamed DNS."""
    url = "postgresql://agentbot:Tr0ub@dor99@127.0.0.1:5432/agentbot"
    code, out, err = await agentbot(
        tmp_path,
        "run",
        env={"DATABASE_URL": url, "DISCORD_TOKEN": "x-123456", "OPENAI_API_KEY": "sk-x-123456"},
    )
    assert code == 2 and out == "", out
    assert err.strip() == (
        "agentbot: DATABASE_URL=(hidden): its user or password holds an @ that is not percent-encoded: "
        "write @ as %40 (fix it in .env or the environment; see .env.example)"
    )
    # Wherever else such a URL is quoted (a log line, a store error), it is masked up to its last @.
    for hidden in (redact(f"failed: {url}: gaierror"), _redact(url)):
        assert "dor99" not in hidden and "Tr0ub" not in hidden and "@127.0.0.1:5432/agentbot" in hidden


async def test_discord_requiring_more_shards_is_one_line_naming_the_setting(
    fake: FakeDiscord, llm: FakeLLM, tmp_path: Path
) -> None:
    """A bot that grew past what its shard count carries: Discord closes the gateway with 4011
    ("Sharding required"), which discord.py does not retry; `agentbot run` printed a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_"))}
    env |= {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-shards-4011-0001",
        "DATA_DIR": str(tmp_path),
        "MEMORY_ENABLED": "false",
        "PYTHON_SANDBOX": "off",
        "ROUTER_CLASSIFIER": "heuristic",
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
    }
    proc = await asyncio.create_subprocess_exec(
        AGENTBOT,
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await fake.wait_for(lambda: fake.gateway.connected, within=60, what="the bot's gateway session")
        await fake.gateway.drop(code=4011)
        talk = asyncio.ensure_future(proc.communicate())
        # Discord refuses every IDENTIFY with 4011; the fake drops once. A close read without its code
        # (the fake's socket shut under load before the frame was read) is retried by discord.py as any
        # network drop, and its new connection must be refused again, as Discord would.
        for _ in range(3):
            done, _ = await asyncio.wait({talk}, timeout=15)
            if done or not fake.gateway.connected:
                break
            await fake.gateway.drop(code=4011)
        out = (await asyncio.wait_for(talk, 30))[0].decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert out.strip().splitlines()[-1] == (
        "agentbot: Discord requires this bot to shard (4011 Sharding required): set DISCORD_SHARD_COUNT, "
        "about one shard per 1,000 servers, in every process (README: Scaling)"
    )
