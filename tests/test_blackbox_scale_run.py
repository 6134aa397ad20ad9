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
