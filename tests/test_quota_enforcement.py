"""Quota enforcement on a real SQLite file: concurrency, resets, roles, reservations, reports."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from agent.budget import BudgetExceeded
from agent.events import Cost, Usage
from bot.limits import Limits
from bot.store import (
    Database,
    GuildSettingsStore,
    QuotaStore,
    SettingsSchema,
    StoreError,
    open_database,
)
from tests.conftest import StoreTarget

G, USER, OTHER = 1, 100, 200
UNLIMITED = Limits.unlimited()


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
async def db(store_target: StoreTarget) -> AsyncIterator[Database]:
    """Every test here runs on SQLite and on PostgreSQL (the store contract)."""
    async with await open_database(await store_target()) as database:
        yield database  # type: ignore[misc]


def limits(**kw: float | None) -> Limits:
    """Everything unlimited except what the test names."""
    return replace(UNLIMITED, **kw)


async def ledger_tokens(db: Database, user: int = USER) -> int:
    row = await db.fetchone(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage_ledger WHERE user_id = ?",
        (user,),
    )
    return int(row[0])  # type: ignore[index]


async def test_fifty_concurrent_charges_never_pass_the_limit_and_lose_nothing(
    db: Database, clock: Clock
) -> None:
    store = QuotaStore(db, None, limits(tokens_per_day=10_000, cost_per_month_usd=1.0), clock=clock)
    rng = random.Random(4)
    settled: list[int] = []
    refused: list[str] = []

    async def step(i: int) -> None:
        budget = store.budget(G, USER, (), f"s{i % 7}")
        try:
            token = await budget.reserve("m", Usage(300, 200), 0.03)
        except BudgetExceeded as e:
            refused.append(str(e))
            return
        await asyncio.sleep(rng.random() / 200)  # the model call
        real = Usage(rng.randint(100, 300), rng.randint(0, 200))  # at most the estimate
        await budget.settle(token, "m", "openai", real, Cost(0.0001 * real.total_tokens / 10))
        settled.append(real.total_tokens)

    await asyncio.gather(*(step(i) for i in range(50)))

    report = await store.usage(G, USER)
    assert report.item("tokens_per_day").used == sum(settled) == await ledger_tokens(db)
    assert sum(settled) <= 10_000
    assert refused, "50 steps of up to 500 tokens must hit a 10,000-token day"
    assert 20 <= len(settled) < 50
    assert "daily token limit" in refused[0].lower() and "<t:1741651200:R>" in refused[0]
    row = await db.fetchone("SELECT COUNT(*) FROM reservations")
    assert row[0] == 0  # type: ignore[index]  # every reservation was settled or never held


async def test_concurrent_charges_by_many_users_respect_the_server_budget(db: Database, clock: Clock) -> None:
    store = QuotaStore(db, None, limits(guild_budget_per_month_usd=0.50), clock=clock)

    async def step(user: int) -> float:
        budget = store.budget(G, user)
        try:
            token = await budget.reserve("m", Usage(10, 10), 0.04)
        except BudgetExceeded as e:
            assert "Not enough of this server's monthly budget is left" in str(e)
            return 0.0
        await asyncio.sleep(0)
        await budget.settle(token, "m", "openai", Usage(10, 10), Cost(0.04))
        return 0.04

    spent = await asyncio.gather(*(step(u) for u in range(40)))
    server = await store.server_usage(G)
    assert server.cost_usd == pytest.approx(sum(spent)) and server.cost_usd <= 0.50 + 1e-9
    assert sum(1 for s in spent if s) == 12  # 12 x $0.04 = $0.48; a 13th would pass $0.50


async def test_begin_session_counts_requests_and_concurrency_atomically(db: Database, clock: Clock) -> None:
    store = QuotaStore(db, None, limits(requests_per_day=5, concurrent_sessions=2), clock=clock)
    decisions = await asyncio.gather(*(store.begin_session(G, USER, (), f"s{i}") for i in range(6)))
    assert [d.allowed for d in decisions].count(True) == 2
    refused = next(d for d in decisions if not d.allowed)
    assert refused.limit == "concurrent_sessions" and refused.resets_at is None
    assert (
        "Too many sessions at once: you have 2 running or waiting for a free slot (limit 2)"
        in refused.message
    )

    # Which two won is up to the database's scheduling (PostgreSQL orders concurrent transactions freely).
    running = [f"s{i}" for i, d in enumerate(decisions) if d.allowed]
    waiting = [f"s{i}" for i, d in enumerate(decisions) if not d.allowed]
    assert (await store.begin_session(G, USER, (), running[0])).allowed  # a follow-up in a running session
    for sid in running:
        await store.end_session(sid)
    assert (await store.begin_session(G, USER, (), waiting[0])).allowed
    await store.end_session(waiting[0])
    assert (await store.begin_session(G, USER, (), waiting[1])).allowed  # request 5 of 5
    await store.end_session(waiting[1])

    decision = await store.check(G, USER)
    assert (decision.allowed, decision.limit) == (False, "requests_per_day")
    assert decision.resets_at == datetime(2025, 3, 11, tzinfo=UTC)
    assert "5 of 5 requests today" in decision.message and "<t:1741651200:R>" in decision.message
    assert (await store.check(G, OTHER)).allowed  # another user is not affected
    assert (await store.check(G + 1, USER)).allowed  # nor the same user on another server


async def test_daily_limits_reset_at_utc_midnight_and_monthly_ones_on_the_first(
    db: Database, clock: Clock
) -> None:
    clock.now = datetime(2025, 3, 31, 23, 30, tzinfo=UTC)
    store = QuotaStore(db, None, limits(tokens_per_day=1000, cost_per_month_usd=0.10), clock=clock)
    budget = store.budget(G, USER)
    token = await budget.reserve("m", Usage(900, 0), 0.01)
    await budget.settle(token, "m", "openai", Usage(900, 0), Cost(0.01))
    with pytest.raises(BudgetExceeded, match="daily token limit is left"):
        await budget.reserve("m", Usage(200, 0), 0.01)

    clock.advance(minutes=31)  # 00:01 on April 1st: new day and new month
    token = await budget.reserve("m", Usage(900, 0), 0.09)
    await budget.settle(token, "m", "openai", Usage(900, 0), Cost(0.09))
    with pytest.raises(BudgetExceeded) as err:
        await budget.reserve("m", Usage(50, 0), 0.02)
    assert "it costs about $0.02, and $0.01 of $0.10 is left this month" in str(err.value)
    assert "<t:1746057600:R>" in str(err.value)  # May 1st 00:00 UTC

    clock.advance(days=1)  # tokens are back, the month's money is not
    with pytest.raises(BudgetExceeded, match="monthly spending limit"):
        await budget.reserve("m", Usage(50, 0), 0.02)
    token = await budget.reserve("m", Usage(50, 0), 0.001)
    await budget.settle(token, "m", "openai", Usage(50, 0), Cost(0.001))
    report = await store.usage(G, USER)
    assert report.item("tokens_per_day").used == 50
    assert report.item("cost_per_month_usd").used == pytest.approx(0.091)


async def test_role_overrides_give_the_most_generous_limit(db: Database, clock: Clock) -> None:
    settings = GuildSettingsStore(db, SettingsSchema(["m"], []))
    store = QuotaStore(db, settings, limits(requests_per_day=1), clock=clock)
    await settings.set(G, 9, "role_limit.10.requests_per_day", 3)
    await settings.set(G, 9, "role_limit.11.requests_per_day", "unlimited")
    await settings.set(G, 9, "role_limit.12.requests_per_day", 2)
    await settings.set(G + 1, 9, "limit.requests_per_day", 4)

    async def allowed_requests(guild: int, roles: tuple[int, ...], user: int) -> int:
        n = 0
        while n < 10 and (await store.begin_session(guild, user, roles, f"{guild}-{user}-{n}")).allowed:
            await store.end_session(f"{guild}-{user}-{n}")
            n += 1
        return n

    assert await allowed_requests(G, (), 1) == 1  # env default
    assert await allowed_requests(G, (10,), 2) == 3
    assert await allowed_requests(G, (12, 10), 3) == 3  # the larger of 2 and 3
    assert await allowed_requests(G, (10, 11), 4) == 10  # unlimited wins
    assert await allowed_requests(G + 1, (10,), 5) == 4  # roles of another server do not apply


async def test_a_reservation_left_by_a_dead_run_expires_after_an_hour(db: Database, clock: Clock) -> None:
    store = QuotaStore(db, None, limits(tokens_per_day=1000), clock=clock)
    await store.budget(G, USER).reserve("m", Usage(800, 0), None)  # never settled
    with pytest.raises(BudgetExceeded):
        await store.budget(G, USER).reserve("m", Usage(300, 0), None)
    clock.advance(minutes=61)
    await store.budget(G, USER).reserve("m", Usage(300, 0), None)


async def test_unknown_prices_count_tokens_and_are_reported_as_lower_bounds(
    db: Database, clock: Clock
) -> None:
    store = QuotaStore(db, None, UNLIMITED, clock=clock)
    budget = store.budget(G, USER, (), "s")
    t1 = await budget.reserve("local-llama", Usage(1000, 500), None)
    await budget.settle(t1, "local-llama", "ollama", Usage(1000, 500), Cost(0.0, ("local-llama",)))
    t2 = await budget.reserve("gpt-4o-mini", Usage(100, 50), 0.001)
    await budget.settle(t2, "gpt-4o-mini", "openai", Usage(100, 50, cached_tokens=40), Cost(0.0005))
    t3 = await budget.reserve("gpt-4o-mini", Usage(100, 50), 0.001)
    await budget.settle(t3, "gpt-4o-mini", "openai", Usage(), Cost())  # the call failed: nothing used

    report = await store.usage(G, USER)
    assert report.unknown_cost_calls == 1
    assert report.item("tokens_per_day").used == 1650
    server = await store.server_usage(G)
    assert (server.tokens, server.unknown_cost_calls) == (1650, 1)
    assert server.cost_usd == pytest.approx(0.0005)
    by_model = {(m.provider, m.model): m for m in server.models}
    assert by_model[("ollama", "local-llama")].unknown_cost_calls == 1
    mini = by_model[("openai", "gpt-4o-mini")]
    assert (mini.calls, mini.prompt_tokens, mini.completion_tokens, mini.cached_tokens) == (1, 100, 50, 40)
    row = await db.fetchone("SELECT cost_known, unknown_models FROM usage_ledger WHERE model = 'local-llama'")
    assert tuple(row) == (0, "local-llama")  # type: ignore[arg-type]


async def test_settling_twice_is_an_error_not_a_double_charge(db: Database, clock: Clock) -> None:
    store = QuotaStore(db, None, UNLIMITED, clock=clock)
    budget = store.budget(G, USER)
    token = await budget.reserve("m", Usage(10, 10), None)
    await budget.settle(token, "m", "p", Usage(10, 10), Cost(0.001))
    with pytest.raises(StoreError, match="already settled"):
        await budget.settle(token, "m", "p", Usage(10, 10), Cost(0.001))
    # and inside a busy batch, only the faulty call fails
    tokens = [await budget.reserve("m", Usage(1, 1), None) for _ in range(5)]
    outcomes = await asyncio.gather(
        *(budget.settle(t, "m", "p", Usage(1, 1), Cost(0)) for t in tokens),
        budget.settle(token, "m", "p", Usage(10, 10), Cost(0.001)),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [type(None)] * 5 + [StoreError]
    assert await ledger_tokens(db) == 30


async def test_a_cancelled_reservation_is_released(db: Database, clock: Clock) -> None:
    store = QuotaStore(db, None, limits(tokens_per_day=1000), clock=clock)
    blocker = asyncio.Event()

    async def hold_writer() -> None:
        """Keep the writer busy, so the reservation is still being written when it is cancelled."""
        if db.backend == "sqlite":
            async with db.lock:
                await blocker.wait()
            return
        # PostgreSQL: the batch waits inside quota_apply for this server's lock, as behind another process
        async with db.pool.acquire() as conn, conn.transaction():  # type: ignore[attr-defined]
            await conn.execute("SELECT pg_advisory_xact_lock(1903521652, hashint8($1::bigint))", G)
            await blocker.wait()

    await store.ledger.new_id()  # seeded: reserve() now queues its write without any other wait
    holder = asyncio.create_task(hold_writer())
    await asyncio.sleep(0)
    task = asyncio.create_task(store.budget(G, USER).reserve("m", Usage(900, 0), None))
    await asyncio.sleep(0.01)
    task.cancel()
    blocker.set()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.flush()
    assert store.ledger.operations == 2  # the reservation was written, then released
    assert (await store.usage(G, USER)).item("tokens_per_day").used == 0
    await store.budget(G, USER).reserve("m", Usage(900, 0), None)  # the room is free again


async def test_usage_reports_for_the_caller_and_the_server(db: Database, clock: Clock) -> None:
    store = QuotaStore(db, None, Limits(10, 10_000, 1.0, 2, 50.0), clock=clock)
    for user, n in ((USER, 3), (OTHER, 1), (300, 2)):
        for i in range(n):
            assert (await store.begin_session(G, user, (), f"{user}-{i}")).allowed
            budget = store.budget(G, user, (), f"{user}-{i}")
            token = await budget.reserve("gpt-4o", Usage(400, 100), 0.01)
            await budget.settle(token, "gpt-4o", "openai", Usage(400, 100), Cost(0.01 * (user / 100)))
            await store.end_session(f"{user}-{i}")

    mine = await store.usage(G, USER)
    tokens = mine.item("tokens_per_day")
    assert (tokens.used, tokens.limit, tokens.remaining) == (1500, 10_000, 8500)
    assert tokens.resets_at == datetime(2025, 3, 11, tzinfo=UTC)
    assert mine.item("requests_per_day").used == 3
    assert mine.item("cost_per_month_usd").used == pytest.approx(0.03)
    assert mine.item("cost_per_month_usd").resets_at == datetime(2025, 4, 1, tzinfo=UTC)
    assert mine.item("guild_budget_per_month_usd").used == pytest.approx(0.03 + 0.02 + 0.06)

    server = await store.server_usage(G)
    assert [u.user_id for u in server.top_users] == [300, USER, OTHER]  # by cost this month
    assert [(u.requests, u.tokens) for u in server.top_users] == [(2, 1000), (3, 1500), (1, 500)]
    (model,) = server.models
    assert (model.provider, model.model, model.calls, model.cost_usd) == (
        "openai",
        "gpt-4o",
        6,
        pytest.approx(0.11),
    )
    assert (server.budget_usd, server.resets_at) == (50.0, datetime(2025, 4, 1, tzinfo=UTC))


async def test_reservations_queued_together_fill_the_limit_exactly_and_no_further(
    db: Database, clock: Clock
) -> None:
    store = QuotaStore(db, None, limits(tokens_per_day=1000, guild_budget_per_month_usd=1.0), clock=clock)
    budget = store.budget(G, USER)
    first = await asyncio.gather(*(budget.reserve("m", Usage(100, 0), 0.1) for _ in range(10)))
    assert len(set(first)) == 10  # ten of 100 tokens and $0.10: both limits exactly full, all held
    outcomes = await asyncio.gather(
        budget.reserve("m", Usage(1, 0), None),
        store.budget(G, OTHER).reserve("m", Usage(1, 0), 0.01),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [BudgetExceeded, BudgetExceeded]
    assert "Daily token limit reached" in str(outcomes[0]) and "monthly budget" in str(outcomes[1])
    # settling frees what the real usage did not take; reserves queued in the same moment share it
    await asyncio.gather(*(budget.settle(t, "m", "p", Usage(50, 0), Cost(0.05)) for t in first))
    tokens_only = await asyncio.gather(
        *(budget.reserve("m", Usage(100, 0), None) for _ in range(6)), return_exceptions=True
    )
    assert sorted(type(o).__name__ for o in tokens_only) == ["BudgetExceeded"] + ["int"] * 5
    budget_only = await asyncio.gather(
        *(store.budget(G, 1000 + u).reserve("m", Usage(1, 0), 0.1) for u in range(6)), return_exceptions=True
    )
    assert sorted(type(o).__name__ for o in budget_only) == ["BudgetExceeded"] + ["int"] * 5


async def test_settles_written_together_count_each_call_in_every_counter(db: Database, clock: Clock) -> None:
    store = QuotaStore(db, None, UNLIMITED, clock=clock)
    calls = [
        (user, model, Usage(100, 40, 10, 1, reasoning))
        for user in (USER, OTHER)
        for model, reasoning in (("a", 0), ("b", 25))
    ]
    tokens = [await store.budget(G, user).reserve(model, usage, 0.01) for user, model, usage in calls]
    await asyncio.gather(
        *(
            store.budget(G, user).settle(t, model, "p", usage, Cost(0.01))
            for t, (user, model, usage) in zip(tokens, calls, strict=True)
        ),
        store.budget(G, USER).settle(None, "b", "p", Usage(5, 5), Cost(0.0, ("b",))),
    )
    await store.flush()
    assert (await store.usage(G, USER)).item("tokens_per_day").used == 2 * 140 + 10
    server = await store.server_usage(G)
    assert server.tokens == 4 * 140 + 10 and server.unknown_cost_calls == 1
    by_model = {
        m.model: (m.calls, m.prompt_tokens, m.completion_tokens, m.reasoning_tokens) for m in server.models
    }
    assert by_model == {"a": (2, 200, 80, 0), "b": (3, 205, 85, 50)}
    row = await db.fetchone("SELECT COUNT(*) FROM reservations")
    assert row[0] == 0  # type: ignore[index]
