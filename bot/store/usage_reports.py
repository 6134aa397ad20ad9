"""The quota store's reports (/usage and /usage server): read-only views of the same counters.

A mixin of :class:`bot.store.quotas.QuotaStore`, kept apart so enforcement and reporting read separately.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.limits import (
    ALL_SERVERS_REQUESTS,
    GUILD_BUDGET,
    LIMIT_LABELS,
    Clock,
    Limits,
    month_key,
    nano_to_usd,
    next_month,
    resets_at,
    to_utc,
)
from bot.store import all_servers

if TYPE_CHECKING:
    from bot.store.db import Database

# Checked and reported in this order: the limit that resets last is the one worth naming.
_ORDER = (GUILD_BUDGET, "cost_per_month_usd", "tokens_per_day", "requests_per_day", "concurrent_sessions")


_ESTIMATED_SQL = """
SELECT
  (SELECT estimated_calls FROM usage_daily WHERE guild_id = :g AND user_id = :u AND day = :day) AS day_est,
  (SELECT estimated_calls FROM usage_monthly WHERE guild_id = :g AND user_id = :u AND month = :month) AS month_est,
  (SELECT estimated_calls FROM guild_monthly WHERE guild_id = :g AND month = :month) AS server_est,
  (SELECT unknown_cost_calls FROM guild_monthly WHERE guild_id = :g AND month = :month) AS server_unknown
