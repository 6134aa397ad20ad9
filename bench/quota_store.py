"""Quota store throughput and latency: reserve-and-settle ops/s at 1, 10 and 100 concurrent sessions, and
p99 latency of a pre-session quota check (idle and under the 100-session load).

Baseline, measured in the same run on the same kind of file: a bare aiosqlite ``BEGIN IMMEDIATE; INSERT;
DELETE; COMMIT`` under one asyncio lock, i.e. the cheapest write-then-remove a careful hand-written store
would do per call. Ratios > 1 mean the quota store is faster than that baseline.

Targets (issue 4): >= 2,000 ops/s at 100 concurrent sessions; p99 check < 10 ms.
Run: ``.venv/bin/python bench/quota_store.py`` (about 10-20 s).

``--postgres``: the same store on PostgreSQL (a throwaway server started like the tests start it), 100
concurrent sessions split over two processes, each a separate ``PgDatabase`` pool, as two shard
processes of one bot would be. Baseline, same run: the SQLite store at 100 sessions in one process.
Targets (scale issue): >= 5,000 reserve+settle per second across both processes, p99 of each
reserve+settle pair and of a quota check < 10 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.events import Cost, Usage
from bot.limits import Limits
from bot.store import Database, QuotaStore

OPS = 4000
CONCURRENCY = (1, 10, 100)
USERS = 10
GUILD = 1


async def baseline(path: Path, concurrency: int, ops: int) -> float:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("CREATE TABLE IF NOT EXISTS r (id INTEGER PRIMARY KEY, u INTEGER, tokens INTEGER)")
    lock = asyncio.Lock()
    per = ops // concurrency

    async def worker(u: int) -> None:
        for _ in range(per):
            async with lock:
                await conn.execute("BEGIN IMMEDIATE")
                cur = await conn.execute("INSERT INTO r (u, tokens) VALUES (?, ?)", (u, 300))
                await conn.execute("DELETE FROM r WHERE id = ?", (cur.lastrowid,))
                await conn.execute("COMMIT")

    t = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - t
    await conn.close()
    return per * concurrency / elapsed


async def quota_run(store: QuotaStore, concurrency: int, ops: int) -> tuple[float, float]:
    """Returns (reserve+settle pairs per second, writes per commit)."""
    per = ops // concurrency
    writes0, commits0 = store.ledger.operations, store.ledger.batches

    async def worker(i: int) -> None:
        budget = store.budget(GUILD, 1000 + i % USERS, (), f"s{concurrency}-{i}")
        for _ in range(per):
            token = await budget.reserve("m", Usage(200, 100), 0.001)
            await budget.settle(token, "m", "bench", Usage(180, 90), Cost(0.0009))

    t = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    rate = per * concurrency / (time.perf_counter() - t)
    return rate, (store.ledger.operations - writes0) / max(1, store.ledger.batches - commits0)


async def check_latencies(store: QuotaStore, n: int, stop: asyncio.Event | None = None) -> list[float]:
    out: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        decision = await store.check(GUILD, 1000 + i % USERS, ())
        out.append(time.perf_counter() - t)
        assert decision.allowed, decision.message
        await asyncio.sleep(0)
        if stop is not None and stop.is_set():
            break
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base_path = Path(tmp) / "baseline.sqlite3"
        db = await Database.open(Path(tmp) / "quota.sqlite3")
        # limits on (every check runs) but big enough never to refuse: measure the work, not refusals
        big = Limits(10**9, 10**12, 10**9, 10**6, 10**9)
        store = QuotaStore(db, None, big)
        # the same statements written one by one (group commit off), on a file of its own
        db_single = await Database.open(Path(tmp) / "single.sqlite3")
        single = QuotaStore(db_single, None, big)
        single.ledger.max_batch = 1

        await baseline(base_path, 10, 500)  # warm-up
        await quota_run(store, 10, 500)
        await quota_run(single, 10, 500)

        rows = []
        for c in CONCURRENCY:
            b = await baseline(base_path, c, OPS)
            q, per_commit = await quota_run(store, c, OPS)
            one, _ = await quota_run(single, c, OPS)
            rows.append((c, b, q, per_commit, one))

        idle = await check_latencies(store, 2000)

        # check latency while 100 sessions reserve and settle
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                await quota_run(store, 100, 1000)

        loader = asyncio.create_task(load())
        await asyncio.sleep(0.05)
        busy = await check_latencies(store, 2000)
        stop.set()
        await loader

        (ledger,) = await db.fetchone("SELECT COUNT(*) FROM usage_ledger")  # type: ignore[misc]
        (used,) = await db.fetchone("SELECT SUM(tokens) FROM usage_daily")  # type: ignore[misc]
        (logged,) = await db.fetchone(  # type: ignore[misc]
            "SELECT SUM(prompt_tokens + completion_tokens) FROM usage_ledger"
        )
        await db.close()
        await db_single.close()

    print(f"quota store: reserve+settle ({OPS} ops per row, {USERS} users, one guild, WAL file)")
    print("baseline: bare aiosqlite BEGIN IMMEDIATE; INSERT; DELETE; COMMIT under one asyncio.Lock\n")
    print(
        f"{'sessions':>8} | {'baseline tx/s':>13} | {'quota ops/s':>11} | {'ratio':>5} | "
        f"{'writes/commit':>13} | {'one-by-one ops/s':>16}"
    )
    print("-" * 84)
    for c, b, q, per_commit, one in rows:
        print(f"{c:>8} | {b:>13,.0f} | {q:>11,.0f} | {q / b:>5.2f} | {per_commit:>13.1f} | {one:>16,.0f}")
    print("(one op = reserve + settle; one-by-one = the same statements with group commit off)\n")
    print(f"{'check latency':<22} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7}")
    print("-" * 52)
    for name, vals in (("idle", idle), ("under 100-session load", busy)):
        print(f"{name:<22} | {p(vals, 50) * 1e3:>7.3f} | {p(vals, 99) * 1e3:>7.3f} | {max(vals) * 1e3:>7.3f}")
    print()
    at100 = rows[-1][2]
    worst_p99 = max(p(idle, 99), p(busy, 99)) * 1e3
    print(f"settled calls: {ledger:,}; counters {'==' if used == logged else '!='} ledger ({used:,} tokens)")
    print(f"target >= 2,000 ops/s at 100 sessions: {at100:,.0f} -> {'PASS' if at100 >= 2000 else 'MISS'}")
    print(f"target p99 check < 10 ms: {worst_p99:.3f} ms -> {'PASS' if worst_p99 < 10 else 'MISS'}")


async def pg_worker(url: str, sessions: int, seconds: float) -> None:
    """One of the two processes: ``sessions`` concurrent sessions for ``seconds``; prints JSON."""
    import json

    from bot.store.pg import PgDatabase

    db = await PgDatabase.open(url, min_size=4, max_size=8)
    store = QuotaStore(db, None, Limits(10**9, 10**12, 10**9, 10**6, 10**9))
    pairs: list[float] = []
    checks: list[float] = []
    deadline = time.perf_counter() + seconds

    async def session(i: int) -> None:
        budget = store.budget(GUILD, 1000 + i % USERS, (), f"pg-{i}-{id(store)}")
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            token = await budget.reserve("m", Usage(200, 100), 0.001)
            await budget.settle(token, "m", "bench", Usage(180, 90), Cost(0.0009))
            pairs.append(time.perf_counter() - t)

    async def checker() -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await store.check(GUILD, 1000, ())
            checks.append(time.perf_counter() - t)
            await asyncio.sleep(0.001)

    await asyncio.gather(checker(), *(session(i) for i in range(sessions)))
    await store.flush()
    await db.close()
    print(json.dumps({"pairs": pairs, "checks": checks}))


async def main_postgres(seconds: float = 5.0) -> None:
    import json
    import uuid

    import asyncpg

    from tests.fakes.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(server.url())
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()
        url = server.url(name)
        from bot.store.pg import PgDatabase

        await (await PgDatabase.open(url)).close()  # migrate once before the clock starts
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--pg-worker",
                url,
                "50",
                str(seconds),
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(2)
        ]
        results = [json.loads((await p.communicate())[0]) for p in procs]
        db = await PgDatabase.open(url)
        (used,) = await db.fetchone("SELECT SUM(tokens) FROM usage_daily")  # type: ignore[misc]
        (logged,) = await db.fetchone("SELECT SUM(prompt_tokens + completion_tokens) FROM usage_ledger")  # type: ignore[misc]
        await db.close()
    finally:
        server.stop()
    with tempfile.TemporaryDirectory() as tmp:  # baseline: SQLite, one process, 100 sessions
        sdb = await Database.open(Path(tmp) / "quota.sqlite3")
        sqlite_rate, _ = await quota_run(
            QuotaStore(sdb, None, Limits(10**9, 10**12, 10**9, 10**6, 10**9)), 100, OPS
        )
        await sdb.close()
    pairs = [x for r in results for x in r["pairs"]]
    checks = [x for r in results for x in r["checks"]]
    rate = len(pairs) / seconds
    print(
        "quota store on PostgreSQL: 100 sessions over 2 processes, reserve+settle for "
        f"{seconds:g} s; baseline: SQLite store, 100 sessions, one process (same run)\n"
    )
    print(f"{'':<28} | {'ops/s':>9} | {'p50 ms':>7} | {'p99 ms':>7}")
    print("-" * 60)
    print(
        f"{'PostgreSQL reserve+settle':<28} | {rate:>9,.0f} | {p(pairs, 50) * 1e3:>7.2f} | {p(pairs, 99) * 1e3:>7.2f}"
    )
    print(
        f"{'PostgreSQL quota check':<28} | {len(checks) / seconds:>9,.0f} | {p(checks, 50) * 1e3:>7.2f} | "
        f"{p(checks, 99) * 1e3:>7.2f}"
    )
    print(f"{'SQLite reserve+settle (base)':<28} | {sqlite_rate:>9,.0f} | {'':>7} | {'':>7}")
    print(
        f"\nratio PostgreSQL / SQLite: {rate / sqlite_rate:.2f}; counters {'==' if used == logged else '!='} ledger"
    )
    worst = max(p(pairs, 99), p(checks, 99)) * 1e3
    print(f"target >= 5,000 ops/s: {rate:,.0f} -> {'PASS' if rate >= 5000 else 'MISS'}")
    print(f"target p99 < 10 ms: {worst:.2f} ms -> {'PASS' if worst < 10 else 'MISS'}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pg-worker"]:
        asyncio.run(pg_worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    elif "--postgres" in sys.argv:
        asyncio.run(main_postgres())
    else:
        asyncio.run(main())
