-- Queue controls: a queue's settings, kept whether or not the queue has tasks. `gated` is
-- true when any control holds (paused, a running limit or a rate): the claims that serve
-- ungated queues pass over a gated queue's tasks, which the gated claim takes instead,
-- one process at a time. The rate is a token bucket: `tokens_milli` as of `refilled_at`.
CREATE TABLE queue_settings (
    queue        TEXT PRIMARY KEY,
    paused       BOOLEAN NOT NULL DEFAULT FALSE,
    max_running  BIGINT,
    -- Starts per 1000 s (the rate per second times 1000), and the bucket in thousandths.
    rate_milli   BIGINT,
    tokens_milli BIGINT NOT NULL DEFAULT 0,
    refilled_at  BIGINT NOT NULL DEFAULT 0,
    gated        BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at   BIGINT NOT NULL
);

-- Concurrency keys: at most `concurrency_limit` running tasks share a key. Keyed tasks are
-- claimed by the gated claim only; this index holds the ready ones (few, and no entry for
-- a task without a key).
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
ALTER TABLE tasks ADD COLUMN concurrency_limit BIGINT;
CREATE INDEX tasks_keyed ON tasks (priority DESC, run_at, id)
    WHERE status = 'queued' AND concurrency_key IS NOT NULL;

-- The audit log: operator actions, append-only, written in the action's transaction.
CREATE TABLE audit_log (
    seq     BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
