"""Quota policy without SQL: which limits apply to whom, the UTC periods they count in, and the words
a user reads when one is exhausted.

Kept apart from :mod:`bot.store.quotas` so the rules (most generous role wins, 0 means unlimited in the
environment, days and months in UTC) can be read and tested in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import EllipsisType

from pydantic import Field, ValidationInfo, field_validator

from agent.config import EnvSettings
from agent.events import usd_text

USER_LIMITS = ("requests_per_day", "tokens_per_day", "cost_per_month_usd", "concurrent_sessions")
"""Limits that apply per user per server and that server and role overrides may change."""

GUILD_BUDGET = "guild_budget_per_month_usd"
"""The server-wide monthly ceiling on top of every user's own limits."""
ALL_SERVERS_REQUESTS = "requests_per_day_all_servers"
"""QUOTA_REQUESTS_PER_DAY_ALL_SERVERS in /usage: one user's requests today in every server together."""

LimitValue = int | float | None
"""``None`` is unlimited."""

# --- bounds (issue 14.11) -------------------------------------------------------------------------
# Every limit is finite and stated: 1e300 USD or tokens was accepted and then broke every turn on the
# server (an OverflowError turning it into integer nano-dollars or an SQLite integer), and 1e-7 USD was
# rounded to a stored 0. The ceilings leave sums of a month's usage far inside SQLite's 64-bit integers
# (1e6 USD is 1e15 nano-dollars); the money floor is the smallest amount the bot displays (format_usd).
LIMIT_BOUNDS: dict[str, tuple[float, float]] = {
    "requests_per_day": (1, 1_000_000),
    "tokens_per_day": (1, 1_000_000_000_000),
    "cost_per_month_usd": (0.0001, 1_000_000),
    "concurrent_sessions": (1, 1_000),
    GUILD_BUDGET: (0.0001, 1_000_000),
}


def bounds_text(limit: str) -> str:
    """``'from $0.0001 to $1,000,000'`` or ``'from 1 to 1,000'``: the range, as a refusal states it."""
    lo, hi = LIMIT_BOUNDS[limit]
    if limit.endswith("_usd"):
        return f"from ${lo:g} to ${hi:,.0f}"
    return f"from {lo:,.0f} to {hi:,.0f}"


