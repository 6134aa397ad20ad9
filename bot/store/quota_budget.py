"""One run's :class:`agent.budget.Budget`: a reservation held around each model call, then settled with
what the call really used (see :mod:`bot.store.quotas` for why this cannot pass a limit under
concurrency).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any

from agent.budget import BudgetExceeded
from agent.events import Cost, Usage
from bot.limits import (
    GUILD_BUDGET,
    day_key,
    exhausted_message,
    month_key,
    nano_to_usd,
    to_utc,
    usd_to_nano,
)
from bot.store.db import StoreError
from bot.store.usage_reports import _gid

if TYPE_CHECKING:
    from bot.store.quotas import QuotaStore

__all__ = ["QuotaBudget", "nano_limit"]


def nano_limit(value: float | None) -> int | None:
    return None if value is None else usd_to_nano(value)


class QuotaBudget:
    """``agent.budget.Budget`` for one (server, user, roles, session). The token is the reservation id."""

    def __init__(
        self,
        store: QuotaStore,
        guild_id: int | None,
        user_id: int,
        role_ids: tuple[int, ...],
        session_id: str | None,
    ) -> None:
        self.store = store
        self.guild_id = guild_id
        self.user_id = user_id
        self.role_ids = role_ids
        self.session_id = session_id

    async def reserve(self, model: str, estimate: Usage, estimated_cost: float | None) -> int:
        """Hold ``estimate`` tokens and ``estimated_cost`` USD, or raise ``BudgetExceeded`` naming the limit.

        If the caller is cancelled while waiting, the reservation is released for it.
        """
        store = self.store
        tokens = max(0, estimate.total_tokens)
        cost = max(0, usd_to_nano(estimated_cost or 0.0))
        g = _gid(self.guild_id)
        limits = await store.limits_for(self.guild_id, self.role_ids)
        usd = nano_to_usd(cost)
        needs = ((GUILD_BUDGET, usd), ("cost_per_month_usd", usd), ("tokens_per_day", tokens))
        for _ in range(3):
            now = to_utc(store.clock())
            rid = await store.ledger.new_id()
            params = store.period_params(g, self.user_id, now, self.session_id)
            params.update(
                id=rid,
                model=model,
                tokens=tokens,
                cost=cost,
                now=now.timestamp(),
                tok_lim=limits.tokens_per_day,
                cost_lim=nano_limit(limits.cost_per_month_usd),
                guild_lim=nano_limit(limits.guild_budget_per_month_usd),
            )
            fut = store.ledger.submit("reserve", params)
            assert fut is not None
            try:
                held = await fut
            except asyncio.CancelledError:
                store.ledger.submit("release", (rid,), wait=False)
                raise
            if held:
                return rid
            # Refused: read the counters once more to say which limit (the rare path, not the hot one).
            snap = await store.snapshot(g, self.user_id, now)
            for name, need in needs:
                cap = limits.get(name)
                if cap is not None and snap.used(name) + need > cap:
                    raise BudgetExceeded(exhausted_message(name, snap.used(name), cap, now, need=need))
            # The room appeared between the two reads (a settle freed it): try again.
        # Three refusals in a row, each followed by a settle freeing room before the re-read: the limit is
        # being hit by concurrent runs. Name the one closest to full, as of the last read (it did refuse).
        checks = [
            (name, cap, need) for name, need in needs if (cap := limits.get(name)) is not None and cap > 0
        ]
        if checks:
            name, cap, need = max(checks, key=lambda c: (snap.used(c[0]) + c[2]) / c[1])
            raise BudgetExceeded(exhausted_message(name, snap.used(name), cap, now, need=need))
        raise BudgetExceeded("The usage limits are too busy to check right now; try again in a moment.")

    async def settle(self, token: Any, model: str, provider: str, usage: Usage, cost: Cost) -> None:
        """Replace the reservation with real usage, atomically.

        Queued writes finish even if the caller is cancelled, and settling the same token twice counts once.
        ``token=None`` records usage that had no reservation.
        """
        rid = None if token is None else int(token)
        nusd = max(0, usd_to_nano(cost.usd))
        ledger = self.store.ledger
        if usage.total_tokens == 0 and nusd == 0 and cost.known:
            fut = ledger.submit("release", (rid,)) if rid is not None else None
        else:
            now = to_utc(self.store.clock())
            params = (
                rid,
                _gid(self.guild_id),
                self.user_id,
                self.session_id,
                provider,
                model,
                day_key(now),
                month_key(now),
                max(0, usage.prompt_tokens),
                max(0, usage.completion_tokens),
                max(0, usage.cached_tokens),
                max(0, usage.reasoning_tokens),
                nusd,
                int(cost.known),
                ",".join(cost.unknown_models) or None,
                now.timestamp(),
                int(usage.estimated),  # counted locally: /usage marks what it is part of as estimated
            )
            fut = ledger.submit("settle", params)
        if fut is None:
            return
        try:
            await fut
        except sqlite3.IntegrityError as e:
            raise StoreError(f"reservation {rid} was already settled; settle each reservation once") from e
