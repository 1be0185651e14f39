-- Tasks, their captured output. Instants are Unix milliseconds (UTC); ids are UUIDv7 text,
-- which sorts by creation time.
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_secs     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    result           TEXT,
    last_error       TEXT,
    idempotency_key  TEXT UNIQUE,
    labels           TEXT NOT NULL DEFAULT '{}',
    worker           TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    -- This task's backoff bounds; NULL: the worker's --retry-base / --retry-max.
    retry_base_ms    INTEGER,
    retry_max_ms     INTEGER,
    -- With a RabbitMQ broker: 0 = its submitter publishes it, NULL = the dispatcher must,
    -- an instant = published then.
    published_at     INTEGER
);

-- The claim: ready tasks of a queue, highest priority first, then oldest.
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, run_at, id) WHERE status = 'queued';
-- The promoter: delayed and backing-off tasks whose time has come.
CREATE INDEX tasks_due ON tasks (run_at) WHERE status IN ('scheduled', 'retrying');
-- The reaper and lease renewal: running tasks by lease.
CREATE INDEX tasks_leases ON tasks (lease_owner, lease_expires_at) WHERE status = 'running';
-- The dispatcher: ready tasks no one has published yet.
CREATE INDEX tasks_unpublished ON tasks (created_at)
    WHERE status = 'queued' AND (published_at IS NULL OR published_at = 0);
-- Retention and the dead-letter purge: finished tasks by age.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
-- Listing by status, newest first.
CREATE INDEX tasks_status ON tasks (status, id);

CREATE TABLE task_logs (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    ts      INTEGER NOT NULL,
    line    TEXT NOT NULL
);
CREATE INDEX task_logs_task ON task_logs (task_id, seq);

-- The change feed: one row per task state change, written by triggers so that every path
-- (submits, claims, outcomes, bulk retries, reaping) is covered in the same transaction.
-- API processes read it to serve /api/v1/events; rows are kept for a few minutes.
CREATE TABLE task_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    status   TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    worker   TEXT,
    at       INTEGER NOT NULL
);
CREATE INDEX task_events_at ON task_events (at);

CREATE TRIGGER tasks_created AFTER INSERT ON tasks BEGIN
    INSERT INTO task_events (task_id, kind, status, attempts, worker, at)
    VALUES (NEW.id, 'created', NEW.status, NEW.attempts, NEW.worker, NEW.updated_at);
END;

CREATE TRIGGER tasks_changed AFTER UPDATE OF status ON tasks
WHEN NEW.status <> OLD.status BEGIN
    INSERT INTO task_events (task_id, kind, status, attempts, worker, at)
    VALUES (NEW.id, CASE NEW.status WHEN 'running' THEN 'started' ELSE NEW.status END,
            NEW.status, NEW.attempts, NEW.worker, NEW.updated_at);
END;

-- Live workers: each upserts its row with every heartbeat.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT NOT NULL,
    concurrency  INTEGER NOT NULL,
    busy         INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
