"""An operator deploying and scaling the bot for the first time, following README (Deploying, Scaling):
the commands as written, the scaled settings, ``agentbot migrate-store`` and ``doctor`` against a real
PostgreSQL set up a little differently from the test server's defaults. One throwaway PostgreSQL (the
worker's) for the file, each test a database of its own; commands run in-process (typer's runner), as
the process start is not what these tests are about.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from agent.config import ConfigError, load_agent_settings
from agent.events import usd_text
from bot.cli import app
from bot.config import BotSettings, load_bot_settings
from bot.doctor import run_doctor
from bot.limits import format_usd, nano_to_usd, usd_to_nano
from bot.services import Services, build_services
from bot.store import Database, StoreError
from bot.store.copy import copy_sqlite_to_postgres
from bot.store.pg import PgDatabase
from bot.store.shard_claim import ShardClaim
from tests.fakes.llm_server import FakeLLM
from tests.fakes.postgres import PostgresServer


class PgLike:
    """A store's database as the settings cache sees one on PostgreSQL (settings shared between processes)."""

    backend = "postgresql"


async def _foreign_database(postgres: PostgresServer, role: str) -> str:
    """A database owned by the server's admin, and a role of its own allowed to connect to it: on
    PostgreSQL 15 that role may not create tables in schema public (the default since 15)."""
    conn = await asyncpg.connect(postgres.url())
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        await conn.execute(f"CREATE DATABASE {role}_db")
    finally:
        await conn.close()
    return postgres.url(f"{role}_db").replace(f"{postgres.user}@", f"{role}@")


async def _sqlite_store(data: Path) -> None:
    async with await Database.open(data / "agentbot.sqlite3") as lite:
        await lite.write(
            "INSERT INTO guild_settings (guild_id, key, value, updated_at) VALUES (1, 'max_steps', '4', 0)"
        )


def test_migrate_store_into_a_database_its_user_may_not_write_names_the_to_option(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``migrate-store --to URL`` into a database the URL's user may not create tables in said "DATABASE_URL's
    user may not create tables there" while DATABASE_URL was not set at all: the operator was sent to fix
    a setting they never gave. The fix names ``--to``, where the URL came from."""
    data = tmp_path / "data"

    async def prepare() -> str:
        await _sqlite_store(data)
        return await _foreign_database(postgres, f"mover_{uuid.uuid4().hex[:8]}")

    url = asyncio.run(prepare())
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("MEMORY_ENABLED", "false")
    r = CliRunner().invoke(app, ["migrate-store", "--to", url])
    assert r.exit_code == 1, r.output
    said = r.output.strip()
    assert "permission denied for schema public" in said and "\n" not in said, said
    assert "--to's user may not create tables there" in said, said
    assert "DATABASE_URL" not in said, said


@pytest.mark.parametrize("ids", ["0 1", "0-1", "0;1"])
def test_shard_ids_written_another_way_are_refused_with_how_to_write_them(
    ids: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DISCORD_SHARD_IDS=0 1`` (spaces, as a shell list) or ``0-1`` (a range) stopped start-up with
    Python's words: "invalid literal for int() with base 10: '0 1'". It says how to write them now."""
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "2")
    monkeypatch.setenv("DISCORD_SHARD_IDS", ids)
    with pytest.raises(ConfigError) as refused:
        load_bot_settings()
    said = str(refused.value)
    assert said.startswith(f"DISCORD_SHARD_IDS={ids!r}: "), said
    assert "shard ids are whole numbers separated by commas, e.g. 0,1" in said, said
    assert "int()" not in said and "literal" not in said, said


def test_shard_ids_in_quotes_as_docker_env_file_passes_them_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """``DISCORD_SHARD_IDS='1'`` in .env reaches the process with its quotes under ``docker run --env-file``
    (make run and compose drop them, as for every other setting): it was refused."""
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://agentbot@db.example/agentbot")
    for written, ids in (("'1'", [1]), ("'0,1'", [0, 1]), (' "1" ', [1])):
        monkeypatch.setenv("DISCORD_SHARD_IDS", written)
        assert load_bot_settings().shard_ids == ids, written


async def test_a_search_path_naming_a_schema_that_does_not_exist_says_to_create_it(
    postgres: PostgresServer,
) -> None:
    """README: the URL takes ``options=-c search_path=x``. With no schema ``x`` in the database, start-up
    (and doctor) said "Upgrading ... failed: no schema has been selected to create in" and nothing more;
    it now names the schema to create."""
    url = await postgres.fresh_database("path")
    with pytest.raises(StoreError) as refused:
        await PgDatabase.open(f"{url}?options=-c%20search_path%3Dagentbot_x")
    said = str(refused.value)
    assert "no schema has been selected to create in" in said and "\n" not in said, said
    assert "DATABASE_URL's search_path names a schema this database does not have" in said, said
    assert "CREATE SCHEMA" in said, said


