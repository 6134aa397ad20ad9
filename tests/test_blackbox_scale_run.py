"""`agentbot run` as an operator scaling out starts it (README: Scaling): mistakes in the scaled
settings end start-up with one line naming the setting, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.llm_server import FakeLLM
from tests.test_doctor import agentbot_run


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
