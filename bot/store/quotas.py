"""Quota enforcement: checks before a session, reservations around each model call, usage reports.

How the guarantee holds under concurrency: a reservation is one ``INSERT … SELECT … WHERE used + reserved
+ estimate <= limit`` statement and a settlement is one ``INSERT`` into the usage ledger whose trigger
removes the reservation and adds the real usage to every counter. Each is a single SQLite statement (so
atomic) run under the database's write lock, so 50 or 500 concurrent steps can never both see the same
room, and no counter update can be lost. Under load they are group-committed (:mod:`bot.store.ledger`);
see ``bench/quota_store.py`` for the figures. On PostgreSQL a batch is one function call whose reserves
hold a per-server lock, so the same holds across processes (``pg_quota_v6``).

Decisions:

* Real usage above the estimate is charged in full (it was spent); the next reservation then fails. So a
  limit is exceeded only by one call's underestimate, never by concurrency.
* A reservation counts against whatever day and month are current while it is held; the settlement lands
  in the day and month of the settle. Around midnight this errs on the side of refusing.
* An unknown price (``Cost.known`` false) charges the known part and counts the call in
  ``unknown_cost_calls``, so reports say "at least". With no cost estimate only token limits can stop a run.
* Reservations older than :data:`RESERVATION_TTL` are ignored (a run that never settled, e.g. killed), and
  :meth:`QuotaStore.recover` deletes those of the servers this process owns at start-up.
* One /research or follow-up turn is one request, counted by :meth:`QuotaStore.begin_session` when the
  turn starts. A new session's request is held from the moment its slot is taken (``hold_request``)
  until its first turn counts it or the slot goes back: alice's last request of the day, sent as
  /research in two channels at once, opened two threads and was refused in the second only there.
  A turn that does not count its request (one resumed after a restart: it was counted) is not
  checked against the request limits: at the member's last request, a resumed run was refused.
* Direct messages (``guild_id=None``) count under guild id 0 with the default limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.limits import (
    GUILD_BUDGET,
    Clock,
    Limits,
    day_key,
    exhausted_message,
    month_key,
    nano_to_usd,
    resets_at,
    resolve_limits,
    to_utc,
    utc_now,
)
from bot.shards import EVERY_SHARD, ShardOwnership
from bot.store import all_servers
from bot.store.db import Database, execute_each
from bot.store.guild_settings import GuildSettingsStore
from bot.store.interrupted import PromptPart, charge_left_calls
from bot.store.ledger import ledger_for
from bot.store.quota_budget import QuotaBudget
from bot.store.usage_reports import _ORDER, UsageReports, _gid

RESERVATION_TTL = timedelta(hours=1)
ACTIVE_SESSION_TTL = timedelta(hours=6)
"""A concurrency slot not released for this long (a bug, a lost task) stops counting."""

_SNAPSHOT_SQL = """
SELECT
  (SELECT requests FROM usage_daily WHERE guild_id = :g AND user_id = :u AND day = :day) AS day_requests,
  (SELECT tokens FROM usage_daily WHERE guild_id = :g AND user_id = :u AND day = :day) AS day_tokens,
  (SELECT cost_nusd FROM usage_monthly WHERE guild_id = :g AND user_id = :u AND month = :month) AS month_cost,
  (SELECT unknown_cost_calls FROM usage_monthly
     WHERE guild_id = :g AND user_id = :u AND month = :month) AS month_unknown,
  (SELECT SUM(tokens) FROM reservations
     WHERE guild_id = :g AND user_id = :u AND created_at >= :cutoff) AS reserved_tokens,
  (SELECT SUM(cost_nusd) FROM reservations
     WHERE guild_id = :g AND user_id = :u AND created_at >= :cutoff) AS reserved_cost,
  (SELECT cost_nusd FROM guild_monthly WHERE guild_id = :g AND month = :month) AS guild_cost,
  (SELECT SUM(cost_nusd) FROM reservations WHERE guild_id = :g AND created_at >= :cutoff) AS guild_reserved,
  (SELECT COUNT(*) FROM active_sessions
     WHERE guild_id = :g AND user_id = :u AND started_at >= :active_cutoff) AS active,
  (SELECT COUNT(*) FROM active_sessions WHERE session_id = :s) AS this_session_active