def test_migrate_store_refuses_a_database_a_running_bot_already_serves(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard processes started before the move (``docker compose --profile scaled up -d`` starts them all)
    run on the target database. migrate-store copied the old store in under them ("moved ..."), into a
    database live processes were writing to with their own ids, cached settings and charges; README says to
    stop the bot first, and the move only checked the SQLite side. It refuses now, and moves once they stop."""
    data = tmp_path / "data"

    async def prepare() -> str:
        await _sqlite_store(data)
        return await postgres.fresh_database("live")

    url = asyncio.run(prepare())
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("MEMORY_ENABLED", "false")

    async def while_a_shard_runs() -> object:
        claim = await ShardClaim.take(url, 2, [1])  # what `agentbot run` holds for as long as it runs
        try:
            return await asyncio.to_thread(CliRunner().invoke, app, ["migrate-store", "--to", url])
        finally:
            await claim.close()

    r = asyncio.run(while_a_shard_runs())
    assert r.exit_code == 1, r.output
    said = r.output.strip()
    assert "\n" not in said and "Traceback" not in said, said
    assert said.endswith(
        "is in use by a running agentbot (agentbot run): stop every bot process using it, then move the store"
    ), said

    async def rows() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM guild_settings"))
        finally:
            await conn.close()

    assert asyncio.run(rows()) == 0
    moved = CliRunner().invoke(app, ["migrate-store", "--to", url])
    assert moved.exit_code == 0 and "moved guild_settings 1" in moved.stdout, moved.output


async def test_a_bot_switched_to_postgresql_before_its_store_was_moved_refuses_to_start_empty(
    postgres: PostgresServer, llm: FakeLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: move the store, *then* set DATABASE_URL. An operator who set DATABASE_URL first got a bot
    that started on the empty database as if new: every server's /config settings, the day's and month's
    usage (limits started again from 0), the history and the interrupted runs silently gone, with the
    SQLite store still sitting in DATA_DIR. Start-up now refuses in one line naming migrate-store; once
    moved, the same start-up works (the SQLite file left behind is no reason to refuse)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deploy13-key-0001")
    data = tmp_path / "data"
    await _sqlite_store(data)
    url = await postgres.fresh_database("unmoved")

    async def start() -> Services:
        return await build_services(
            load_agent_settings(DATA_DIR=str(data), ROUTER_CLASSIFIER="heuristic", PYTHON_SANDBOX="off"),
            load_bot_settings(MEMORY_ENABLED=False, DATABASE_URL=url),
        )

    with pytest.raises(ConfigError) as refused:
        await start()
    said = str(refused.value)
    assert said.startswith("DATABASE_URL: the PostgreSQL database is empty, but ") and "\n" not in said, said
    assert f"{data / 'agentbot.sqlite3'} holds this bot's store" in said, said
    assert "agentbot migrate-store" in said, said
    # doctor, the operator's check before starting, fails the database the same way
    for k, v in {"DATA_DIR": str(data), "DATABASE_URL": url, "MEMORY_ENABLED": "false"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
    monkeypatch.setenv("DISCORD_API_BASE_URL", "http://127.0.0.1:9/api/v10")
    checks = {c.name: c for c in await run_doctor()}
    assert not checks["database"].ok and checks["database"].detail == said, checks["database"]

    await copy_sqlite_to_postgres(data / "agentbot.sqlite3", url)
    sv = await start()
    try:
        assert (await sv.guild_settings.get(1)).max_steps == 4  # the moved server's setting
    finally:
        await sv.close()


def test_database_url_as_docker_env_file_passes_it_is_read_as_every_other_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README runs the image with ``docker run --env-file .env``, which keeps what python-dotenv (``make
    run``) and compose drop: the quotes around a value and a ``# comment`` after it. Every other setting
    is read through both; DATABASE_URL was refused as "must be a postgresql:// URL" (its value hidden, so
    the quotes could not be seen), and a comment became part of the database's name ('database "agentbot  "
    does not exist')."""
    url = "postgresql://agentbot:s3cret@db.example:5432/agentbot"
    for written in (f'"{url}"', f"'{url}'", f" {url} "):
        monkeypatch.setenv("DATABASE_URL", written)
        settings = load_bot_settings()
        assert settings.database_url is not None
        assert settings.database_url.get_secret_value() == url
    monkeypatch.setenv("DATABASE_URL", f"{url}  # the shared database")
    with pytest.raises(ConfigError) as refused:
        load_bot_settings()
    said = str(refused.value)
    assert said.startswith("DATABASE_URL=(hidden): ") and "put the comment on a line of its own" in said, said
    assert "s3cret" not in said and "\n" not in said, said
    # the form README shows for a schema, a space inside its options, is not a comment
    monkeypatch.setenv("DATABASE_URL", f"{url}?options=-c search_path=agentbot")
    assert load_bot_settings().database_url is not None


def test_router_pairs_in_quotes_as_docker_env_file_passes_them_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ROUTER_STEP_LIMITS='simple=4'`` (or ROUTER_RESEARCH_TIERS) under ``docker run --env-file`` was
    refused as not tier=steps pairs: the quotes every other setting drops were read as part of the value."""
    monkeypatch.setenv("ROUTER_STEP_LIMITS", "'simple=4,medium=8'")
    assert load_agent_settings().router_step_limits == {"simple": 4, "medium": 8}


def test_a_runs_footer_and_usage_show_the_same_dollars_for_the_same_calls() -> None:
    """Seen in a run resumed after a restart (two gpt-4o-mini calls, $0.000198 and $0.000237): the thread's
    footer said $0.00043 and /usage, right after, "Spending this month: $0.00044". The footer adds floats
    (0.00043499999999999995) where the store adds nano-dollars (435,000), so a total on a rounding edge
    came out a digit apart; both now round from the store's unit."""
    steps = (0.000198, 0.000237)
    footer = usd_text(sum(steps))
    usage = format_usd(nano_to_usd(sum(usd_to_nano(s) for s in steps)))
    assert footer == usage == "$0.00044"


def test_docker_and_compose_give_a_stop_time_for_an_outage() -> None:
    """SIGTERM while PostgreSQL was down and a turn ran (a managed server's restart, a network cut): the bot
    took 45 s to exit (measured with a real `agentbot run`: the turn's pause waited BOT_SHUTDOWN_GRACE_SECONDS,
    its saves the runner's 15 s, the queued charges CLOSING_GIVE_UP), and compose's 30 s stop grace period
    (Docker's default, 10 s) killed it before it logged the charges it could not write. Every bot service
    and the documented `docker run` now give it that worst case."""
    from bot.app import HANDLERS_GRACE
    from bot.store.ledger import CLOSING_GIVE_UP
    from tests.test_blackbox_readme_deploy import COMPOSE, documented_docker_run

    worst = BotSettings.model_fields["shutdown_grace"].default + 15 + HANDLERS_GRACE + CLOSING_GIVE_UP
    bots = {n: s for n, s in COMPOSE["services"].items() if s.get("image", "").startswith("agentbot")}
    assert sorted(bots) == ["bot", "shard0", "shard1"]
    for name, service in bots.items():
        assert float(service["stop_grace_period"].removesuffix("s")) >= worst, name
    args = documented_docker_run()
    assert float(args[args.index("--stop-timeout") + 1]) >= worst, args


async def test_the_settings_listener_says_an_outage_once_a_minute_not_every_retry() -> None:
    """While PostgreSQL was down (a restart, a managed server's maintenance), each shard process logged
    "settings_listener_failed" at every retry, every 2 s: 17 lines in the 45 s a stop took during an outage
    (measured), 150 in five minutes, burying the lines that said what happened. The first failure is
    said at once, then once a minute with how many retries failed since."""
    import structlog

    from bot.store.guild_settings import GuildSettingsStore
    from bot.store.settings_schema import SettingsSchema
    from bot.store.settings_sync import SettingsListener

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once the socket is closed
    store = GuildSettingsStore(PgLike(), SettingsSchema(known_models=(), known_tools=()))
    listener = SettingsListener(f"postgresql://agentbot@127.0.0.1:{closed}/agentbot", store, retry=0.01)
    with structlog.testing.capture_logs() as logs:
        await listener.start(within=0)
        try:
            for _ in range(2000):
                if listener.failures >= 30:
                    break
                await asyncio.sleep(0.01)
        finally:
            await listener.close()
    said = [e for e in logs if e["event"] == "settings_listener_failed"]
    assert listener.failures >= 30 and len(said) == 1, (listener.failures, said)
    assert "ConnectionRefusedError" in said[0]["error"], said


def test_migrate_store_run_again_says_the_store_is_there_already(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move repeated (a retried script, an operator unsure the first worked) said "the PostgreSQL database
    already holds sessions rows: migrate into an empty database", an invitation to empty the database the
    bot now writes to. The second run says the store was moved there already, and copies nothing."""
    data = tmp_path / "data"

    async def prepare() -> str:
        async with await Database.open(data / "agentbot.sqlite3") as lite:
            await lite.write(
                "INSERT INTO sessions (id, guild_id, channel_id, user_id, task, tier, model, status, created_at,"
                " updated_at) VALUES ('s1', 1, 2, 3, 'a task', 'simple', 'm', 'done', 0, 0)"
            )
        return await postgres.fresh_database("twice")

    url = asyncio.run(prepare())
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("MEMORY_ENABLED", "false")
    first = CliRunner().invoke(app, ["migrate-store", "--to", url])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, ["migrate-store", "--to", url])
    assert again.exit_code == 1, again.output
    said = again.output.strip()
    assert "\n" not in said and "empty database" not in said, said
    assert said.endswith(
        "this store was moved there already (its sessions are in that database); nothing was copied: "
        "set DATABASE_URL to it and start the bot"
    ), said


def test_backup_onto_a_file_says_it_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``agentbot backup /data/backups/latest`` where that name is a file (an empty one from ``touch``, a
    stale symlink target): "already exists and is not empty: give a new directory" of an empty file."""
    data = tmp_path / "data"
    asyncio.run(_sqlite_store(data))
    (target := tmp_path / "latest").touch()
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("MEMORY_ENABLED", "false")
    r = CliRunner().invoke(app, ["backup", str(target)])
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"agentbot: {target} is a file, not a directory: give a new directory", (
        r.output
    )
