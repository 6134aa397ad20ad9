"""The schema, as an append-only list of versioned migrations.

Never edit a released migration: add the next one. ``PRAGMA user_version`` holds the version a file is at;
each migration runs in its own transaction together with the version bump, so a crash mid-upgrade leaves
the file at the previous version, never half-migrated.

Money columns are integer nano-dollars (``*_nusd``) and times are Unix seconds (REAL), so sums are exact
and comparisons cheap. Day and month buckets are UTC text keys (``2025-01-31``, ``2025-01``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: str


V1 = """
CREATE TABLE guild_settings (
    guild_id    INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,           -- JSON; null means an explicit "unlimited"/"none" override
    updated_at  REAL    NOT NULL,
    updated_by  INTEGER,
    PRIMARY KEY (guild_id, key)
) WITHOUT ROWID;

CREATE TABLE sessions (
    id                TEXT    PRIMARY KEY,
    guild_id          INTEGER,
    channel_id        INTEGER NOT NULL,
    thread_id         INTEGER,
    user_id           INTEGER NOT NULL,
    task              TEXT    NOT NULL,
    tier              TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('idle', 'running', 'stopped', 'failed', 'done')),
    header_message_id INTEGER,
    created_at        REAL    NOT NULL,
    updated_at        REAL    NOT NULL
);
CREATE INDEX sessions_by_thread ON sessions (thread_id) WHERE thread_id IS NOT NULL;

CREATE TABLE messages (
    session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    turn_id    INTEGER,
    data       TEXT    NOT NULL,            -- agent.messages.Message.to_dict() as JSON
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;

CREATE TABLE turns (
    id              INTEGER PRIMARY KEY,
    session_id      TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    requester_id    INTEGER NOT NULL,
    prompt          TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    result          TEXT,                   -- JSON
    state           TEXT,                   -- JSON: latest checkpoint, to resume after a crash
    started_at      REAL    NOT NULL,
    finished_at     REAL,
    checkpointed_at REAL
);
CREATE INDEX turns_by_session ON turns (session_id);
CREATE INDEX turns_running ON turns (status) WHERE status = 'running';

CREATE TABLE usage_daily (
    guild_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    day       TEXT    NOT NULL,
    requests  INTEGER NOT NULL DEFAULT 0,
    tokens    INTEGER NOT NULL DEFAULT 0,
    cost_nusd INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, user_id, day)
) WITHOUT ROWID;

CREATE TABLE usage_monthly (
    guild_id           INTEGER NOT NULL,
    user_id            INTEGER NOT NULL,
    month              TEXT    NOT NULL,
    requests           INTEGER NOT NULL DEFAULT 0,
    tokens             INTEGER NOT NULL DEFAULT 0,
    cost_nusd          INTEGER NOT NULL DEFAULT 0,
    unknown_cost_calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, user_id, month)
) WITHOUT ROWID;

CREATE TABLE guild_monthly (
    guild_id           INTEGER NOT NULL,
    month              TEXT    NOT NULL,
    tokens             INTEGER NOT NULL DEFAULT 0,
    cost_nusd          INTEGER NOT NULL DEFAULT 0,
    unknown_cost_calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, month)
) WITHOUT ROWID;

CREATE TABLE model_monthly (
    guild_id           INTEGER NOT NULL,
    month              TEXT    NOT NULL,
    provider           TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    calls              INTEGER NOT NULL DEFAULT 0,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    cached_tokens      INTEGER NOT NULL DEFAULT 0,
    cost_nusd          INTEGER NOT NULL DEFAULT 0,
    unknown_cost_calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, month, provider, model)
) WITHOUT ROWID;

CREATE TABLE reservations (
    id         INTEGER PRIMARY KEY,     -- chosen by QuotaStore, never reused: the ledger keys on it
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    session_id TEXT,
    model      TEXT    NOT NULL,
    tokens     INTEGER NOT NULL,
    cost_nusd  INTEGER NOT NULL,
    created_at REAL    NOT NULL
);
CREATE INDEX reservations_by_user ON reservations (guild_id, user_id);

CREATE TABLE active_sessions (
    session_id TEXT    PRIMARY KEY,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    started_at REAL    NOT NULL
);
CREATE INDEX active_sessions_by_user ON active_sessions (guild_id, user_id);