"""


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    allowed: bool
    limit: str | None = None
    """The exhausted limit: requests_per_day, tokens_per_day, cost_per_month_usd, concurrent_sessions or
    guild_budget_per_month_usd."""
    message: str = ""
    """For the user, as is: names the limit and when it resets as ``<t:UNIX:R>``."""
    resets_at: datetime | None = None


@dataclass(slots=True)
class _Snapshot:
    day_requests: int
    day_tokens: int
    month_cost: int
    month_unknown: int
    reserved_tokens: int
    reserved_cost: int
    guild_cost: int
    guild_reserved: int
    active: int
    this_session_active: bool

    @classmethod
    def from_row(cls, row: Any) -> _Snapshot:
        return cls(*(int(row[i] or 0) for i in range(9)), this_session_active=bool(row[9]))

    def used(self, limit: str) -> float:
        """Usage in the limit's own unit (USD for money), reservations included."""
        if limit == "requests_per_day":
            return self.day_requests
        if limit == "tokens_per_day":
            return self.day_tokens + self.reserved_tokens
        if limit == "cost_per_month_usd":
            return nano_to_usd(self.month_cost + self.reserved_cost)
        if limit == GUILD_BUDGET:
            return nano_to_usd(self.guild_cost + self.guild_reserved)
        return self.active

    def reserved(self, limit: str) -> float:
        """The part of :meth:`used` that running steps hold, not yet spent (given back if unused)."""
        if limit == "tokens_per_day":
            return self.reserved_tokens
        if limit == "cost_per_month_usd":
            return nano_to_usd(self.reserved_cost)
        if limit == GUILD_BUDGET:
            return nano_to_usd(self.guild_reserved)
        return 0.0


