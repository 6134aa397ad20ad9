"""Model calls a killed process left in flight, charged by estimate at the next start.

A reservation still held at start-up belongs to a call the previous process had sent (or was about to
send) when it died without settling it: kill -9, the OOM killer, a power cut. The provider billed that
call's prompt, so dropping the hold (as start-up did) charged nothing: crash after crash spent a server's
money past its token and money limits, and the resumed turn's footer and ``/usage`` both left it out.
Each such hold is now settled as an estimated call: the prompt part of what it held (the hold is the
prompt as :func:`agent.models.tokens.estimate_prompt` counts it plus the answer cap, so the cap is taken
off again), no answer, at the model's price; the same rule a Stop's cut call follows, less the words
streamed, which died with the process. The settle lands after the turn's last checkpoint, so the
resumed turn's footer counts it (:meth:`bot.store.usage_reports.UsageReports.charged_after`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from agent.events import Cost, Usage
from agent.models.prices import PriceTable
from agent.models.tokens import DEFAULT_MAX_TOKENS, completion_cap
from bot.limits import day_key, month_key, to_utc, usd_to_nano

if TYPE_CHECKING:
    from agent.models.router import Router
    from bot.store.ledger import LedgerWriter

__all__ = ["PromptPart", "charge_left_calls", "prompt_part"]

log = structlog.get_logger("bot.store.interrupted")

PromptPart = Callable[[str, int], tuple[str, Usage, Cost]]
"""(model, tokens held) → (provider, the prompt part as estimated usage, its cost)."""


def prompt_part(router: Router, prices: PriceTable, max_tokens: int | None) -> PromptPart:
    """The rule a hold was made by (:class:`agent.run_state.Metered`), undone: the answer cap a call
    to ``model`` is held for (``AGENT_MAX_TOKENS``, else the model's default cap) comes off the hold."""
    built = {m.name: m for t in router.tiers for s in router.tiers[t] if (m := router.model(s))}

    def part(model: str, held: int) -> tuple[str, Usage, Cost]:
        m = built.get(model)
        default = getattr(m, "default_max_tokens", None) if m else None
        if m is None and prices.lookup(model) is not None:  # a server's own tier: priced, so capped
            default = DEFAULT_MAX_TOKENS
        prompt = max(0, held - completion_cap(model, max_tokens or default))
        usage = Usage(prompt, 0, 0, 1, estimated=True)
        return (m.provider if m else "unknown"), usage, prices.priced(model, usage, model)[1]

    return part


async def charge_left_calls(
    ledger: LedgerWriter, rows: list[Any], part: PromptPart, now: datetime
) -> tuple[int, int]:
    """Settle each left-behind hold (id, guild, user, session, model, tokens, cost) as its prompt part.
    Returns (calls charged, tokens charged); a hold of nothing to charge is released."""
    now = to_utc(now)
    charged, tokens = 0, 0
    for rid, g, user, session, model, held, held_nusd in rows:
        provider, usage, cost = part(str(model), int(held))
        nusd = min(int(held_nusd), max(0, usd_to_nano(cost.usd)))  # never more than it held
        if usage.prompt_tokens == 0 and nusd == 0:
            ledger.submit("release", (rid,), wait=False)
            continue
        charged, tokens = charged + 1, tokens + usage.prompt_tokens
        params = (
            rid, g, user, session, provider, str(model), day_key(now), month_key(now),
            usage.prompt_tokens, 0, 0, 0, nusd, int(cost.known), ",".join(cost.unknown_models) or None,
            now.timestamp(), 1,
        )  # fmt: skip
        ledger.submit("settle", params, wait=False)
    await ledger.flush()
    if charged:
        log.warning(
            "interrupted_calls_charged",
            calls=charged,
            prompt_tokens=tokens,
            reason="model calls in flight when the last process was killed: their prompts, by estimate",
        )
    return charged, tokens
