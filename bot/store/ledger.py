"""The hot path of quota enforcement: reservation and settlement writes, group-committed.

Each operation is one SQL statement that is atomic on its own (the limit check lives inside the reserve
``INSERT … SELECT … WHERE``; the settle ``INSERT`` fires a trigger that drops the reservation and updates
every counter). When many sessions write at once, the operations that queued up while the previous batch
ran are executed in submission order inside one ``BEGIN IMMEDIATE … COMMIT``, consecutive operations of
one kind through a single ``executemany``. Every statement still sees the effect of the ones before it,
so the guarantee is the same as one-by-one; what changes is the number of thread hops and commits per
operation (see ``bench/quota_store.py``). A lone operation runs as a plain autocommit statement.

Reservation ids are chosen here, so a caller cancelled while its reservation is queued can still release
it: on SQLite counting up from the largest id in the file (one writer per :class:`Database`, see
:func:`ledger_for`, and one process per file); on PostgreSQL from the ``reservation_ids`` sequence, taken
in blocks, so processes sharing the database never hand out the same id.

If a batch hits a constraint error (a reservation settled twice), it is rolled back and its operations
are replayed one by one, so only the faulty one fails, with its own error.

On PostgreSQL a batch is one call of the ``quota_apply`` function (``pg_quota_v6``): one round trip and
one commit per batch, the limit checks made atomic by a per-server lock held only while the server works.
It is the same three statements, run set-wise where that gives the same answer (the function says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog

from bot.store.db import Database

if TYPE_CHECKING:
    from bot.store.pg import PgDatabase

OpKind = Literal["reserve", "settle", "release"]
log = structlog.get_logger("bot.store.ledger")
UNREACHABLE_GIVE_UP = 300.0
"""Seconds queued charges wait for an unreachable PostgreSQL before they fail."""
CLOSING_GIVE_UP = 10.0
"""Once the bot is stopping, the most that queued charges still wait for an unreachable PostgreSQL: a
SIGTERM during an outage otherwise waited out :data:`UNREACHABLE_GIVE_UP` (5 minutes) before exiting."""

RESERVE_SQL = """
INSERT INTO reservations (id, guild_id, user_id, session_id, model, tokens, cost_nusd, created_at)
SELECT :id, :g, :u, :s, :model, :tokens, :cost, :now
WHERE (CAST(:tok_lim AS BIGINT) IS NULL OR
        COALESCE((SELECT tokens FROM usage_daily WHERE guild_id = :g AND user_id = :u AND day = :day), 0)
      + COALESCE((SELECT SUM(tokens) FROM reservations
                  WHERE guild_id = :g AND user_id = :u AND created_at >= :cutoff), 0)
      + CAST(:tokens AS BIGINT) <= CAST(:tok_lim AS BIGINT))
  AND (CAST(:cost_lim AS BIGINT) IS NULL OR
        COALESCE((SELECT cost_nusd FROM usage_monthly WHERE guild_id = :g AND user_id = :u AND month = :month), 0)
      + COALESCE((SELECT SUM(cost_nusd) FROM reservations
                  WHERE guild_id = :g AND user_id = :u AND created_at >= :cutoff), 0)
      + CAST(:cost AS BIGINT) <= CAST(:cost_lim AS BIGINT))
  AND (CAST(:guild_lim AS BIGINT) IS NULL OR
        COALESCE((SELECT cost_nusd FROM guild_monthly WHERE guild_id = :g AND month = :month), 0)
      + COALESCE((SELECT SUM(cost_nusd) FROM reservations WHERE guild_id = :g AND created_at >= :cutoff), 0)
      + CAST(:cost AS BIGINT) <= CAST(:guild_lim AS BIGINT))
"""

# The ledger's reservation_id is UNIQUE: settling one reservation twice fails loudly instead of counting twice.
SETTLE_SQL = """
INSERT INTO usage_ledger (reservation_id, guild_id, user_id, session_id, provider, model, day, month,
                          prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_nusd,
                          cost_known, unknown_models, at, estimated)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
"""

RELEASE_SQL = "DELETE FROM reservations WHERE id = ?"

_SQL: dict[str, str] = {"reserve": RESERVE_SQL, "settle": SETTLE_SQL, "release": RELEASE_SQL}


@dataclass(slots=True)
class _Op:
    kind: OpKind
    params: Any
    future: asyncio.Future[bool] | None


_WRITERS: weakref.WeakKeyDictionary[Database | PgDatabase, LedgerWriter] = weakref.WeakKeyDictionary()
ID_BLOCK = 64
"""Reservation ids a process takes from PostgreSQL's sequence at once."""


def ledger_for(db: Database | PgDatabase) -> LedgerWriter:
    """The one writer of ``db`` (created on first use)."""
    writer = _WRITERS.get(db)
    if writer is None:
        writer = _WRITERS[db] = LedgerWriter(db)
        db.on_close(writer.close)
    return writer