-- Every settled model call. The trigger below rolls it up into the counters and drops its
-- reservation inside the same statement, so counters always equal the ledger and settle is atomic.
CREATE TABLE usage_ledger (
    id                INTEGER PRIMARY KEY,
    reservation_id    INTEGER UNIQUE,
    guild_id          INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    session_id        TEXT,
    provider          TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    day               TEXT    NOT NULL,
    month             TEXT    NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_nusd         INTEGER NOT NULL,     -- the known part of the cost
    cost_known        INTEGER NOT NULL,     -- 0 when some model had no price (cost_nusd is a lower bound)
    unknown_models    TEXT,
    at                REAL    NOT NULL
);

CREATE TRIGGER usage_ledger_rollup AFTER INSERT ON usage_ledger BEGIN
    DELETE FROM reservations WHERE id = NEW.reservation_id;
    INSERT INTO usage_daily (guild_id, user_id, day, tokens, cost_nusd)
    VALUES (NEW.guild_id, NEW.user_id, NEW.day, NEW.prompt_tokens + NEW.completion_tokens, NEW.cost_nusd)
    ON CONFLICT (guild_id, user_id, day) DO UPDATE SET
        tokens = tokens + excluded.tokens, cost_nusd = cost_nusd + excluded.cost_nusd;
    INSERT INTO usage_monthly (guild_id, user_id, month, tokens, cost_nusd, unknown_cost_calls)
    VALUES (NEW.guild_id, NEW.user_id, NEW.month, NEW.prompt_tokens + NEW.completion_tokens,
            NEW.cost_nusd, 1 - NEW.cost_known)
    ON CONFLICT (guild_id, user_id, month) DO UPDATE SET
        tokens = tokens + excluded.tokens, cost_nusd = cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = unknown_cost_calls + excluded.unknown_cost_calls;
    INSERT INTO guild_monthly (guild_id, month, tokens, cost_nusd, unknown_cost_calls)
    VALUES (NEW.guild_id, NEW.month, NEW.prompt_tokens + NEW.completion_tokens, NEW.cost_nusd,
            1 - NEW.cost_known)
    ON CONFLICT (guild_id, month) DO UPDATE SET
        tokens = tokens + excluded.tokens, cost_nusd = cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = unknown_cost_calls + excluded.unknown_cost_calls;
    INSERT INTO model_monthly (guild_id, month, provider, model, calls, prompt_tokens, completion_tokens,
                               cached_tokens, cost_nusd, unknown_cost_calls)
    VALUES (NEW.guild_id, NEW.month, NEW.provider, NEW.model, 1, NEW.prompt_tokens, NEW.completion_tokens,
            NEW.cached_tokens, NEW.cost_nusd, 1 - NEW.cost_known)
    ON CONFLICT (guild_id, month, provider, model) DO UPDATE SET
        calls = calls + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens, cost_nusd = cost_nusd + excluded.cost_nusd,
        unknown_cost_calls = unknown_cost_calls + excluded.unknown_cost_calls;
