-- Fewer index writes per task. A status change is not a HOT update (status is in the
-- partial indexes' predicates), so every claim and settle writes an entry into every index
-- of tasks, whatever columns it covers:
--   * tasks_status (status, id) held every task in every state; queued, running and due
--     tasks are already in tasks_ready, tasks_leases and tasks_due, so it keeps only the
--     finished ones, which accumulate and are listed by status;
--   * the idempotency key's unique constraint held a NULL entry for every task without a
--     key; a partial unique index holds the keyed ones only (an upsert names its predicate).
DROP INDEX tasks_status;
CREATE INDEX tasks_finished_status ON tasks (status, id)
    WHERE status = 'succeeded' OR status = 'failed' OR status = 'cancelled';
ALTER TABLE tasks DROP CONSTRAINT tasks_idempotency_key_key;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