class LedgerWriter:
    def __init__(self, db: Database | PgDatabase, *, max_batch: int = 64) -> None:
        """``max_batch`` bounds how long one batch holds the writer (and so the wait of other writers)."""
        self.db = db
        self.max_batch = max_batch
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        self._next_id: int | None = None
        self._ids: list[int] = []
        self._ids_task: asyncio.Task[None] | None = None
        self._seed_lock = asyncio.Lock()
        self.shared = db.backend == "postgresql"
        self.batches = 0
        self.operations = 0
        self._give_up_at: float | None = None
        """Set by :meth:`close`: when waiting for an unreachable server ends."""

    async def new_id(self) -> int:
        if self.shared:
            # The next block is taken while half of this one is left: a reserve that waited for it would
            # wait a round trip, and so would every reserve queued behind it meanwhile.
            if len(self._ids) <= ID_BLOCK // 2:
                self._take_ids()
            while not self._ids:
                await asyncio.shield(self._take_ids())
            return self._ids.pop()
        if self._next_id is None:
            async with self._seed_lock:
                if self._next_id is None:
                    row = await self.db.fetchone(
                        "SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM reservations"
                        " UNION ALL SELECT MAX(reservation_id) FROM usage_ledger)"
                    )
                    self._next_id = int((row[0] if row else 0) or 0) + 1
        rid = self._next_id
        self._next_id += 1
        return rid

    def _take_ids(self) -> asyncio.Task[None]:
        """The task taking the next block of ids (a new one unless one is under way)."""
        if self._ids_task is None or self._ids_task.done():

            async def take() -> None:
                sql = "SELECT nextval('reservation_ids') FROM generate_series(1, ?)"
                rows = await self.db.fetchall(sql, (ID_BLOCK,))
                self._ids = sorted([*self._ids, *(int(r[0]) for r in rows)], reverse=True)

            self._ids_task = asyncio.get_running_loop().create_task(take())
            # a failure reaches the reserves waiting for ids; with none waiting, the next block retries
            self._ids_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._ids_task

    def submit(self, kind: OpKind, params: Any, *, wait: bool = True) -> asyncio.Future[bool] | None:
        """Queue one operation; the future resolves to whether it took effect (a reserve: was it held).

        The operation runs even if the caller stops waiting; ``wait=False`` returns no future at all.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] | None = loop.create_future() if wait else None
        self._pending.append(_Op(kind, params, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return fut

    async def flush(self) -> None:
        """Wait until every queued operation is written (and the ids being taken are in)."""
        if self._ids_task is not None:
            await asyncio.wait([self._ids_task])
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        """Write what is queued, waiting at most :data:`CLOSING_GIVE_UP` more for an unreachable server
        (what cannot be written then fails, and is logged, rather than holding the shutdown)."""
        self._give_up_at = asyncio.get_running_loop().time() + CLOSING_GIVE_UP
        with contextlib.suppress(Exception):  # logged as quota_charges_not_written; each caller got it too
            await self.flush()

    async def _flush(self) -> None:
        while self._pending:
            # PostgreSQL: one pooled connection for as long as batches keep coming (acquiring and resetting
            # one per batch cost the client ~50 us a batch), a fresh one after a failed batch
            async with self._connection() as conn:
                while self._pending:
                    # let the sessions woken by the last batch queue their next operation
                    await asyncio.sleep(0)
                    batch = self._pending[: self.max_batch]
                    del self._pending[: self.max_batch]
                    try:
                        results = await self._write(batch, conn)
                    except BaseException as e:
                        failed = batch if not isinstance(e, asyncio.CancelledError) else batch + self._pending
                        for op in failed:
                            if op.future is not None and not op.future.done():
                                op.future.set_exception(e)
                        if isinstance(e, asyncio.CancelledError):
                            self._pending.clear()
                            raise
                        break
                    for op, outcome in zip(batch, results, strict=True):
                        if op.future is None or op.future.done():
                            continue
                        if isinstance(outcome, BaseException):
                            op.future.set_exception(outcome)
                        else:
                            op.future.set_result(outcome)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """PostgreSQL: a pooled connection, waiting while the server cannot be reached (a restart, an
        outage). The queued charges stay queued meanwhile: a flusher that died on a refused connection left
        its callers waiting for ever, a run stuck mid-step until some other run charged something. After
        :data:`UNREACHABLE_GIVE_UP` seconds they fail with the error instead."""
        if not self.shared:
            yield None
            return
        from bot.store.pg import reachable  # only with DATABASE_URL set

        loop, delay = asyncio.get_running_loop(), 0.25
        deadline = loop.time() + UNREACHABLE_GIVE_UP
        while True:
            try:
                with reachable():  # the charges it fails are then the store being unavailable, said as such
                    conn = await self.db.connections.acquire()  # type: ignore[union-attr]
                break
            except Exception as e:
                if loop.time() >= min(deadline, self._give_up_at or deadline):
                    lost = len(self._pending)
                    log.error("quota_charges_not_written", queued=lost, error=f"{type(e).__name__}: {e}")
                    for op in self._pending:
                        if op.future is not None and not op.future.done():
                            op.future.set_exception(e)
                    self._pending.clear()
                    raise
                log.warning("quota_store_unreachable", error=f"{type(e).__name__}: {e}", retry_in=delay)
                if self._give_up_at is not None:  # stopping: wake for the closing deadline, not later
                    delay = max(0.0, min(delay, self._give_up_at - loop.time()))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        try:
            yield conn
        finally:
            await self.db.connections.release(conn)  # type: ignore[union-attr]

    async def _write(self, batch: list[_Op], conn: Any) -> list[bool | BaseException]:
        if self.shared:  # one batch at a time in this process all the same: there is one flusher
            return await self._write_shared(batch, conn)
        async with self.db.lock:
            self.batches += 1
            self.operations += len(batch)
            # One hop to the writer's thread for the whole batch (aiosqlite's ``_execute``, as
            # Database.write_many uses it): statement by statement, a batch of reserves and settles was
            # BEGIN, one executemany per kind, a read of the reserves held, COMMIT, each a hop.
            writer = self.db.conn  # type: ignore[union-attr]
            return list(await writer._execute(_write_sqlite, writer._conn, batch))

    async def _write_shared(self, batch: list[_Op], conn: Any) -> list[bool | BaseException]:
        """PostgreSQL: the whole batch in one ``quota_apply`` call (one round trip, one commit; the
        per-server locks are taken inside it, see ``pg_quota_v6``)."""
        self.batches += 1
        self.operations += len(batch)
        if len(batch) > 1:
            try:
                return await _apply(conn, batch)
            except sqlite3.IntegrityError:
                pass  # replay one by one below so only the faulty operation fails
        out: list[bool | BaseException] = []
        for op in batch:
            try:
                out.extend(await _apply(conn, [op]))
            except sqlite3.Error as e:
                out.append(e)
        return out


APPLY_SQL = "SELECT quota_apply($1::quota_op[])"


def _pg_op(op: _Op) -> tuple[Any, ...]:
    """One operation as a ``quota_op`` row (field order of the type in ``pg_quota_v6``)."""
    p = op.params
    if op.kind == "reserve":
        return ("r", p["id"], p["g"], p["u"], p["s"], None, p["model"], p["day"], p["month"], p["tokens"],
                None, None, None, p["cost"], None, None, p["now"], p["cutoff"], p["tok_lim"], p["cost_lim"],
                p["guild_lim"], None)  # fmt: skip
    if op.kind == "settle":  # its parameters are the type's fields from id to at, in order, then estimated
        return ("s", *p[:16], None, None, None, None, p[16])
    return ("x", p[0], *(None,) * 20)


async def _apply(conn: Any, batch: list[_Op]) -> list[bool | BaseException]:
    import asyncpg  # only with DATABASE_URL set: SQLite stores never import it

    from bot.store.pg import PgIntegrityError, reachable

    try:
        # A dead connection is the store being unavailable; not tried again: a charge is not idempotent.
        with reachable():
            codes = await conn.fetchval(APPLY_SQL, [_pg_op(op) for op in batch])
    except asyncpg.IntegrityConstraintViolationError as e:  # the backstop behind the function's own check
        raise PgIntegrityError(str(e)) from e
    return [
        PgIntegrityError(f"reservation {op.params[0]} is already in the usage ledger") if c == 2 else c == 1
        for op, c in zip(batch, codes, strict=True)
    ]


def _write_sqlite(raw: sqlite3.Connection, batch: list[_Op]) -> list[bool | BaseException]:
    """A batch on SQLite's writer thread: in one transaction (consecutive operations of a kind through one
    ``executemany``), or one by one as autocommit statements when it is one operation, or when the
    transaction hit a constraint error (rolled back, then replayed so only the faulty one fails)."""
    if len(batch) > 1:
        raw.execute("BEGIN IMMEDIATE")
        try:
            out = _run_batch(raw, batch)
            raw.execute("COMMIT")
            return out
        except sqlite3.IntegrityError:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
        except BaseException:
            if raw.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                raw.execute("ROLLBACK")
            raise
    each: list[bool | BaseException] = []
    for op in batch:
        try:
            each.append(raw.execute(_SQL[op.kind], op.params).rowcount == 1)
        except sqlite3.Error as e:
            each.append(e)
    return each


def _run_batch(raw: sqlite3.Connection, batch: list[_Op]) -> list[bool | BaseException]:
    """The batch's statements in order, consecutive ones of a kind through one ``executemany``."""
    held: set[int] = set()
    for kind, group in itertools.groupby(batch, key=lambda o: o.kind):
        params = [op.params for op in group]
        raw.executemany(_SQL[kind], params)
        if kind == "reserve":
            ids = [p["id"] for p in params]
            marks = ",".join("?" * len(ids))
            rows = raw.execute(f"SELECT id FROM reservations WHERE id IN ({marks})", ids).fetchall()
            held.update(r[0] for r in rows)
    return [op.kind != "reserve" or op.params["id"] in held for op in batch]
