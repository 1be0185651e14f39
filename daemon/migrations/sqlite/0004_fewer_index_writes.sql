-- Fewer index writes per task. tasks_status (status, id) took an entry at the insert, moved
-- it at the claim and again at the settle, and no query read it: the list scanned ids
-- newest first, since its status was a parameter the planner could not see. The list now
-- names its status in the statement, so queued, running and due tasks are found through
-- tasks_ready, tasks_leases and tasks_due (or the id order they are already near), and
-- finished ones, which accumulate, through this index: one entry, written at the settle.
-- The OR form is the one SQLite matches a query's `status = 'failed'` against.
DROP INDEX tasks_status;
CREATE INDEX tasks_finished_status ON tasks (status, id)
    WHERE status = 'succeeded' OR status = 'failed' OR status = 'cancelled';
-- The same form for the due tasks, so a page of scheduled (or retrying) tasks can name it.
DROP INDEX tasks_due;
CREATE INDEX tasks_due ON tasks (run_at) WHERE status = 'scheduled' OR status = 'retrying';
