"""PostgreSQL schema version 6: quota reservations and settles applied a batch at a time, in one round trip.

Kept apart from :mod:`bot.store.pg_schema` because it is the one migration with real logic in it (a
PL/pgSQL function and a statement-level trigger); ``bench/quota_store.py --postgres`` measures it.
Never edit it once released: the next change is version 7.
"""

# A settle of a reservation already in the ledger answers 2; the UNIQUE constraint stays the backstop.
# Results per operation: 1 done (a reserve: held), 0 refused, 2 already settled.
#
# The ledger's roll-up becomes one statement-level trigger over the inserted rows (a transition table):
# a batch of settles updates each counter row once, not once per call. Same counters as V1 + V3's two
# row triggers, which it replaces (the reasoning tokens are summed in the same upsert).
#
# quota_apply commits without waiting for its WAL flush (synchronous_commit off for its own transaction
# only; the server's settings and every other write stay as configured). Measured with
# bench/quota_store.py --postgres on 2 cores: pair p99 at 5,000 pairs/s with both processes charging one
# server 38.5 ms -> 11.6 ms, one server per process 11.9 -> 7.6 ms, since the per-server lock was held
# through each flush. The cost, a decision: a crash of PostgreSQL itself (not of the bot, and never
# corruption) can forget the last ~0.6 s of charges (3 x wal_writer_delay). Quota charges are already
# estimates until settled, and the next durable commit of any kind flushes them.
#
# Only reserves take the per-server lock, and only after the batch's settles: a reserve's check is one
# statement, so it reads one committed state, in which another process's settle (one transaction: its
# reservation gone and its usage counted) is either wholly in or wholly out; and a settle may take a
# counter past a limit anyway (real usage above the estimate is charged in full). What settles need is
# that no increment is lost, which the upserts' row locks give; every roll-up upsert takes its rows in
# key order and the tables in one order, and a batch holding the server lock waits for no row lock (its
# reserves only insert new rows), so two batches never deadlock. Two processes charging one server then
# queue for each other only from the counter upserts to the commit (the server's month row is the last
# one taken), no longer for the whole call.
V6 = """
CREATE TYPE quota_op AS (
    kind           TEXT,             -- 'r' reserve, 's' settle, 'x' release
    id             BIGINT,           -- the reservation id (settle: NULL when there was none)
    guild_id       BIGINT,
    user_id        BIGINT,
    session_id     TEXT,
    provider       TEXT,
    model          TEXT,
    day            TEXT,
    month          TEXT,
    tokens         BIGINT,           -- reserve: tokens held; settle: prompt tokens
    completion     BIGINT,
    cached         BIGINT,
    reasoning      BIGINT,
    cost_nusd      BIGINT,
    cost_known     BIGINT,
    unknown_models TEXT,
    at             DOUBLE PRECISION, -- reserve: created_at; settle: at
    cutoff         DOUBLE PRECISION, -- reserve: reservations older than this no longer count
    tok_lim        BIGINT,
    cost_lim       BIGINT,
    guild_lim      BIGINT
);

DROP TRIGGER usage_ledger_rollup ON usage_ledger;
DROP TRIGGER usage_ledger_reasoning ON usage_ledger;
DROP FUNCTION usage_ledger_rollup();
DROP FUNCTION usage_ledger_reasoning();

CREATE FUNCTION usage_ledger_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM reservations WHERE id IN (SELECT reservation_id FROM new_rows);
    INSERT INTO usage_daily AS t (guild_id, user_id, day, tokens, cost_nusd)
    SELECT guild_id, user_id, day, SUM(prompt_tokens + completion_tokens), SUM(cost_nusd)
    FROM new_rows GROUP BY guild_id, user_id, day ORDER BY 1, 2, 3
    ON CONFLICT (guild_id, user_id, day) DO UPDATE SET
        tokens = t.tokens + excluded.tokens, cost_nusd = t.cost_nusd + excluded.cost_nusd;
    INSERT INTO usage_monthly AS t (guild_id, user_id, month, tokens, cost_nusd, unknown_cost_calls)
    SELECT guild_id, user_id, month, SUM(prompt_tokens + completion_tokens), SUM(cost_nusd), SUM(1 - cost_known)
    FROM new_rows GROUP BY guild_id, user_id, month ORDER BY 1, 2, 3
    ON CONFLICT (guild_id, user_id, month) DO UPDATE SET
        tokens = t.tokens + excluded.tokens, cost_nusd = t.cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = t.unknown_cost_calls + excluded.unknown_cost_calls;
    INSERT INTO model_monthly AS t (guild_id, month, provider, model, calls, prompt_tokens, completion_tokens,
                                    cached_tokens, reasoning_tokens, cost_nusd, unknown_cost_calls)
    SELECT guild_id, month, provider, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
           SUM(cached_tokens), SUM(reasoning_tokens), SUM(cost_nusd), SUM(1 - cost_known)
    FROM new_rows GROUP BY guild_id, month, provider, model ORDER BY 1, 2, 3, 4
    ON CONFLICT (guild_id, month, provider, model) DO UPDATE SET
        calls = t.calls + excluded.calls, prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = t.completion_tokens + excluded.completion_tokens,
        cached_tokens = t.cached_tokens + excluded.cached_tokens,
        reasoning_tokens = t.reasoning_tokens + excluded.reasoning_tokens,
        cost_nusd = t.cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = t.unknown_cost_calls + excluded.unknown_cost_calls;
    INSERT INTO guild_monthly AS t (guild_id, month, tokens, cost_nusd, unknown_cost_calls)
    SELECT guild_id, month, SUM(prompt_tokens + completion_tokens), SUM(cost_nusd), SUM(1 - cost_known)
    FROM new_rows GROUP BY guild_id, month ORDER BY 1, 2
    ON CONFLICT (guild_id, month) DO UPDATE SET
        tokens = t.tokens + excluded.tokens, cost_nusd = t.cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = t.unknown_cost_calls + excluded.unknown_cost_calls;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_ledger_rollup AFTER INSERT ON usage_ledger REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_ledger_rollup();

CREATE FUNCTION quota_apply(ops quota_op[]) RETURNS SMALLINT[] LANGUAGE plpgsql AS $$
DECLARE
    op  quota_op;
    k   INTEGER;
    n   INTEGER;
    i   INTEGER := 0;
    res SMALLINT[] := array_fill(1::SMALLINT, ARRAY[cardinality(ops)]);
    dup BIGINT[];
    has_s BOOLEAN;
    has_r BOOLEAN;
    has_x BOOLEAN;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Only the statements the batch's kinds need: an INSERT of no rows still fires the statement
    -- trigger's five statements (measured: a lone reserve's call 320 -> 200 us of server time).
    SELECT bool_or(o.kind = 's'), bool_or(o.kind = 'r'), bool_or(o.kind = 'x') INTO has_s, has_r, has_x
    FROM unnest(ops) o;
    IF has_s THEN
        SELECT array_agg(o.ordinality) INTO dup FROM unnest(ops) WITH ORDINALITY o
        WHERE o.kind = 's' AND o.id IS NOT NULL
          AND EXISTS (SELECT 1 FROM usage_ledger WHERE reservation_id = o.id);
        INSERT INTO usage_ledger (reservation_id, guild_id, user_id, session_id, provider, model, day, month,
                                  prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_nusd,
                                  cost_known, unknown_models, at)
        SELECT o.id, o.guild_id, o.user_id, o.session_id, o.provider, o.model, o.day, o.month, o.tokens,
               o.completion, o.cached, o.reasoning, o.cost_nusd, o.cost_known, o.unknown_models, o.at
        FROM unnest(ops) WITH ORDINALITY o
        WHERE o.kind = 's' AND o.ordinality <> ALL (COALESCE(dup, '{}'))
        ORDER BY o.ordinality;
        FOREACH k IN ARRAY COALESCE(dup, '{}') LOOP
            res[k] := 2;
        END LOOP;
    END IF;

    -- Reserves, fast path: every reserve of the batch checked at once against the counters plus the
    -- reserves before it in the batch (window sums in submission order). If all of them fit, holding them
    -- all is exactly what checking them one by one gives (each one then counts every earlier one), and
    -- the open reservations are summed once per user and per server instead of once per call. The
    -- batch's earliest cutoff counts at least the reservations each call's own cutoff would, so this only
    -- errs towards the exact path below, which runs when any reserve does not fit.
    IF has_r THEN
        FOR k IN SELECT DISTINCT hashint8(o.guild_id) FROM unnest(ops) o WHERE o.kind = 'r' ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock(1903521652, k);  -- 'quot': its own key space, one lock per server
        END LOOP;
        IF EXISTS (
            WITH r AS (SELECT o.*, o.ordinality AS pos FROM unnest(ops) WITH ORDINALITY o WHERE o.kind = 'r'),
            cut AS (SELECT MIN(cutoff) AS c FROM r),
            ru AS (SELECT v.guild_id, v.user_id, SUM(v.tokens) AS tok, SUM(v.cost_nusd) AS cost
                   FROM reservations v, cut
                   WHERE (v.guild_id, v.user_id) IN (SELECT guild_id, user_id FROM r) AND v.created_at >= cut.c
                   GROUP BY v.guild_id, v.user_id),
            rg AS (SELECT v.guild_id, SUM(v.cost_nusd) AS cost FROM reservations v, cut
                   WHERE v.guild_id IN (SELECT guild_id FROM r) AND v.created_at >= cut.c GROUP BY v.guild_id),
            chk AS (
                SELECT (r.tok_lim IS NULL OR COALESCE(d.tokens, 0) + COALESCE(ru.tok, 0)
                           + SUM(r.tokens) OVER (PARTITION BY r.guild_id, r.user_id ORDER BY r.pos) <= r.tok_lim)
                   AND (r.cost_lim IS NULL OR COALESCE(m.cost_nusd, 0) + COALESCE(ru.cost, 0)
                           + SUM(r.cost_nusd) OVER (PARTITION BY r.guild_id, r.user_id ORDER BY r.pos) <= r.cost_lim)
                   AND (r.guild_lim IS NULL OR COALESCE(gm.cost_nusd, 0) + COALESCE(rg.cost, 0)
                           + SUM(r.cost_nusd) OVER (PARTITION BY r.guild_id ORDER BY r.pos) <= r.guild_lim) AS fits
                FROM r
                LEFT JOIN usage_daily d ON d.guild_id = r.guild_id AND d.user_id = r.user_id AND d.day = r.day
                LEFT JOIN usage_monthly m ON m.guild_id = r.guild_id AND m.user_id = r.user_id AND m.month = r.month
                LEFT JOIN guild_monthly gm ON gm.guild_id = r.guild_id AND gm.month = r.month
                LEFT JOIN ru ON ru.guild_id = r.guild_id AND ru.user_id = r.user_id
                LEFT JOIN rg ON rg.guild_id = r.guild_id)
            SELECT 1 FROM chk WHERE NOT fits
        ) THEN
            FOREACH op IN ARRAY ops LOOP
                i := i + 1;
                CONTINUE WHEN op.kind <> 'r';
                INSERT INTO reservations (id, guild_id, user_id, session_id, model, tokens, cost_nusd, created_at)
                SELECT op.id, op.guild_id, op.user_id, op.session_id, op.model, op.tokens, op.cost_nusd, op.at
                WHERE (op.tok_lim IS NULL OR
                        COALESCE((SELECT tokens FROM usage_daily
                                  WHERE guild_id = op.guild_id AND user_id = op.user_id AND day = op.day), 0)
                      + COALESCE((SELECT SUM(tokens) FROM reservations
                                  WHERE guild_id = op.guild_id AND user_id = op.user_id AND created_at >= op.cutoff), 0)
                      + op.tokens <= op.tok_lim)
                  AND (op.cost_lim IS NULL OR
                        COALESCE((SELECT cost_nusd FROM usage_monthly
                                  WHERE guild_id = op.guild_id AND user_id = op.user_id AND month = op.month), 0)
                      + COALESCE((SELECT SUM(cost_nusd) FROM reservations
                                  WHERE guild_id = op.guild_id AND user_id = op.user_id AND created_at >= op.cutoff), 0)
                      + op.cost_nusd <= op.cost_lim)
                  AND (op.guild_lim IS NULL OR
                        COALESCE((SELECT cost_nusd FROM guild_monthly WHERE guild_id = op.guild_id AND month = op.month), 0)
                      + COALESCE((SELECT SUM(cost_nusd) FROM reservations
                                  WHERE guild_id = op.guild_id AND created_at >= op.cutoff), 0)
                      + op.cost_nusd <= op.guild_lim);
                GET DIAGNOSTICS n = ROW_COUNT;
                res[i] := n;
            END LOOP;
        ELSE
            INSERT INTO reservations (id, guild_id, user_id, session_id, model, tokens, cost_nusd, created_at)
            SELECT o.id, o.guild_id, o.user_id, o.session_id, o.model, o.tokens, o.cost_nusd, o.at
            FROM unnest(ops) o WHERE o.kind = 'r';
        END IF;
    END IF;

    IF has_x THEN
        DELETE FROM reservations WHERE id IN (SELECT o.id FROM unnest(ops) o WHERE o.kind = 'x');
    END IF;
    RETURN res;
END $$;
"""
