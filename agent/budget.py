"""The hook through which a caller meters a run: reserve before each model call, settle after.

The agent knows nothing about users or quotas; the bot's quota store implements :class:`Budget`.
"""

from __future__ import annotations

from typing import Any, Protocol

from agent.events import Cost, Usage


class BudgetExceeded(Exception):
    """Raised by :meth:`Budget.reserve` when the next call would pass a limit.

    The message is shown to the user as is, so it names the limit and when it resets.
    """


class Budget(Protocol):
    async def reserve(self, model: str, estimate: Usage, estimated_cost: float | None) -> Any:
        """Hold room for one model call or raise :class:`BudgetExceeded`. Returns a token for settle."""
        ...

    async def settle(self, token: Any, model: str, provider: str, usage: Usage, cost: Cost) -> None:
        """Replace the reservation with what the call really used (also called with zero usage on failure)."""
        ...
