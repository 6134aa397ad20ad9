"""The audit log of admin changes: who changed which setting, from what, to what, and when.

Rows are written inside the same transaction as the change itself (:data:`INSERT` on the open
connection), so a change without its audit row cannot exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.store.db import Database


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    guild_id: int
    actor_id: int
    key: str
    old: Any
    """The previous override, or ``None`` when the key was at its default."""
    new: Any
    """The new override, or ``None`` when it was reset to the default."""
    at: datetime
    old_set: bool = True
    new_set: bool = True
    """``False`` when that side was "no override" (default), to tell it apart from an explicit ``null``."""


INSERT = "INSERT INTO audit_log (guild_id, actor_id, key, old_value, new_value, at) VALUES (?,?,?,?,?,?)"
"""One row: guild, actor, key, old and new stored JSON texts (``None`` = no override), Unix time."""


async def recent(db: Database, guild_id: int, limit: int = 10) -> list[AuditEntry]:
    """Newest first."""
    rows = await db.fetchall(
        "SELECT * FROM audit_log WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, limit)
    )
    return [
        AuditEntry(
            id=r["id"],
            guild_id=r["guild_id"],
            actor_id=r["actor_id"],
            key=r["key"],
            old=None if r["old_value"] is None else json.loads(r["old_value"]),
            new=None if r["new_value"] is None else json.loads(r["new_value"]),
            at=datetime.fromtimestamp(r["at"], UTC),
            old_set=r["old_value"] is not None,
            new_set=r["new_value"] is not None,
        )
        for r in rows
    ]