END;
"""

V2 = """
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    guild_id  INTEGER NOT NULL,
    actor_id  INTEGER NOT NULL,
    key       TEXT    NOT NULL,
    old_value TEXT,                         -- JSON, NULL when the key had no override
    new_value TEXT,                         -- JSON, NULL when the override was removed (reset)
    at        REAL    NOT NULL
);
CREATE INDEX audit_log_by_guild ON audit_log (guild_id, id);
"""

# Reasoning tokens are part of completion_tokens (already counted and priced); this only keeps them apart
# so /usage server can show how much of a model's output was hidden thinking. A second trigger rather
# than a rewritten rollup: both upsert, so the per-model counters come out right in either firing order.
V3 = """
ALTER TABLE usage_ledger ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE model_monthly ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER usage_ledger_reasoning AFTER INSERT ON usage_ledger WHEN NEW.reasoning_tokens > 0 BEGIN
    INSERT INTO model_monthly (guild_id, month, provider, model, reasoning_tokens)
    VALUES (NEW.guild_id, NEW.month, NEW.provider, NEW.model, NEW.reasoning_tokens)
    ON CONFLICT (guild_id, month, provider, model) DO UPDATE SET
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens;
END;
"""

# Follow-ups that arrived while a turn ran (⏳): kept here, not only in memory, so a crash or kill -9
# loses none; a row goes in the same transaction that opens its turn (SessionStore.start_turn).
V4 = """
CREATE TABLE queued_turns (
    id             INTEGER PRIMARY KEY,
    session_id     TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    requester_id   INTEGER NOT NULL,
    requester_name TEXT    NOT NULL,
    role_ids       TEXT    NOT NULL,        -- JSON list of the requester's role ids
    prompt         TEXT    NOT NULL,
    created_at     REAL    NOT NULL
);
CREATE INDEX queued_turns_by_session ON queued_turns (session_id, id);
"""

# Edit to re-run (issue 17.3): a turn knows the Discord message that asked for it (a thread reply or a
# mention; NULL for /research, whose task is a slash-command option nobody can edit), the edited text
# waiting behind a "Re-run with the edit" button, and the turn that replaced it. A superseded turn's
# messages stay stored but are left out of the conversation the agent sees.
V5 = """
ALTER TABLE turns ADD COLUMN message_id INTEGER;
ALTER TABLE turns ADD COLUMN edited_prompt TEXT;
ALTER TABLE turns ADD COLUMN superseded_by INTEGER;
ALTER TABLE queued_turns ADD COLUMN message_id INTEGER;
CREATE INDEX turns_by_message ON turns (message_id) WHERE message_id IS NOT NULL;
"""

# PostgreSQL's V6 is a function that runs a batch of quota operations in one round trip; SQLite already
# runs them in-process, so here the version only keeps both schemas numbered alike.
V6 = "SELECT 1;"

# A running turn's checkpoint keeps its messages one row each, so a step appends only its own messages:
# the whole history in ``turns.state`` was encoded again and rewritten at every step (quadratic in a
# run's length). ``turns.state`` keeps the rest (step, usage, cost) and how many rows are current
# (``message_count``; rows past it are left over from a replaced history). A turn that stops running has
# its rows dropped (its messages go to ``messages`` with the turn's end): nothing reads them after.
V7 = """
CREATE TABLE turn_steps (
    turn_id INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    data    TEXT    NOT NULL,               -- agent.messages.Message.to_dict() as JSON
    PRIMARY KEY (turn_id, seq)
) WITHOUT ROWID;

CREATE TRIGGER turn_steps_done AFTER UPDATE OF status ON turns WHEN NEW.status <> 'running' BEGIN
    DELETE FROM turn_steps WHERE turn_id = NEW.id;
END;
"""

# Calls counted locally (``Usage.estimated``: the server reported no usage, as llama.cpp's streams send
# none, or the call was cut under way by a Stop) are flagged in the ledger and counted apart per day,
# month, server and model, so /usage marks the figures they are part of as estimates, as the footer and
# `agentbot ask` do. A second trigger, as V3's: both upsert, so either firing order adds up.
V8 = """
ALTER TABLE usage_ledger ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN estimated_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_monthly ADD COLUMN estimated_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE guild_monthly ADD COLUMN estimated_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE model_monthly ADD COLUMN estimated_calls INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER usage_ledger_estimated AFTER INSERT ON usage_ledger WHEN NEW.estimated > 0 BEGIN
    INSERT INTO usage_daily (guild_id, user_id, day, estimated_calls)
    VALUES (NEW.guild_id, NEW.user_id, NEW.day, 1)
    ON CONFLICT (guild_id, user_id, day) DO UPDATE SET estimated_calls = estimated_calls + 1;
    INSERT INTO usage_monthly (guild_id, user_id, month, estimated_calls)
    VALUES (NEW.guild_id, NEW.user_id, NEW.month, 1)
    ON CONFLICT (guild_id, user_id, month) DO UPDATE SET estimated_calls = estimated_calls + 1;
    INSERT INTO model_monthly (guild_id, month, provider, model, estimated_calls)
    VALUES (NEW.guild_id, NEW.month, NEW.provider, NEW.model, 1)
    ON CONFLICT (guild_id, month, provider, model) DO UPDATE SET estimated_calls = estimated_calls + 1;
    INSERT INTO guild_monthly (guild_id, month, estimated_calls)
    VALUES (NEW.guild_id, NEW.month, 1)
    ON CONFLICT (guild_id, month) DO UPDATE SET estimated_calls = estimated_calls + 1;
END;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "sessions, history, settings and usage counters", V1),
    Migration(2, "audit log of admin changes", V2),
    Migration(3, "reasoning tokens per model call", V3),
    Migration(4, "follow-ups queued behind a running turn", V4),
    Migration(5, "the message that asked for each turn, edits and superseded turns", V5),
    Migration(6, "quota operations in one round trip", V6),
    Migration(7, "a running turn's checkpointed messages one row each", V7),
    Migration(8, "calls counted by estimate, flagged in the ledger and counted apart", V8),
)