"""
"""What /usage me marks: calls counted by estimate (today's, this month's, the server's), and the server's
unpriced calls (another member's self-hosted model makes the budget line a lower bound too)."""


def _gid(guild_id: int | None) -> int:
    return 0 if guild_id is None else guild_id


@dataclass(frozen=True, slots=True)
class ChargedCall:
    """One call as the usage ledger charged it (:meth:`UsageReports.charged_after`)."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    usd: float
    cost_known: bool
    unknown_models: tuple[str, ...]
    estimated: bool


@dataclass(frozen=True, slots=True)
class LimitUsage:
    name: str
    used: float
    """Counts and tokens as numbers, money in USD; tokens and money include open reservations."""
    limit: float | None
    resets_at: datetime | None
    reserved: float = 0.0
    """The part of ``used`` running steps hold: not spent, and given back when a step uses less."""

    @property
    def label(self) -> str:
        return LIMIT_LABELS[self.name]

    @property
    def remaining(self) -> float | None:
        return None if self.limit is None else max(0.0, self.limit - self.used)

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit


@dataclass(frozen=True, slots=True)
class UsageReport:
    """The caller's /usage: one row per limit in :data:`_ORDER` order, server budget first."""

    guild_id: int
    user_id: int
    limits: Limits
    items: list[LimitUsage]
    unknown_cost_calls: int
    """Calls this month whose price was unknown: the money figures are then lower bounds."""
    server_unknown_cost_calls: int = 0
    """The same for the whole server, whose budget line counts every member's calls."""
    estimated_calls_today: int = 0
    """Calls today counted by estimate (``Usage.estimated``): the tokens today are then an estimate."""
    estimated_calls: int = 0
    """The same this month: the spending is then an estimate."""
    server_estimated_calls: int = 0
    """The same for the whole server this month: its budget line is then an estimate."""

    def item(self, name: str) -> LimitUsage:
        return next(i for i in self.items if i.name == name)


@dataclass(frozen=True, slots=True)
class UserTotal:
    user_id: int
    requests: int
    tokens: int
    cost_usd: float
    unknown_cost_calls: int
    estimated_calls: int = 0
    """Calls this month counted by estimate (the server sent no usage, or the call was cut by a Stop)."""


@dataclass(frozen=True, slots=True)
class ModelTotal:
    provider: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    unknown_cost_calls: int
    reasoning_tokens: int = 0
    estimated_calls: int = 0


@dataclass(frozen=True, slots=True)
class ServerUsage:
    """/usage server: this month's totals, top users and the per-provider-and-model breakdown."""

    guild_id: int
    month: str
    tokens: int
    cost_usd: float
    unknown_cost_calls: int
    budget_usd: float | None
    resets_at: datetime
    top_users: list[UserTotal] = field(default_factory=list)
    models: list[ModelTotal] = field(default_factory=list)
    estimated_calls: int = 0
    """Calls this month counted by estimate: the totals are then estimates."""


class UsageReports:
    db: Database
    clock: Clock
    all_servers_per_day: int | None = None
    """``QUOTA_REQUESTS_PER_DAY_ALL_SERVERS`` (None: not set)."""

    async def limits_for(self, guild_id: int | None, role_ids: Iterable[int] = ()) -> Limits:
        raise NotImplementedError

    async def snapshot(self, guild_id: int, user_id: int, now: datetime, session_id: str = "") -> Any:
        raise NotImplementedError

    def period_params(self, guild_id: int, user_id: int, now: datetime, session_id: str | None) -> dict:
        raise NotImplementedError

    def _holding(self, g: int | None, user_id: int, session_id: str | None) -> int:
        raise NotImplementedError

    async def charged_after(self, session_id: str, at: float) -> list[ChargedCall]:
        """The calls charged to ``session_id`` after ``at`` (a turn's last checkpoint): a kill between a
        call's charge and the checkpoint that counts it (a Stop's cut call is charged as it is cut, the
        turn's checkpoint after) left /usage counting a call the resumed turn's footer did not."""
        rows = await self.db.fetchall(
            "SELECT model, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_nusd,"
            " cost_known, unknown_models, estimated FROM usage_ledger WHERE session_id = :s AND at > :at"
            " ORDER BY id",
            {"s": session_id, "at": at},
        )
        return [
            ChargedCall(
                str(r[0]),
                int(r[1]),
                int(r[2]),
                int(r[3]),
                int(r[4]),
                nano_to_usd(int(r[5])),
                bool(r[6]),
                tuple(filter(None, (r[7] or "").split(","))),
                bool(r[8]),
            )
            for r in rows
        ]

    async def usage(self, guild_id: int | None, user_id: int, role_ids: Iterable[int] = ()) -> UsageReport:
        now = to_utc(self.clock())
        limits = await self.limits_for(guild_id, role_ids)
        snap = await self.snapshot(_gid(guild_id), user_id, now)
        # A new session's request held while it waits for a run slot counts as the checks count it: /usage
        # said "1 left" while /research refused, "you've made 1 of 1 requests today".
        snap.day_requests += self._holding(_gid(guild_id), user_id, None)
        items = [
            LimitUsage(n, snap.used(n), limits.get(n), resets_at(n, now), snap.reserved(n)) for n in _ORDER
        ]
        if cap := self.all_servers_per_day:
            used = await all_servers.used_today(self.db.fetchall, user_id, now) + self._holding(
                None, user_id, None
            )
            items.append(LimitUsage(ALL_SERVERS_REQUESTS, used, cap, resets_at(ALL_SERVERS_REQUESTS, now)))
        # The server budget line counts every member's calls: another's unpriced ones make it a lower
        # bound too (read "$0.00 of $100.00" while a member's self-hosted model ran all month).
        est = await self.db.fetchone(_ESTIMATED_SQL, self.period_params(_gid(guild_id), user_id, now, None))
        return UsageReport(
            _gid(guild_id),
            user_id,
            limits,
            items,
            snap.month_unknown,
            int(est["server_unknown"] or 0),
            int(est["day_est"] or 0),
            int(est["month_est"] or 0),
            int(est["server_est"] or 0),
        )

    async def server_usage(self, guild_id: int, *, top: int = 10) -> ServerUsage:
        now = to_utc(self.clock())
        month = month_key(now)
        limits = await self.limits_for(guild_id)
        total = await self.db.fetchone(
            "SELECT tokens, cost_nusd, unknown_cost_calls, estimated_calls FROM guild_monthly"
            " WHERE guild_id = ? AND month = ?",
            (guild_id, month),
        )
        users = await self.db.fetchall(
            "SELECT user_id, requests, tokens, cost_nusd, unknown_cost_calls, estimated_calls FROM usage_monthly"
            " WHERE guild_id = ? AND month = ? ORDER BY cost_nusd DESC, tokens DESC, requests DESC LIMIT ?",
            (guild_id, month, top),
        )
        models = await self.db.fetchall(
            "SELECT provider, model, calls, prompt_tokens, completion_tokens, cached_tokens, cost_nusd,"
            " unknown_cost_calls, reasoning_tokens, estimated_calls FROM model_monthly"
            " WHERE guild_id = ? AND month = ?"
            " ORDER BY cost_nusd DESC, prompt_tokens + completion_tokens DESC",
            (guild_id, month),
        )
        return ServerUsage(
            guild_id=guild_id,
            month=month,
            tokens=int(total["tokens"]) if total else 0,
            cost_usd=nano_to_usd(total["cost_nusd"]) if total else 0.0,
            unknown_cost_calls=int(total["unknown_cost_calls"]) if total else 0,
            budget_usd=limits.guild_budget_per_month_usd,
            resets_at=next_month(now),
            top_users=[UserTotal(r[0], r[1], r[2], nano_to_usd(r[3]), r[4], r[5]) for r in users],
            models=[
                ModelTotal(r[0], r[1], r[2], r[3], r[4], r[5], nano_to_usd(r[6]), r[7], r[8], r[9])
                for r in models
            ],
            estimated_calls=int(total["estimated_calls"]) if total else 0,
        )
