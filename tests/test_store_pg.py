"""PostgreSQL-only behaviour of the store: SQL translation, versioned migrations, several processes
sharing one database. (Everything else is the contract suite: the store tests run on both backends.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import pytest

from agent.events import Usage
from bot.limits import Limits
from bot.store import DatabaseTooNew, QuotaStore, StoreError, StoreUnavailable
from bot.store.migrations import MIGRATIONS
from bot.store.pg import PgDatabase, reachable, translate
from bot.store.pg_schema import PG_MIGRATIONS
from tests.fakes.postgres import PostgresServer, mark_owner, sweep_stale

ROOT = Path(__file__).resolve().parents[1]


def test_pg_both_backends_have_the_same_schema_versions() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))  # 1..N, in order
    assert [(m.version, m.description) for m in PG_MIGRATIONS] == [
        (m.version, m.description) for m in MIGRATIONS
    ]


async def test_pg_translated_schema_has_sqlites_columns(postgres: PostgresServer, tmp_path: Path) -> None:
    """PostgreSQL's migrations are SQLite's translated (``pg_schema.to_postgres``): every table has the
    same columns in the same order (migrate-store's COPY relies on it) and the same NOT NULLs, in types
    wide enough for Discord ids, with identity ids exactly where the store reads ``lastrowid``."""
    from bot.store import Database
    from bot.store.pg_schema import IDENTITY_TABLES

    wide = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text"}
    want: dict[str, list[tuple[str, str, bool]]] = {}
    async with await Database.open(tmp_path / "s.sqlite3") as lite:
        for (table,) in await lite.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for c in await lite.fetchall(f"PRAGMA table_info({table})"):
                want.setdefault(table, []).append((c["name"], wide[c["type"]], not (c["notnull"] or c["pk"])))
    url = await postgres.fresh_database()
    await (await PgDatabase.open(url)).close()
    conn = await asyncpg.connect(url)
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable = 'YES', is_identity = 'YES'"
        " FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_version'"
        " ORDER BY table_name, ordinal_position"
    )
    await conn.close()
    got: dict[str, list[tuple[str, str, bool]]] = {}
    for r in rows:
        got.setdefault(r[0], []).append((r[1], r[2], r[3]))
    assert got == want
    assert {r[0] for r in rows if r[4]} == set(IDENTITY_TABLES)


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = $1 AND b = $2"),
        ("SELECT :g, :u WHERE x = :g", "SELECT $1, $2 WHERE x = $1"),
        ("SELECT 'a?b :c' || ? FROM t", "SELECT 'a?b :c' || $1 FROM t"),
        ("SELECT 'it''s ?', ?::text", "SELECT 'it''s ?', $1::text"),
        ("INSERT INTO turns (a) VALUES (?)", "INSERT INTO turns (a) VALUES ($1) RETURNING id"),
    ],
)
def test_pg_translation(sqlite: str, postgres: str) -> None:
    assert translate(sqlite).sql == postgres


def test_pg_translation_refuses_mixed_placeholders() -> None:
    with pytest.raises(ValueError, match="mixes"):
        translate("SELECT ? WHERE a = :a")


async def test_pg_unreachable_names_the_setting_and_hides_the_password() -> None:
    with pytest.raises(StoreError) as e:
        await PgDatabase.open("postgresql://bot:hunter2@127.0.0.1:9/agentbot")
    assert "DATABASE_URL" in str(e.value) and "hunter2" not in str(e.value) and "bot:***@" in str(e.value)


async def test_pg_a_newer_schema_is_refused_unchanged(postgres: PostgresServer) -> None:
    url = await postgres.fresh_database()
    await (await PgDatabase.open(url)).close()
    conn = await asyncpg.connect(url)
    await conn.execute("INSERT INTO schema_version VALUES (99)")
    await conn.close()
    with pytest.raises(DatabaseTooNew, match="version 99"):
        await PgDatabase.open(url)


async def test_pg_two_processes_migrate_once(postgres: PostgresServer) -> None:
    url = await postgres.fresh_database()
    dbs = await asyncio.gather(PgDatabase.open(url), PgDatabase.open(url))
    assert [d.schema_version for d in dbs] == [len(PG_MIGRATIONS)] * 2
    rows = await dbs[0].fetchall("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, len(PG_MIGRATIONS) + 1))
    for d in dbs:
        await d.close()


CHARGER = """
import asyncio, random, sys
from agent.budget import BudgetExceeded
from agent.events import Cost, Usage
from bot.limits import Limits
from bot.store import QuotaStore
from bot.store.pg import PgDatabase

async def main():
    db = await PgDatabase.open(sys.argv[1])
    store = QuotaStore(db, None, Limits(tokens_per_day=10_000))
    rng = random.Random(int(sys.argv[2]))
    held = refused = 0
    settled = 0

    async def charge(i):
        nonlocal held, refused, settled
        budget = store.budget(1, 7, (), f"p{sys.argv[2]}-{i % 5}")
        try:
            token = await budget.reserve("m", Usage(400, 100), None)
        except BudgetExceeded:
            refused += 1
            return
        held += 1
        await asyncio.sleep(rng.random() / 50)
        real = Usage(rng.randint(100, 400), rng.randint(0, 100))
        await budget.settle(token, "m", "openai", real, Cost(0.0))
        settled += real.total_tokens

    await asyncio.gather(*(charge(i) for i in range(25)))
    await store.flush()
    await db.close()
    print(held, refused, settled)

asyncio.run(main())
"""


async def test_pg_fifty_charges_from_two_processes_never_pass_the_limit(postgres: PostgresServer) -> None:
    url = await postgres.fresh_database()
    await (await PgDatabase.open(url)).close()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(CHARGER),
            url,
            str(seed),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for seed in (1, 2)
    ]
    outs = [(await p.communicate())[0].decode().split() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    held = sum(int(o[0]) for o in outs)
    refused = sum(int(o[1]) for o in outs)
    settled = sum(int(o[2]) for o in outs)
    assert held + refused == 50 and refused > 0
    db = await PgDatabase.open(url)
    try:
        ledger = await db.fetchone(
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0), COUNT(*) FROM usage_ledger"
        )
        daily = await db.fetchone("SELECT tokens FROM usage_daily WHERE guild_id = 1 AND user_id = 7")
        reserved = await db.fetchone("SELECT COUNT(*) FROM reservations")
    finally:
        await db.close()
    assert ledger[0] == settled == daily[0]  # nothing lost, counters equal the ledger
    assert ledger[1] == held and reserved[0] == 0
    assert settled <= 10_000  # every reservation was at most what it settled, so the limit held


async def migrate_store(url: str, tmp_path: Path, data: Path) -> tuple[int, str, str]:
    """``agentbot migrate-store --to url`` as an operator runs it: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("agentbot")),
        "migrate-store",
        "--to",
        url,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(data)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_pg_migrate_store_moves_everything_and_the_bot_carries_on(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    from agent.events import Cost, Usage
    from bot.limits import Limits
    from bot.store import Database, QuotaStore, SessionRecord, SessionStore

    data = tmp_path / "data"
    db = await Database.open(data / "agentbot.sqlite3")
    sessions = SessionStore(db)
    await sessions.create(
        SessionRecord(
            id="s1", guild_id=1, channel_id=10, thread_id=900, user_id=7, task="t", tier="medium", model="m"
        )
    )
    turn = await sessions.start_turn("s1", "t", 7)
    await sessions.append_messages("s1", [{"role": "user", "content": "héllo"}], turn_id=turn)
    await sessions.finish_turn(turn, "completed", {"text": "done"})
    running = await sessions.start_turn("s1", "more", 7)  # stopped mid-run: moved with its checkpoint
    await sessions.checkpoint(running, {"step": 1}, messages=[{"role": "user", "content": "more"}])
    quotas = QuotaStore(db, None, Limits(tokens_per_day=100_000))
    assert (await quotas.begin_session(1, 7, [], "s1")).allowed
    budget = quotas.budget(1, 7, (), "s1")
    for _ in range(3):
        token = await budget.reserve("m", Usage(500, 100), 0.01)
        await budget.settle(token, "m", "openai", Usage(400, 50, reasoning_tokens=20), Cost(0.004))
    await quotas.flush()
    before = await quotas.usage(1, 7)
    await db.close()

    url = await postgres.fresh_database()
    code, out, err = await migrate_store(url, tmp_path, data)
    assert code == 0, err
    assert "usage_ledger 3" in out and "sessions 1" in out

    pg = await PgDatabase.open(url)
    try:
        moved = SessionStore(pg)
        assert await moved.history("s1") == [{"role": "user", "content": "héllo"}]
        (resumable,) = await moved.running_turns()
        assert resumable.state == {"step": 1, "messages": [{"role": "user", "content": "more"}]}
        pg_quotas = QuotaStore(pg, None, Limits(tokens_per_day=100_000))
        after = await pg_quotas.usage(1, 7)
        assert after.item("tokens_per_day").used == before.item("tokens_per_day").used == 1350
        assert after.item("requests_per_day").used == 1
        assert await moved.start_turn("s1", "again", 7) > running  # ids continue after the copied ones
        token = await pg_quotas.budget(1, 7, (), "s1").reserve("m", Usage(10, 10), 0.0)
        assert token > 3
    finally:
        await pg.close()

    # A second move into the same (now filled) database is refused in one line and changes nothing.
    code, _, err = await migrate_store(url, tmp_path, data)
    assert code == 1 and "moved there already" in err and "Traceback" not in err


async def test_pg_pooled_connections_from_before_a_restart_are_replaced_or_named_unavailable(
    postgres: PostgresServer,
) -> None:
    """Right after a PostgreSQL restart the pool's connections are dead (ConnectionDoesNotExistError,
    InternalClientError, ProtocolError); a member read "Something went wrong". A read, and a write whose
    BEGIN found the connection dead, now run again on a fresh connection; a charge (not safe twice) is
    the store being unavailable, which the bot words as such."""
    url = await postgres.fresh_database()
    db = await PgDatabase.open(url, min_size=2, max_size=2)
    store = QuotaStore(db, None, Limits(tokens_per_day=10_000))
    try:
        await store.budget(1, 7, (), "s").reserve("m", Usage(10, 10), None)
        await store.flush()
        # Restarted while the loop is busy (as when a restart is not yet noticed): the pooled one is dead.
        postgres.halt()
        postgres.resume()
        assert [tuple(r) for r in await db.fetchall("SELECT 1")] == [(1,)]
        postgres.halt()
        postgres.resume()
        await db.write("DELETE FROM reservations")
        postgres.halt()
        postgres.resume()
        with pytest.raises(StoreUnavailable):
            await store.budget(1, 7, (), "s").reserve("m", Usage(10, 10), None)
        for error in (asyncpg.InternalClientError("x"), asyncpg.ProtocolError("x")):
            with pytest.raises(StoreUnavailable), reachable():
                raise error
    finally:
        await db.close()


def test_a_killed_test_runs_clusters_are_swept_and_a_live_runs_are_kept(tmp_path: Path) -> None:
    """A run killed with kill -9 (a CI timeout) never ran its cleanup: its clusters stayed in /dev/shm,
    ~40 MB of memory each until a reboot. The next run removes those whose test process is gone, and
    leaves a live run's (another checkout's) and any it cannot judge."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead, live, unknown = (tmp_path / f"agentbot-pg-{n}" for n in ("dead", "live", "old"))
    for d in (dead, live, unknown):
        (d / "data").mkdir(parents=True)
    (dead / "owner.pid").write_text(gone.stdout.decode().strip())
    mark_owner(live)
    assert sweep_stale(str(tmp_path)) == 1
    assert not dead.exists() and live.exists() and unknown.exists()
