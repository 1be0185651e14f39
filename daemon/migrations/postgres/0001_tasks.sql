-- Tasks and their captured output. Instants are Unix milliseconds (UTC) so that the SQL the
-- two backends share reads the same; ids are UUIDv7 text in the C collation, which sorts by
-- creation time.
CREATE TABLE tasks (
    id               TEXT COLLATE "C" PRIMARY KEY,
    kind             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    timeout_secs     BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    result           TEXT,
    last_error       TEXT,
    idempotency_key  TEXT UNIQUE,
    labels           TEXT NOT NULL DEFAULT '{}',
    worker           TEXT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- This task's backoff bounds; NULL: the worker's --retry-base / --retry-max.
    retry_base_ms    BIGINT,
    retry_max_ms     BIGINT,
    -- With a RabbitMQ broker: 0 = its submitter publishes it, NULL = the dispatcher must,
    -- an instant = published then.
    published_at     BIGINT
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
    seq     BIGSERIAL PRIMARY KEY,
    task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    stream  TEXT NOT NULL,
    ts      BIGINT NOT NULL,
    line    TEXT NOT NULL
);
CREATE INDEX task_logs_task ON task_logs (task_id, seq);

-- The change feed: one row per task state change, written by a trigger so that every path
-- (submits, claims, outcomes, bulk retries, reaping) is covered in the same transaction.
-- API processes read it to serve /api/v1/events; rows are kept for a few minutes.
CREATE TABLE task_events (
    seq      BIGSERIAL PRIMARY KEY,
    task_id  TEXT COLLATE "C" NOT NULL,
    kind     TEXT NOT NULL,
    status   TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    worker   TEXT,
    at       BIGINT NOT NULL
);
CREATE INDEX task_events_at ON task_events (at);

CREATE FUNCTION taskplane_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_events (task_id, kind, status, attempts, worker, at)
        VALUES (NEW.id, 'created', NEW.status, NEW.attempts, NEW.worker, NEW.updated_at);
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO task_events (task_id, kind, status, attempts, worker, at)
        VALUES (NEW.id, CASE NEW.status WHEN 'running' THEN 'started' ELSE NEW.status END,
                NEW.status, NEW.attempts, NEW.worker, NEW.updated_at);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_events AFTER INSERT OR UPDATE OF status ON tasks
    FOR EACH ROW EXECUTE FUNCTION taskplane_task_event();

-- Live workers: each upserts its row with every heartbeat.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    queues       TEXT NOT NULL,
    concurrency  BIGINT NOT NULL,
    busy         BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
