-- Fewer index writes per task. The tasks table is rebuilt (taskd turns foreign keys off
-- for its migrations and checks them before each commits), because a column's UNIQUE cannot
-- be dropped in place; on a large file this copies every task once, at the first start.
--   * The idempotency key's UNIQUE held an entry for every task, NULL for every task
--     without a key; a partial unique index holds the keyed ones only (an upsert names
--     its predicate).
--   * tasks_status (status, id) took an entry at the insert, moved it at the claim and
--     again at the settle, and no query read it: the list's status was a parameter the
--     planner could not see, so it walked ids newest first. The list now names its status
--     in the statement, so queued, running and due tasks are found through tasks_ready,
--     tasks_leases and tasks_due (or the id order they are already near), and finished
--     ones, which accumulate, through tasks_finished_status: one entry, written at the
--     settle.
-- The OR form of a predicate is the one SQLite matches a query's `status = 'failed'`
-- against.
CREATE TABLE tasks_rebuilt (
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
    idempotency_key  TEXT,
    labels           TEXT NOT NULL DEFAULT '{}',
    worker           TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    retry_base_ms    INTEGER,
    retry_max_ms     INTEGER,
    published_at     INTEGER
);
INSERT INTO tasks_rebuilt (id, kind, queue, priority, payload, status, attempts, max_attempts,
    timeout_secs, run_at, created_at, updated_at, started_at, finished_at, result, last_error,
    idempotency_key, labels, worker, lease_owner, lease_expires_at, cancel_requested,
    retry_base_ms, retry_max_ms, published_at)
SELECT id, kind, queue, priority, payload, status, attempts, max_attempts,
    timeout_secs, run_at, created_at, updated_at, started_at, finished_at, result, last_error,
    idempotency_key, labels, worker, lease_owner, lease_expires_at, cancel_requested,
    retry_base_ms, retry_max_ms, published_at
FROM tasks;
-- With foreign keys off this deletes no task_logs or task_labels rows; they refer to the
-- table by name, and find the rebuilt one under it.
DROP TABLE tasks;
ALTER TABLE tasks_rebuilt RENAME TO tasks;

CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, run_at, id) WHERE status = 'queued';
CREATE INDEX tasks_due ON tasks (run_at) WHERE status = 'scheduled' OR status = 'retrying';
CREATE INDEX tasks_leases ON tasks (lease_owner, lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_unpublished ON tasks (created_at)
    WHERE status = 'queued' AND published_at IS NULL;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_finished_status ON tasks (status, id)
    WHERE status = 'succeeded' OR status = 'failed' OR status = 'cancelled';

-- The change feed's row triggers, as migration 3 made them (they went with the old table).
CREATE TRIGGER tasks_created AFTER INSERT ON tasks BEGIN
    INSERT INTO task_events (at, events)
    VALUES (NEW.updated_at,
            json_array(json_array(NEW.id, 'created', NEW.status, NEW.attempts, NEW.worker,
                                  NEW.updated_at, NEW.kind, NEW.queue, NEW.priority,
                                  NEW.max_attempts, NEW.created_at)));
END;

CREATE TRIGGER tasks_changed AFTER UPDATE OF status ON tasks
WHEN NEW.status <> OLD.status BEGIN
    INSERT INTO task_events (at, events)
    VALUES (NEW.updated_at,
            json_array(json_array(NEW.id,
                                  CASE NEW.status WHEN 'running' THEN 'started'
                                                  ELSE NEW.status END,
                                  NEW.status, NEW.attempts, NEW.worker, NEW.updated_at,
                                  NEW.kind, NEW.queue, NEW.priority, NEW.max_attempts,
                                  NEW.created_at)));
END;
