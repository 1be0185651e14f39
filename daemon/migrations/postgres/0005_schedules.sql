-- Recurring schedules. A schedule is its spec (the timing, overlap, catch-up and the task
-- template, as JSON written by taskd) and the state the scheduler advances: next_run_at moves
-- on only by a guarded update (`WHERE name = … AND next_run_at = <the value read>`) in the
-- same transaction as the fire's tasks, so one fire time makes one task however many taskd
-- processes see it come.
CREATE TABLE schedules (
    name         TEXT COLLATE "C" PRIMARY KEY,
    spec         TEXT NOT NULL,
    paused       BOOLEAN NOT NULL DEFAULT FALSE,
    -- NULL: the expression has no fire time left.
    next_run_at  BIGINT,
    last_run_at  BIGINT,
    last_task_id TEXT COLLATE "C",
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
-- What every scheduler round asks: the schedules that are due.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
