-- Dependencies between tasks, and workflows of them.
--
-- A task that depends on others is `waiting` until every parent has succeeded. Its parents
-- carry has_children, set (under the parent's row lock) by the submit that names them, so
-- finishing a task without children costs nothing more. When a parent finishes, the
-- statement trigger below settles its waiting children in the same transaction: ready once
-- every parent succeeded, cancelled (and theirs after them) when one failed or was
-- cancelled. Its queries run after the statement's row locks were taken, each with a
-- fresh snapshot, so a child committed while its parent was being settled is seen.
ALTER TABLE tasks ADD COLUMN has_children BOOLEAN NOT NULL DEFAULT FALSE;
-- A workflow's steps: its id and the step's id in it.
ALTER TABLE tasks ADD COLUMN workflow_id TEXT COLLATE "C";
ALTER TABLE tasks ADD COLUMN step TEXT;
CREATE INDEX tasks_workflow ON tasks (workflow_id, id) WHERE workflow_id IS NOT NULL;
-- Waiting tasks, for listing by status.
CREATE INDEX tasks_waiting ON tasks (id) WHERE status = 'waiting';

-- An edge per dependency. A parent may be deleted by retention after it succeeded; its
-- children no longer wait for it.
CREATE TABLE task_deps (
    parent TEXT COLLATE "C" NOT NULL,
    child  TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (parent, child)
);
CREATE INDEX task_deps_child ON task_deps (child, parent);

CREATE TABLE workflows (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX workflows_name ON workflows (name, id);

-- Settles the waiting children of tasks that just finished (`finished`), at `at`.
CREATE FUNCTION taskplane_resolve(parents TEXT[], settled BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Every waiting task this may change, locked in id order first: two settles sharing
    -- children (a diamond's two branches) never each hold one the other waits for.
    PERFORM 1 FROM tasks
    WHERE status = 'waiting' AND id IN (
        WITH RECURSIVE doomed (id) AS (
            SELECT d.child FROM task_deps d JOIN tasks p ON p.id = d.parent
            WHERE d.parent = ANY (parents) AND p.status IN ('failed', 'cancelled')
            UNION
            SELECT d.child FROM task_deps d JOIN doomed ON d.parent = doomed.id)
        SELECT id FROM doomed
        UNION
        SELECT child FROM task_deps WHERE parent = ANY (parents))
    ORDER BY id FOR UPDATE;

    -- A failed or cancelled parent: its waiting descendants are cancelled, each naming
    -- the parent it waited for.
    WITH RECURSIVE doomed (id, parent) AS (
        SELECT d.child, d.parent FROM task_deps d JOIN tasks p ON p.id = d.parent
        WHERE d.parent = ANY (parents) AND p.status IN ('failed', 'cancelled')
        UNION
        SELECT d.child, d.parent FROM task_deps d JOIN doomed ON d.parent = doomed.id)
    UPDATE tasks SET status = 'cancelled', finished_at = settled, updated_at = settled,
        last_error = 'dependency_failed: '
            || CASE WHEN p.step IS NULL THEN 'task ' || p.id
                    ELSE 'step ' || p.step || ' (task ' || p.id || ')' END
            || ' ' || CASE WHEN p.status = 'failed' THEN 'failed' ELSE 'was cancelled' END
    FROM (SELECT id, MIN(parent) AS parent FROM doomed GROUP BY id) c
    JOIN tasks p ON p.id = c.parent
    WHERE tasks.id = c.id AND tasks.status = 'waiting';

    -- A succeeded parent: each waiting child whose parents have all succeeded is ready.
    UPDATE tasks SET status = CASE WHEN run_at > settled THEN 'scheduled' ELSE 'queued' END,
        run_at = GREATEST(run_at, settled), updated_at = settled, published_at = NULL
    WHERE status = 'waiting'
      AND id IN (SELECT child FROM task_deps WHERE parent = ANY (parents))
      AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks p ON p.id = d.parent
                      WHERE d.child = tasks.id AND p.status <> 'succeeded');
    IF FOUND THEN
        PERFORM pg_notify('taskplane_ready', '');
    END IF;
END
$$;

-- The change feed's events now carry a step's workflow id (13th, after the schedule's
-- name); a task of no workflow keeps the 11 fields. And a statement that finished a task
-- with children settles them.
CREATE OR REPLACE FUNCTION taskplane_tasks_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_events (at, events)
    SELECT MAX(at), json_agg(event ORDER BY rn)::text
    FROM (SELECT row_number() OVER (ORDER BY id) AS rn, updated_at AS at,
                 CASE WHEN workflow_id IS NULL THEN
                     json_build_array(id, 'created', status, attempts, worker, updated_at,
                                      kind, queue, priority, max_attempts, created_at)
                 ELSE
                     json_build_array(id, 'created', status, attempts, worker, updated_at,
                                      kind, queue, priority, max_attempts, created_at, NULL,
                                      workflow_id)
                 END AS event
          FROM created_rows) AS changes
    GROUP BY (rn - 1) / 65536
    ORDER BY (rn - 1) / 65536;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION taskplane_tasks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    finished_ids TEXT[];
    finished_at_ms BIGINT;
BEGIN
    INSERT INTO task_events (at, events)
    SELECT MAX(at), json_agg(event ORDER BY rn)::text
    FROM (SELECT row_number() OVER (ORDER BY a.id) AS rn, a.updated_at AS at,
                 CASE WHEN a.workflow_id IS NULL THEN
                     json_build_array(a.id,
                                      CASE a.status WHEN 'running' THEN 'started' ELSE a.status END,
                                      a.status, a.attempts, a.worker, a.updated_at, a.kind,
                                      a.queue, a.priority, a.max_attempts, a.created_at)
                 ELSE
                     json_build_array(a.id,
                                      CASE a.status WHEN 'running' THEN 'started' ELSE a.status END,
                                      a.status, a.attempts, a.worker, a.updated_at, a.kind,
                                      a.queue, a.priority, a.max_attempts, a.created_at, NULL,
                                      a.workflow_id)
                 END AS event
          FROM new_rows a JOIN old_rows b ON b.id = a.id
          WHERE a.status IS DISTINCT FROM b.status) AS changes
    GROUP BY (rn - 1) / 65536
    ORDER BY (rn - 1) / 65536;
    IF EXISTS (SELECT 1 FROM new_rows
               WHERE has_children AND status IN ('succeeded', 'failed', 'cancelled')) THEN
        SELECT array_agg(a.id), MAX(a.updated_at) INTO finished_ids, finished_at_ms
        FROM new_rows a JOIN old_rows b ON b.id = a.id
        WHERE a.has_children AND a.status IN ('succeeded', 'failed', 'cancelled')
          AND a.status IS DISTINCT FROM b.status;
        IF finished_ids IS NOT NULL THEN
            PERFORM taskplane_resolve(finished_ids, finished_at_ms);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
