"""Which servers this process owns when several shard processes form one bot (issue 18.3).

Discord sends a server's events to one shard only: ``(guild_id >> 22) % shard_count``; direct messages
(and anything without a server, stored under guild id 0) go to shard 0. A process owns the servers of its
``DISCORD_SHARD_IDS``, so it alone may resume their interrupted runs, answer their queued follow-ups and
clear their quota reservations at start-up: every other process is live and still holds its own.

Re-sharding (a new ``DISCORD_SHARD_COUNT``) means restarting every process with the new count at once,
as Discord requires anyway; ownership is always computed with the count in force.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["EVERY_SHARD", "ShardOwnership", "shard_of"]


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """Discord's rule; a missing server (a DM) is shard 0's, as Discord sends DMs to shard 0."""
    return ((guild_id or 0) >> 22) % shard_count


@dataclass(frozen=True, slots=True)
class ShardOwnership:
    """``shard_ids`` of ``shard_count`` (``None``: every shard, the single-process default)."""

    shard_count: int = 1
    shard_ids: frozenset[int] | None = None

    @classmethod
    def of(cls, shard_count: int | None, shard_ids: Iterable[int] | None) -> ShardOwnership:
        if not shard_count or shard_count == 1 or shard_ids is None:
            return cls()
        ids = frozenset(shard_ids)
        return cls(shard_count, None if ids >= set(range(shard_count)) else ids)

    @property
    def share(self) -> float:
        """This process's part of what the whole bot may use (Discord's global request limit is the
        bot's, whatever the number of processes): its shards over all shards."""
        return 1.0 if self.shard_ids is None else len(self.shard_ids) / self.shard_count

    def owns(self, guild_id: int | None) -> bool:
        return self.shard_ids is None or shard_of(guild_id, self.shard_count) in self.shard_ids

    def sql(self, column: str) -> str:
        """A condition on ``column`` (a guild id, NULL or 0 for none) true for owned rows; the same
        text works on SQLite and PostgreSQL. ``column`` is always a literal column name, never input."""
        if self.shard_ids is None:
            return "1 = 1"
        ids = ", ".join(str(int(i)) for i in sorted(self.shard_ids))
        return f"((COALESCE({column}, 0) >> 22) % {int(self.shard_count)}) IN ({ids})"


EVERY_SHARD = ShardOwnership()
"""One process owning every server (no sharding): the default wherever ownership narrows a query."""
