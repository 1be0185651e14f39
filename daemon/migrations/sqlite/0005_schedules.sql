-- Recurring schedules, as on PostgreSQL (see its migration of the same number).
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_run_at  INTEGER,
    last_run_at  INTEGER,
    last_task_id TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