def in_bounds(limit: str, value: object) -> bool:
    """Whether a stored or parsed limit value may be used (``None`` is unlimited, always fine)."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    lo, hi = LIMIT_BOUNDS[limit]
    return lo <= value <= hi


Clock = Callable[[], datetime]

NANO = 1_000_000_000
"""Money is stored as integer nano-dollars so sums are exact and no settled charge is lost to rounding."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force for one user on one server; ``None`` means unlimited."""

    requests_per_day: int | None = 50
    tokens_per_day: int | None = 200_000
    cost_per_month_usd: float | None = 5.0
    concurrent_sessions: int | None = 2
    guild_budget_per_month_usd: float | None = 100.0

    def get(self, name: str) -> LimitValue:
        return getattr(self, name)

    @classmethod
    def unlimited(cls) -> Limits:
        return cls(None, None, None, None, None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """For tests and library users: ``env`` (the process environment when None) parsed as
        :class:`~bot.config.QuotaEnv`; the bot uses :meth:`from_settings` on its parsed settings."""
        from agent.config import parse_settings

        return cls.from_settings(parse_settings(QuotaEnv, None if env is None else dict(env)))

    @classmethod
    def from_settings(cls, q: QuotaEnv) -> Limits:
        """The defaults from the parsed settings; ``0`` means unlimited."""
        return cls(**{k: getattr(q, k) or None for k in LIMIT_BOUNDS})


def resolve_limits(
    defaults: Limits,
    server_overrides: Mapping[str, LimitValue],
    role_overrides: Mapping[int, Mapping[str, LimitValue]],
    role_ids: Iterable[int],
    guild_budget: LimitValue | EllipsisType = ...,
) -> Limits:
    """The limits for one member.

    Order per limit: a role override if any of the member's roles has one (several roles: the most
    generous), else the server override, else the environment default. A role override replaces the
    server value even when it is lower, so admins can restrict a role as well as widen it.
    ``guild_budget`` (``...`` = keep the default) replaces the server-wide budget.
    """
    values = {name: server_overrides[name] for name in USER_LIMITS if name in server_overrides}
    roles = [role_overrides[r] for r in dict.fromkeys(role_ids) if r in role_overrides]
    for name in USER_LIMITS:
        granted = [r[name] for r in roles if name in r]
        if granted:  # unlimited beats any number
            values[name] = None if None in granted else max(granted)
    if guild_budget is not ...:
        values[GUILD_BUDGET] = guild_budget  # type: ignore[assignment]
    return replace(defaults, **values)


# --- periods (always UTC) -------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_utc(dt: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so an injected test clock may omit the zone."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# isoformat, not strftime: the quota hot path makes four of these per model call, and strftime took
# 5.2 us each against 0.25 (timeit, 2 shared cores), a fifth of the client CPU of a reserve+settle pair
def day_key(now: datetime) -> str:
    return to_utc(now).date().isoformat()


def month_key(now: datetime) -> str:
    return to_utc(now).date().isoformat()[:7]


def next_day(now: datetime) -> datetime:
    """Midnight UTC after ``now``: when daily limits reset."""
    now = to_utc(now)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


def next_month(now: datetime) -> datetime:
    """The first of the next month, 00:00 UTC: when monthly limits reset."""
    now = to_utc(now)
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


def discord_timestamp(dt: datetime, style: str = "R") -> str:
    """``<t:UNIX:R>`` renders in each reader's own time zone ("in 5 hours")."""
    return f"<t:{int(to_utc(dt).timestamp())}:{style}>"


# --- money ----------------------------------------------------------------------------------------


def usd_to_nano(usd: float) -> int:
    return round(usd * NANO)


def nano_to_usd(nano: int) -> float:
    return nano / NANO


def format_usd(usd: float) -> str:
    """Cents for ordinary amounts, more digits for the fractions of a cent small models cost."""
    if usd != 0 and abs(usd) < 0.01:
        return usd_text(usd)
    return f"${usd:,.2f}"


# --- what the user reads --------------------------------------------------------------------------

LIMIT_LABELS: dict[str, str] = {
    "requests_per_day": "requests per day",
    "tokens_per_day": "tokens per day",
    "cost_per_month_usd": "spending per month",
    "concurrent_sessions": "sessions at once",
    GUILD_BUDGET: "server budget per month",
    ALL_SERVERS_REQUESTS: "requests per day in all servers",
}


def resets_at(limit: str, now: datetime) -> datetime | None:
    """When ``limit`` starts counting from zero again; ``None`` for the concurrency limit."""
    if limit in ("requests_per_day", "tokens_per_day", ALL_SERVERS_REQUESTS):
        return next_day(now)
    if limit in ("cost_per_month_usd", GUILD_BUDGET):
        return next_month(now)
    return None


_EXHAUSTED = {
    "requests_per_day": "Daily request limit reached: you've made {used} of {cap} requests today",
    "tokens_per_day": "Daily token limit reached: {used} of {cap} tokens used or reserved today",
    "cost_per_month_usd": "Monthly spending limit reached: {used} of {cap} used this month",
    GUILD_BUDGET: "This server's monthly budget is used up: {used} of {cap}",
    "concurrent_sessions": "Too many sessions at once: you have {used} running or waiting for a free "
    "slot (limit {cap}). Wait for one to finish, or stop one",
}

_NO_ROOM = {
    "tokens_per_day": "Not enough of the daily token limit is left for the next step: it needs about {need} "
    "tokens, and {left} of {cap} are left today",
    "cost_per_month_usd": "Not enough of the monthly spending limit is left for the next step: it costs "
    "about {need}, and {left} of {cap} is left this month",
    GUILD_BUDGET: "Not enough of this server's monthly budget is left for the next step: it costs about "
    "{need}, and {left} of {cap} is left",
}


def exhausted_message(limit: str, used: float, cap: float, now: datetime, *, need: float = 0) -> str:
    """A sentence naming the exhausted limit, how much is used, and when it resets.

    ``need`` is the size of the step being refused (for a reservation), shown when it is what tips over.
    """
    if limit not in _EXHAUSTED:
        raise ValueError(f"unknown limit {limit!r}; known: {', '.join(LIMIT_LABELS)}")
    money = limit.endswith("_usd")
    amount = format_usd if money else (lambda v: f"{int(v):,}")
    if need and used < cap and limit in _NO_ROOM:
        # Not "reached": a member told "limit reached: 1,800 of 10,000" could not see why; what they
        # need to know is that the step is larger than what is left.
        head = _NO_ROOM[limit].format(need=amount(need), left=amount(round(cap - used, 9)), cap=amount(cap))
    else:
        head = _EXHAUSTED[limit].format(used=amount(used), cap=amount(cap))
        if need and limit in _NO_ROOM:
            head += f", and the next step {'costs' if money else 'needs'} about {amount(need)}"
    reset = resets_at(limit, now)
    return head + "." + (f" It resets {discord_timestamp(reset)}." if reset else "")


class QuotaEnv(EnvSettings):
    """Default quotas per user per server (``bot.limits``); 0 or empty = unlimited."""

    EMPTY = dict.fromkeys(LIMIT_BOUNDS, 0)  # read by EnvSettings: an empty value means 0 (unlimited)

    requests_per_day: int = Field(50, alias="QUOTA_REQUESTS_PER_DAY", ge=0)
    tokens_per_day: int = Field(200_000, alias="QUOTA_TOKENS_PER_DAY", ge=0)
    cost_per_month_usd: float = Field(5.0, alias="QUOTA_COST_PER_MONTH_USD", ge=0)
    concurrent_sessions: int = Field(2, alias="QUOTA_CONCURRENT_SESSIONS", ge=0)
    guild_budget_per_month_usd: float = Field(100.0, alias="GUILD_BUDGET_PER_MONTH_USD", ge=0)

    @field_validator(*LIMIT_BOUNDS)
    @classmethod
    def _bounded(cls, v: float, info: ValidationInfo) -> float:
        """Finite, stated bounds (issue 14.11): 1e300 broke every turn, 1e-7 was stored as 0."""
        if v != 0 and not in_bounds(str(info.field_name), v):
            raise ValueError(f"must be {bounds_text(str(info.field_name))}, or 0 for unlimited")
        return v
