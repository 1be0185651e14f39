-- Fewer writes per task (every write is WAL, an index entry and, later, vacuum work).
--
-- The change feed: one row per statement instead of one per task. A statement-level trigger
-- sees every row the statement changed (its transition tables) and writes their events as one
-- JSON array, so a claim of 64 tasks or a settle of 200 writes one feed row. An event's id is
-- the row's seq times 2^20 plus its place in the array (a statement changing more than 65,536
-- tasks writes several rows). Each event carries its task's unchanging fields, so reading the
-- feed joins nothing. The old rows are only minutes of history: they are dropped.
DROP TRIGGER tasks_events ON tasks;
DROP FUNCTION taskplane_task_event();
DROP TABLE task_events;

CREATE TABLE task_events (
    seq    BIGSERIAL PRIMARY KEY,
    -- The newest change in the row (retention and `since` read it).
    at     BIGINT NOT NULL,
    -- [[task id, event, status, attempts, worker, at, kind, queue, priority, max_attempts,
    --   created_at], ...] in task id order.
    events TEXT NOT NULL
);
-- Compressed in the row rather than moved out to TOAST chunks (more writes) where it fits.
ALTER TABLE task_events ALTER COLUMN events SET STORAGE MAIN;
CREATE INDEX task_events_at ON task_events (at);

CREATE FUNCTION taskplane_tasks_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_events (at, events)
    SELECT MAX(at), json_agg(event ORDER BY rn)::text
    FROM (SELECT row_number() OVER (ORDER BY id) AS rn, updated_at AS at,
                 json_build_array(id, 'created', status, attempts, worker, updated_at,
                                  kind, queue, priority, max_attempts, created_at) AS event
          FROM created_rows) AS changes
    GROUP BY (rn - 1) / 65536
    ORDER BY (rn - 1) / 65536;
    RETURN NULL;
END
$$;

CREATE FUNCTION taskplane_tasks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_events (at, events)
    SELECT MAX(at), json_agg(event ORDER BY rn)::text
    FROM (SELECT row_number() OVER (ORDER BY a.id) AS rn, a.updated_at AS at,
                 json_build_array(a.id,
                                  CASE a.status WHEN 'running' THEN 'started' ELSE a.status END,
                                  a.status, a.attempts, a.worker, a.updated_at, a.kind, a.queue,
                                  a.priority, a.max_attempts, a.created_at) AS event
          FROM new_rows a JOIN old_rows b ON b.id = a.id
          WHERE a.status IS DISTINCT FROM b.status) AS changes
    GROUP BY (rn - 1) / 65536
    ORDER BY (rn - 1) / 65536;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_created AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS created_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskplane_tasks_created();
-- Transition tables cannot be combined with a column list, so this fires on every update;
-- one that changes no status (a lease renewal) writes nothing.
CREATE TRIGGER tasks_changed AFTER UPDATE ON tasks
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskplane_tasks_changed();

-- The outbox without a write per publish. A submitting process stamps its tasks with its
-- publisher token (published_at = -token) in the insert itself and publishes them; nothing
-- is written when the broker confirms. Only what it could not publish is handed back
-- (published_at = NULL) to the dispatcher's sweep, and the tasks of a publisher whose
-- heartbeat stopped (it died between commit and publish) are handed back by any dispatcher.
-- published_at is now: NULL = the dispatcher must publish it; an instant = the dispatcher
-- published it then; 0 = nobody publishes it (the database is the queue); below 0 = the
-- publisher with that token (negated) publishes it.
CREATE TABLE publishers (
    token        BIGINT PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL
);
DROP INDEX tasks_unpublished;
CREATE INDEX tasks_unpublished ON tasks (created_at)
    WHERE status = 'queued' AND published_at IS NULL;
