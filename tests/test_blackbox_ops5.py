"""An operator installing agentbot on a real machine (fifth round), driven through the installed ``agentbot``
command and its settings: store URLs, the MCP servers file, backups. Each test failed before the fix its
commit names."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError
from bot.config import load_bot_settings
from bot.store.db import Database
from tests.test_blackbox_ops4 import _agentbot


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "postgresql://agentbot:pw@127.0.0.1:99999/agentbot",
            "its port '99999' is not a number from 1 to 65535",
        ),
        ("postgresql://agentbot:pw@127.0.0.1:5432x/agentbot", "its port '5432x'"),
        ("postgresql://agentbot:pw@[::1/agentbot", "not an IPv6 address in brackets"),
        ("postgresql://agentbot:pw@127.0.0.1/agentbot?sslmode=on", "sslmode=on is not one of"),
        # `openssl rand -base64` passwords hold / and +: the / ended the host, which became "agentbot:ab"
        ("postgresql://agentbot:ab/cd@127.0.0.1:5432/agentbot", "write / as %2F"),
    ],
)
def test_a_database_url_asyncpg_cannot_use_is_named_as_the_setting(
    url: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # doctor said "FAIL database: connect(): port must be 0-65535." (no setting named) and the bot
    # started, reached Discord, then failed opening the store.
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError) as refused:
        load_bot_settings()
    assert "DATABASE_URL" in str(refused.value) and said in str(refused.value), refused.value
    assert "pw" not in str(refused.value).replace("postgresql", "")  # the URL (its password) is not shown


async def test_migrate_store_to_a_url_asyncpg_cannot_use_is_one_line_naming_to(tmp_path: Path) -> None:
    # A port mistyped in --to: a 140-line traceback box ending in "OverflowError: connect(): port must be
    # 0-65535." (a non-number port: "ValueError: invalid literal for int()"), exit 1.
    await (await Database.open(tmp_path / "agentbot.sqlite3")).close()
    url = "postgresql://agentbot:pw@127.0.0.1:99999/agentbot"
    code, out, err = await _agentbot(tmp_path, "migrate-store", "--to", url, env={"MEMORY_ENABLED": "false"})
    assert code == 2 and out == "" and "Traceback" not in err, err[-1500:]
    assert err.strip().splitlines() == [
        "agentbot: --to: its port '99999' is not a number from 1 to 65535 (PostgreSQL's is 5432)"
    ], err
