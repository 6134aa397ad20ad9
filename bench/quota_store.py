"""Quota store throughput and latency: reserve-and-settle ops/s at 1, 10 and 100 concurrent sessions, and
p99 latency of a pre-session quota check (idle and under the 100-session load).

Baseline, measured in the same run on the same kind of file: a bare aiosqlite ``BEGIN IMMEDIATE; INSERT;
DELETE; COMMIT`` under one asyncio lock, i.e. the cheapest write-then-remove a careful hand-written store
would do per call. Ratios > 1 mean the quota store is faster than that baseline.

Targets (issue 4): >= 2,000 ops/s at 100 concurrent sessions; p99 check < 10 ms.
Run: ``.venv/bin/python bench/quota_store.py`` (about 10-20 s).

``--postgres``: the same store on PostgreSQL (throwaway servers started like the tests start theirs), 100
concurrent sessions split over two processes, each a separate ``PgDatabase`` pool, as two shard
processes of one bot would be; both processes start measuring together (``ready`` / ``go``). Run twice:
on a server with PostgreSQL's durable defaults (fsync, synchronous_commit and full_page_writes on, as
production must run; the store's quota batches still commit without waiting for their flush, see
``bot/store/pg_quota_v6.py``) and on the test server's fsync=off settings (for comparison only). Each run has two
phases: *saturated* (sessions reserve and settle back to back: the capacity; in a closed loop a pair's
latency is queueing, p50 = sessions / rate by Little's law, so at 100 sessions a p99 under 10 ms would
need over 10,000 pairs/s) and *paced* (5,000 pairs/s offered on a fixed timetable, 50 per session per
second, latency counted from each pair's slot so falling behind shows). Real sessions wait about a
second on the model between reserve and settle, so the paced phase is the one that answers "p99 under
10 ms at 5,000/s". Meanwhile each process makes a quota check per ten pairs (a bot checks once per
session start), timed on its own. It also prints CPU per pair of the bot processes and of PostgreSQL, and the load
average: on a shared machine the rate follows the CPU left over. Baseline, same run: the SQLite store
at 100 sessions in one process.
Targets (scale issue): >= 5,000 reserve+settle per second across both processes (durable, saturated);
p99 of each reserve+settle pair and of a quota check < 10 ms (durable, paced at 5,000/s).
Run: ``.venv/bin/python bench/quota_store.py --postgres [--rate N]`` (about a minute).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


PG_SESSIONS = 50  # per process; two processes
PG_RATE = 5000  # reserve+settle pairs per second, both processes together: the target and the paced load
# (``--rate N`` paces at N instead, e.g. to see the latency at a load a busy machine can still carry)
PG_SECONDS = 5.0
CHECK_EVERY = 10  # pairs per quota check (one check per session start, ~10 model calls per session)


async def pg_worker(url: str, sessions: int, seconds: float, rate: float, guild: int = GUILD) -> None:
    """One of the two processes: says ``ready``, waits for ``go`` on stdin (so both measure the same
    seconds; imports take a few seconds here), then runs the saturated phase and the paced phase with
    ``sessions`` concurrent sessions each; prints JSON."""
    import json

    from bot.store.pg import PgDatabase

    # The store writes one batch at a time per process on one held connection (ledger.py), so 100
    # sessions need few connections: that one, the quota checks, and the reservation-id blocks.
    db = await PgDatabase.open(url, min_size=4, max_size=8)
    store = QuotaStore(db, None, Limits(10**9, 10**12, 10**9, 10**6, 10**9))
    budgets = [store.budget(guild, 1000 + i % USERS, (), f"pg-{i}-{id(store)}") for i in range(sessions)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    go = time.perf_counter()

    async def pair(i: int) -> None:
        token = await budgets[i].reserve("m", Usage(200, 100), 0.001)
        await budgets[i].settle(token, "m", "bench", Usage(180, 90), Cost(0.0009))

    async def saturated(i: int, out: list[float], end: float) -> None:
        while time.perf_counter() < end:
            t = time.perf_counter()
            await pair(i)
            out.append(time.perf_counter() - t)

    async def paced(i: int, out: list[float], start: float, end: float) -> None:
        # a pair every `interval` on a fixed timetable; latency counts from the slot, so falling behind
        # shows up in the figures instead of quietly lowering the load
        interval = sessions / rate
        slot = start + interval * i / sessions
        while slot < end:
            await asyncio.sleep(max(0.0, slot - time.perf_counter()))
            await pair(i)
            out.append(time.perf_counter() - slot)
            slot += interval

    async def checker(out: list[float], end: float) -> None:
        # A bot checks once per session start; at about ten model calls per session that is one check per
        # ten pairs (the loop used to check back to back, ~500/s a process, more round trips than the
        # quota batches themselves, and a load no bot makes).
        slot = time.perf_counter()
        while slot < end:
            t = time.perf_counter()
            await store.check(guild, 1000, ())
            out.append(time.perf_counter() - t)
            slot += CHECK_EVERY / rate
            await asyncio.sleep(max(0.0, slot - time.perf_counter()))

    result: dict[str, dict[str, Any]] = {}
    for phase in ("saturated", "paced"):
        # both processes start each phase at the same offset from go
        start = go + (0.0 if phase == "saturated" else seconds + 0.5)
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        res: dict[str, Any] = {"pairs": [], "checks": []}
        cpu = time.process_time()
        end = start + seconds
        sessions_run = (
            saturated(i, res["pairs"], end) if phase == "saturated" else paced(i, res["pairs"], start, end)
            for i in range(sessions)
        )
        await asyncio.gather(checker(res["checks"], end), *sessions_run)
        res["wall"] = time.perf_counter() - start  # until the last pair finished
        res["cpu"] = time.process_time() - cpu
        result[phase] = res
    await store.flush()
    await db.close()
    print(json.dumps(result), flush=True)


def server_cpu(server: Any) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster and the backends it has reaped."""
    pid = int((server.dir / "data" / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


async def pg_run(durable: bool, seconds: float, rate: float, *, sharded: bool = False) -> dict[str, Any]:
    """Two worker processes against a throwaway server: per phase the merged latencies, the rate, client
    CPU; plus server CPU over the whole run and whether counters == ledger with no reservation left.
    ``sharded``: each process charges servers of its own (a guild lives on one shard), so the two never
    wait for each other's per-server lock; otherwise both charge the same server (the worst case)."""
    import json
    import uuid

    import asyncpg

    from bot.store.pg import PgDatabase
    from tests.fakes.postgres import PostgresServer

    server = PostgresServer(durable=durable).start()
    try:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(server.url())
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()
        url = server.url(name)
        await (await PgDatabase.open(url)).close()  # migrate once before the clock starts
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--pg-worker",
                url,
                str(PG_SESSIONS),
                str(seconds),
                str(rate / 2),
                str(GUILD + k if sharded else GUILD),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for k in range(2)
        ]
        for proc in procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            assert line.strip() == b"ready", line
        cpu0 = server_cpu(server)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        results = [json.loads((await proc.communicate())[0]) for proc in procs]
        await asyncio.sleep(0.2)  # the backends of the closed pools exit and are reaped
        cpu1 = server_cpu(server)
        db = await PgDatabase.open(url)
        (used,) = await db.fetchone("SELECT SUM(tokens) FROM usage_daily")  # type: ignore[misc]
        (logged,) = await db.fetchone("SELECT SUM(prompt_tokens + completion_tokens) FROM usage_ledger")  # type: ignore[misc]
        (left,) = await db.fetchone("SELECT COUNT(*) FROM reservations")  # type: ignore[misc]
        await db.close()
    finally:
        server.stop()
    run: dict[str, Any] = {"ok": used == logged and left == 0}
    for phase in ("saturated", "paced"):
        pairs = [x for r in results for x in r[phase]["pairs"]]
        run[phase] = {
            "pairs": pairs,
            "checks": [x for r in results for x in r[phase]["checks"]],
            "rate": len(pairs) / max(r[phase]["wall"] for r in results),
            "client_us": sum(r[phase]["cpu"] for r in results) / max(1, len(pairs)) * 1e6,
        }
    total = sum(len(run[phase]["pairs"]) for phase in ("saturated", "paced"))
    run["server_us"] = (cpu1 - cpu0) / max(1, total) * 1e6
    return run


async def main_postgres(seconds: float = PG_SECONDS, rate: float = PG_RATE) -> None:
    load_before = os.getloadavg()
    runs = {
        "durable": await pg_run(True, seconds, rate),
        "tests": await pg_run(False, seconds, rate),
        "durable, 1 guild per process": await pg_run(True, seconds, rate, sharded=True),
    }
    with tempfile.TemporaryDirectory() as tmp:  # baseline: SQLite, one process, 100 sessions
        sdb = await Database.open(Path(tmp) / "quota.sqlite3")
        sqlite_rate, _ = await quota_run(
            QuotaStore(sdb, None, Limits(10**9, 10**12, 10**9, 10**6, 10**9)), 100, OPS
        )
        await sdb.close()
    load_after = os.getloadavg()
    print(
        f"quota store on PostgreSQL: {2 * PG_SESSIONS} sessions over 2 processes, one guild, {USERS} users, "
        f"{seconds:g} s per phase\n"
        "saturated: every session reserves and settles back to back (capacity; its latency is queueing:\n"
        f"  p50 = sessions / rate by Little's law); paced: {rate:,.0f} pairs/s offered on a fixed timetable,\n"
        "  latency counted from each pair's slot. durable = PostgreSQL's defaults (fsync, synchronous_commit,\n"
        "  full_page_writes on), as production runs (quota batches commit\n"
        "  asynchronously, pg_quota_v6); tests = the test server's fsync=off settings;\n"
        "  both charge one guild from both processes (the worst case: they take turns on its lock);\n"
        "  1 guild per process = as shard processes run (a guild lives on one shard).\n"
        "CPU per pair: client = both bot processes; server = all PostgreSQL processes (whole run).\n"
        "baseline: the SQLite store, 100 sessions, one process (same run)\n"
    )
    print(
        f"{'server, guilds':<28} | {'load':<9} | {'pairs/s':>7} | {'pair p50':>8} | {'pair p99':>8} | "
        f"{'check p50':>9} | {'check p99':>9} | {'CPU us/pair':>17} | counters"
    )
    print("-" * 126)
    for label, run in runs.items():
        for phase in ("saturated", "paced"):
            r = run[phase]
            cpu = f"{r['client_us']:.0f} + {run['server_us']:.0f}"
            print(
                f"{label:<28} | {phase:<9} | {r['rate']:>7,.0f} | "
                f"{p(r['pairs'], 50) * 1e3:>6.2f}ms | {p(r['pairs'], 99) * 1e3:>6.2f}ms | "
                f"{p(r['checks'], 50) * 1e3:>7.2f}ms | {p(r['checks'], 99) * 1e3:>7.2f}ms | {cpu:>17} | "
                f"{'== ledger' if run['ok'] else '!= LEDGER'}"
            )
    print(f"{'SQLite, 1 process':<28} | {'saturated':<9} | {sqlite_rate:>7,.0f} |")
    durable = runs["durable"]
    capacity = durable["saturated"]["rate"]
    paced = durable["paced"]
    worst = max(p(paced["pairs"], 99), p(paced["checks"], 99)) * 1e3
    print(
        f"\nload average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f} on "
        f"{os.cpu_count()} CPUs; ratio durable PostgreSQL / SQLite: {capacity / sqlite_rate:.2f}"
    )
    print(
        f"target >= {PG_RATE:,} pairs/s (durable, saturated): {capacity:,.0f} -> "
        f"{'PASS' if capacity >= PG_RATE else 'MISS'}"
    )
    print(
        f"target p99 < 10 ms at {PG_RATE:,}/s (durable, paced; pairs and checks): {worst:.2f} ms at "
        f"{paced['rate']:,.0f}/s -> "
        + (
            ("PASS" if worst < 10 and paced["rate"] >= 0.98 * PG_RATE else "MISS")
            if rate == PG_RATE
            else f"not judged (paced at {rate:,.0f}/s, not the target's rate)"
        )
    )
    print(
        f"counters == ledger, no reservation left: {'PASS' if all(r['ok'] for r in runs.values()) else 'FAIL'}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pg-worker"]:
        asyncio.run(
            pg_worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
        )
    elif "--postgres" in sys.argv:
        rate = float(sys.argv[sys.argv.index("--rate") + 1]) if "--rate" in sys.argv else PG_RATE
        asyncio.run(main_postgres(rate=rate))
    else:
        asyncio.run(main())
