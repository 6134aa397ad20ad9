"""PostgreSQL schema version 8: calls counted by estimate, flagged in the ledger and counted apart.

SQLite's V8 (:mod:`bot.store.migrations`) adds the columns and a second row trigger. Here the roll-up is
V6's one statement-level trigger, so it is replaced by the same roll-up summing the new flag in the
upserts it already makes (a second trigger taking the same counter rows in another statement could
deadlock two batches), and ``quota_apply`` writes the flag a settle carries (``quota_op.estimated``,
added last, so V6's fields keep their places). The function is V6's, with its two ledger lines
changed: :func:`_quota_apply` checks that each change took, so an edit of V6 cannot silently drop one.
Never edit it once released: the next change is version 9.
"""

from __future__ import annotations

from bot.store.pg_quota_v6 import V6

_COLUMNS = """
ALTER TABLE usage_ledger ADD COLUMN estimated BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN estimated_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_monthly ADD COLUMN estimated_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE guild_monthly ADD COLUMN estimated_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE model_monthly ADD COLUMN estimated_calls BIGINT NOT NULL DEFAULT 0;
ALTER TYPE quota_op ADD ATTRIBUTE estimated BIGINT;  -- a settle's Usage.estimated (0 or 1)
"""

_ROLLUP = """
CREATE OR REPLACE FUNCTION usage_ledger_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM reservations WHERE id IN (SELECT reservation_id FROM new_rows);
    INSERT INTO usage_daily AS t (guild_id, user_id, day, tokens, cost_nusd, estimated_calls)
    SELECT guild_id, user_id, day, SUM(prompt_tokens + completion_tokens), SUM(cost_nusd), SUM(estimated)
    FROM new_rows GROUP BY guild_id, user_id, day ORDER BY 1, 2, 3
    ON CONFLICT (guild_id, user_id, day) DO UPDATE SET
        tokens = t.tokens + excluded.tokens, cost_nusd = t.cost_nusd + excluded.cost_nusd,
        estimated_calls = t.estimated_calls + excluded.estimated_calls;
    INSERT INTO usage_monthly AS t (guild_id, user_id, month, tokens, cost_nusd, unknown_cost_calls,
                                    estimated_calls)
    SELECT guild_id, user_id, month, SUM(prompt_tokens + completion_tokens), SUM(cost_nusd), SUM(1 - cost_known),
           SUM(estimated)
    FROM new_rows GROUP BY guild_id, user_id, month ORDER BY 1, 2, 3
    ON CONFLICT (guild_id, user_id, month) DO UPDATE SET
        tokens = t.tokens + excluded.tokens, cost_nusd = t.cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = t.unknown_cost_calls + excluded.unknown_cost_calls,
        estimated_calls = t.estimated_calls + excluded.estimated_calls;
    INSERT INTO model_monthly AS t (guild_id, month, provider, model, calls, prompt_tokens, completion_tokens,
                                    cached_tokens, reasoning_tokens, cost_nusd, unknown_cost_calls,
                                    estimated_calls)
    SELECT guild_id, month, provider, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
           SUM(cached_tokens), SUM(reasoning_tokens), SUM(cost_nusd), SUM(1 - cost_known), SUM(estimated)
    FROM new_rows GROUP BY guild_id, month, provider, model ORDER BY 1, 2, 3, 4
    ON CONFLICT (guild_id, month, provider, model) DO UPDATE SET
        calls = t.calls + excluded.calls, prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = t.completion_tokens + excluded.completion_tokens,
        cached_tokens = t.cached_tokens + excluded.cached_tokens,
        reasoning_tokens = t.reasoning_tokens + excluded.reasoning_tokens,
        cost_nusd = t.cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = t.unknown_cost_calls + excluded.unknown_cost_calls,
        estimated_calls = t.estimated_calls + excluded.estimated_calls;
    INSERT INTO guild_monthly AS t (guild_id, month, tokens, cost_nusd, unknown_cost_calls, estimated_calls)
    SELECT guild_id, month, SUM(prompt_tokens + completion_tokens), SUM(cost_nusd), SUM(1 - cost_known),
           SUM(estimated)
    FROM new_rows GROUP BY guild_id, month ORDER BY 1, 2
    ON CONFLICT (guild_id, month) DO UPDATE SET
        tokens = t.tokens + excluded.tokens, cost_nusd = t.cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = t.unknown_cost_calls + excluded.unknown_cost_calls,
        estimated_calls = t.estimated_calls + excluded.estimated_calls;
    RETURN NULL;
END $$;
"""

_LEDGER_CHANGES = (
    ("CREATE FUNCTION quota_apply(", "CREATE OR REPLACE FUNCTION quota_apply("),
    ("cost_known, unknown_models, at)\n", "cost_known, unknown_models, at, estimated)\n"),
    (
        "o.cost_known, o.unknown_models, o.at\n",
        "o.cost_known, o.unknown_models, o.at, COALESCE(o.estimated, 0)\n",
    ),
)


def _quota_apply() -> str:
    sql = V6[V6.index("CREATE FUNCTION quota_apply(") :]
    for old, new in _LEDGER_CHANGES:
        assert sql.count(old) == 1, f"pg_quota_v6's quota_apply no longer has {old!r} once"
        sql = sql.replace(old, new)
    return sql


V8 = _COLUMNS + _ROLLUP + _quota_apply()