class QuotaStore(UsageReports):
    """Per-user, per-server quotas; one per process, shared by every session."""

    def __init__(
        self,
        db: Database,
        settings: GuildSettingsStore | None = None,
        defaults: Limits | None = None,
        *,
        clock: Clock = utc_now,
        all_servers_per_day: int | None = None,
    ) -> None:
        """``defaults`` are usually ``Limits.from_env()``; ``settings`` adds server and role overrides.
        ``all_servers_per_day``: requests a user may make per day in every server together (issue 18.3)."""
        self.db = db
        self.settings = settings
        self.defaults = defaults if defaults is not None else Limits.from_env()
        self.clock = clock
        self.all_servers_per_day = all_servers_per_day or None
        self.ledger = ledger_for(db)
        self._held: dict[str, tuple[int, int, float]] = {}
        """Session id → (server, user, when) of the new sessions whose request is held, not counted yet.
        In memory: a server's sessions all start in the process that owns it. Like a concurrency slot,
        one older than :data:`ACTIVE_SESSION_TTL` (a turn that never started: the database went away)
        no longer counts."""

    def _holding(self, g: int | None, user_id: int, session_id: str | None) -> int:
        """The user's held requests (in server ``g``, or in every server if None), but this session's."""
        since = to_utc(self.clock()).timestamp() - ACTIVE_SESSION_TTL.total_seconds()
        return sum(
            1
            for sid, (gid, uid, at) in self._held.items()
            if uid == user_id and sid != session_id and (g is None or gid == g) and at >= since
        )

    async def flush(self) -> None:
        """Wait for queued reservation and settlement writes (call before closing the database)."""
        await self.ledger.flush()

    # --- limits and checks ------------------------------------------------------------------------

    async def limits_for(self, guild_id: int | None, role_ids: Iterable[int] = ()) -> Limits:
        if self.settings is None or guild_id is None:
            return self.defaults
        s = await self.settings.get(guild_id)
        return resolve_limits(
            self.defaults, s.limits, s.role_limits, role_ids, s.limits.get(GUILD_BUDGET, ...)
        )

    async def snapshot(self, guild_id: int, user_id: int, now: datetime, session_id: str = "") -> _Snapshot:
        row = await self.db.fetchone(_SNAPSHOT_SQL, self.period_params(guild_id, user_id, now, session_id))
        return _Snapshot.from_row(row)

    def period_params(self, guild_id: int, user_id: int, now: datetime, session_id: str | None) -> dict:
        ts = now.timestamp()
        return {
            "g": guild_id,
            "u": user_id,
            "s": session_id,
            "day": day_key(now),
            "month": month_key(now),
            "cutoff": ts - RESERVATION_TTL.total_seconds(),
            "active_cutoff": ts - ACTIVE_SESSION_TTL.total_seconds(),
        }

    def _decide(
        self,
        limits: Limits,
        snap: _Snapshot,
        now: datetime,
        *,
        new_session: bool,
        need_tokens: int = 0,
        need_usd: float = 0.0,
        requests: bool = True,
    ) -> QuotaDecision:
        for name in _ORDER:
            cap = limits.get(name)
            if cap is None or (name == "concurrent_sessions" and not new_session):
                continue
            if name == "requests_per_day" and not requests:  # counted already (a resumed turn)
                continue
            used = snap.used(name)
            need = {"tokens_per_day": need_tokens, "cost_per_month_usd": need_usd, GUILD_BUDGET: need_usd}
            need = need.get(name, 0)
            if used >= cap or (need and used + need > cap):
                need = need if used < cap else 0  # named only when it is what tips over
                return QuotaDecision(
                    False, name, exhausted_message(name, used, cap, now, need=need), resets_at(name, now)
                )
        return QuotaDecision(True)

    async def check(
        self,
        guild_id: int | None,
        user_id: int,
        role_ids: Iterable[int] = (),
        *,
        need_tokens: int = 0,
        need_usd: float = 0.0,
    ) -> QuotaDecision:
        """May this user start a session now? Read-only; :meth:`begin_session` re-checks atomically.

        ``need_tokens`` and ``need_usd``: about what one step takes; a run that cannot afford it is refused
        up front rather than charged a request for nothing.
        """
        now = to_utc(self.clock())
        limits = await self.limits_for(guild_id, role_ids)
        snap = await self.snapshot(_gid(guild_id), user_id, now)
        snap.day_requests += self._holding(_gid(guild_id), user_id, None)
        decision = self._decide(
            limits, snap, now, new_session=True, need_tokens=need_tokens, need_usd=need_usd
        )
        return await self._all_servers(self.db.fetchall, user_id, now) if decision.allowed else decision

    async def _all_servers(
        self, read: Any, user_id: int, now: datetime, session_id: str | None = None
    ) -> QuotaDecision:
        """``QUOTA_REQUESTS_PER_DAY_ALL_SERVERS`` (:mod:`bot.store.all_servers`)."""
        cap = self.all_servers_per_day
        if cap is None:
            return QuotaDecision(True)
        used = await all_servers.used_today(read, user_id, now) + self._holding(None, user_id, session_id)
        if used < cap:
            return QuotaDecision(True)
        msg = all_servers.refusal(used, cap, now)
        return QuotaDecision(False, "requests_per_day", msg, resets_at("requests_per_day", now))

    async def begin_session(
        self,
        guild_id: int | None,
        user_id: int,
        role_ids: Iterable[int],
        session_id: str,
        *,
        count_request: bool = True,
        hold_request: bool = False,
        need_tokens: int = 0,
        need_usd: float = 0.0,
    ) -> QuotaDecision:
        """Check and, if allowed, take a concurrency slot and count one request, atomically.

        Call once per /research or follow-up turn; call :meth:`end_session` when the turn ends (in a
        ``finally``). A session already holding a slot does not take a second one. ``hold_request``
        (with ``count_request`` false): a new session's slot, its request held for its first turn.
        Without either, the request limits are not checked: the turn's request was counted before.
        """
        now = to_utc(self.clock())
        g = _gid(guild_id)
        limits = await self.limits_for(guild_id, role_ids)
        params = self.period_params(g, user_id, now, session_id)
        async with self.db.transaction_reading(_SNAPSHOT_SQL, params) as (conn, rows):
            snap = _Snapshot.from_row(next(iter(rows)))
            requests = count_request or hold_request
            snap.day_requests += self._holding(g, user_id, session_id)
            decision = self._decide(
                limits,
                snap,
                now,
                new_session=not snap.this_session_active,
                need_tokens=need_tokens,
                need_usd=need_usd,
                requests=requests,
            )
            if decision.allowed and requests:
                decision = await self._all_servers(conn.execute_fetchall, user_id, now, session_id)
            if not decision.allowed:
                return decision
            if hold_request:  # with the check, before any await: a second start sees it held
                self._held[session_id] = (g, user_id, now.timestamp())
            writes: list[tuple[str, tuple[Any, ...]]] = [
                (
                    "INSERT INTO active_sessions (session_id, guild_id, user_id, started_at)"
                    " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                    (session_id, g, user_id, now.timestamp()),
                )
            ]
            if count_request:
                writes += [
                    (
                        "INSERT INTO usage_daily (guild_id, user_id, day, requests) VALUES (?,?,?,1)"
                        " ON CONFLICT (guild_id, user_id, day) DO UPDATE SET requests = usage_daily.requests + 1",
                        (g, user_id, day_key(now)),
                    ),
                    (
                        "INSERT INTO usage_monthly (guild_id, user_id, month, requests) VALUES (?,?,?,1)"
                        " ON CONFLICT (guild_id, user_id, month) DO UPDATE SET requests = usage_monthly.requests + 1",
                        (g, user_id, month_key(now)),
                    ),
                ]
            more = count_request and self.all_servers_per_day is not None  # all_servers.count writes after
            await execute_each(conn, writes, commit=not more)  # one hop to SQLite's thread, not one each
            if count_request:
                if self.all_servers_per_day is not None:
                    await all_servers.count(conn, user_id, now)
                self._held.pop(session_id, None)  # counted now: under the write lock, as it was held
        return decision

    async def end_session(self, session_id: str) -> None:
        """Release the concurrency slot (a no-op if it is not held) and a request held with it."""
        self._held.pop(session_id, None)
        await self.db.write("DELETE FROM active_sessions WHERE session_id = ?", (session_id,))

    async def recover(
        self, owner: ShardOwnership = EVERY_SHARD, charge: PromptPart | None = None
    ) -> tuple[int, int]:
        """At start-up: drop reservations and concurrency slots left by a previous process.

        Returns (reservations, slots) removed. With shard processes sharing the database, only the
        servers ``owner`` owns: the other processes' rows belong to their live runs (issue 18.3).
        ``charge``: a reservation left behind is a call the killed process had in flight, whose prompt
        the provider billed; it is charged that part by estimate (:mod:`bot.store.interrupted`).
        """
        where = owner.sql("guild_id")
        charged = 0
        if charge is not None:
            rows = await self.db.fetchall(
                "SELECT id, guild_id, user_id, session_id, model, tokens, cost_nusd FROM reservations"
                f" WHERE {where} ORDER BY id"
            )
            charged = (await charge_left_calls(self.ledger, list(rows), charge, self.clock()))[0]
        async with self.db.transaction() as conn:
            r = await conn.execute(f"DELETE FROM reservations WHERE {where}")
            a = await conn.execute(f"DELETE FROM active_sessions WHERE {where}")
            return r.rowcount + charged, a.rowcount

    def budget(
        self, guild_id: int | None, user_id: int, role_ids: Iterable[int] = (), session_id: str | None = None
    ) -> QuotaBudget:
        """An ``agent.budget.Budget`` for one run."""
        return QuotaBudget(self, guild_id, user_id, tuple(role_ids), session_id)
