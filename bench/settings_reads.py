"""Server settings shared by shard processes: what a read costs, and how soon another process sees a change.

Three ways to keep a process's settings right when another process may change them (issue 18.3):

* ``uncached``: read and build the settings on every call (always right, a query per read);
* ``version``: keep the cache but ask PostgreSQL for the server's latest change time on every read
  (a query per read, one indexed row);
* ``notify``: keep the cache, drop an entry when ``NOTIFY agentbot_settings`` says it changed
  (what the bot does: :mod:`bot.store.settings_sync`).

Prints microseconds per read (median over ``READS`` reads of 20 servers) for each, and the delay from
the start of a change in one process to the other process's cache entry being dropped (median and max
of ``CHANGES``; the change itself, a transaction with its audit row, is most of it). A throwaway PostgreSQL is started as the tests start it. Run:
``.venv/bin/python bench/settings_reads.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakes, when run as a script

from bot.store import GuildSettingsStore, SettingsSchema
from bot.store.pg import PgDatabase
from bot.store.settings_sync import SettingsListener
from tests.fakes.postgres import PostgresServer

READS = 4000
CHANGES = 50
GUILDS = [(1000 + i) << 22 for i in range(20)]


async def per_read(read, n: int = READS) -> float:  # type: ignore[no-untyped-def]
    for g in GUILDS:
        await read(g)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        await read(GUILDS[i % len(GUILDS)])
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


async def run(url: str) -> None:
    schema = SettingsSchema(["gpt-4o-mini"], ["web_search"])
    db_a, db_b = await PgDatabase.open(url), await PgDatabase.open(url)
    a, b = GuildSettingsStore(db_a, schema), GuildSettingsStore(db_b, schema)
    for g in GUILDS:
        await a.set(g, 1, "max_steps", 6)
    listener = SettingsListener(url, b)
    try:
        b.trust(False)
        uncached = await per_read(b.get)

        await listener.start()

        async def version(g: int) -> object:
            await db_b.fetchone("SELECT max(updated_at) FROM guild_settings WHERE guild_id = ?", (g,))
            return await b.get(g)

        versioned = await per_read(version)
        notified = await per_read(b.get)

        delays: list[float] = []
        already = 0
        for i in range(CHANGES):
            g = GUILDS[i % len(GUILDS)]
            await b.get(g)
            dropped = asyncio.Event()
            original = b.invalidate

            def seen(guild_id: int | None = None, _e: asyncio.Event = dropped, _o=original) -> None:  # type: ignore[no-untyped-def]
                _o(guild_id)
                _e.set()

            b.invalidate = seen  # type: ignore[method-assign]
            started = time.perf_counter()
            await a.set(g, 1, "max_steps", 7 + i // len(GUILDS))  # a new value each round
            already += dropped.is_set()
            await asyncio.wait_for(dropped.wait(), 5)
            delays.append(time.perf_counter() - started)
            b.invalidate = original  # type: ignore[method-assign]
        print(f"{'strategy':<10} {'µs per read (median)':>22}")
        print(f"{'uncached':<10} {uncached:>22.0f}")
        print(f"{'version':<10} {versioned:>22.0f}")
        print(f"{'notify':<10} {notified:>22.1f}")
        print(
            f"/config change started → other process's cache dropped: median "
            f"{statistics.median(delays) * 1e3:.2f} ms, max {max(delays) * 1e3:.2f} ms over {CHANGES} changes; "
            f"already dropped when the change returned: {already} of {CHANGES}"
        )
    finally:
        await listener.close()
        await db_a.close()
        await db_b.close()


async def main() -> None:
    server = PostgresServer().start()
    try:
        name = f"b_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(server.url())
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()
        await run(server.url(name))
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
