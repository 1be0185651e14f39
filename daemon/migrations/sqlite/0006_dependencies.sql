-- Dependencies between tasks, and workflows of them (see the PostgreSQL migration of the
-- same number). A parent's has_children is set by the submit that names it. When a parent
-- finishes, the triggers below settle its waiting children in the same transaction: ready
-- once every parent succeeded, cancelled when one failed or was cancelled (and their own
-- waiting children after them: the connections run with recursive_triggers on). SQLite's
-- writer settles with triggers off and does the same itself (`sqlite::writer`).
ALTER TABLE tasks ADD COLUMN has_children INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN workflow_id TEXT;
ALTER TABLE tasks ADD COLUMN step TEXT;
CREATE INDEX tasks_workflow ON tasks (workflow_id, id) WHERE workflow_id IS NOT NULL;
CREATE INDEX tasks_waiting ON tasks (id) WHERE status = 'waiting';

CREATE TABLE task_deps (
    parent TEXT NOT NULL,
    child  TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX task_deps_child ON task_deps (child, parent);

CREATE TABLE workflows (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX workflows_name ON workflows (name, id);

-- Events carry a step's workflow id (13th, after the schedule's name).
DROP TRIGGER tasks_created;
DROP TRIGGER tasks_changed;

CREATE TRIGGER tasks_created AFTER INSERT ON tasks BEGIN
    INSERT INTO task_events (at, events)
    VALUES (NEW.updated_at,
            json_array(CASE WHEN NEW.workflow_id IS NULL THEN
                           json_array(NEW.id, 'created', NEW.status, NEW.attempts, NEW.worker,
                                      NEW.updated_at, NEW.kind, NEW.queue, NEW.priority,
                                      NEW.max_attempts, NEW.created_at)
                       ELSE
                           json_array(NEW.id, 'created', NEW.status, NEW.attempts, NEW.worker,
                                      NEW.updated_at, NEW.kind, NEW.queue, NEW.priority,
                                      NEW.max_attempts, NEW.created_at, NULL, NEW.workflow_id)
                       END));
END;

CREATE TRIGGER tasks_changed AFTER UPDATE OF status ON tasks
WHEN NEW.status <> OLD.status BEGIN
    INSERT INTO task_events (at, events)
    VALUES (NEW.updated_at,
            json_array(CASE WHEN NEW.workflow_id IS NULL THEN
                           json_array(NEW.id,
                                      CASE NEW.status WHEN 'running' THEN 'started'
                                                      ELSE NEW.status END,
                                      NEW.status, NEW.attempts, NEW.worker, NEW.updated_at,
                                      NEW.kind, NEW.queue, NEW.priority, NEW.max_attempts,
                                      NEW.created_at)
                       ELSE
                           json_array(NEW.id,
                                      CASE NEW.status WHEN 'running' THEN 'started'
                                                      ELSE NEW.status END,
                                      NEW.status, NEW.attempts, NEW.worker, NEW.updated_at,
                                      NEW.kind, NEW.queue, NEW.priority, NEW.max_attempts,
                                      NEW.created_at, NULL, NEW.workflow_id)
                       END));
END;

CREATE TRIGGER tasks_children_ready AFTER UPDATE OF status ON tasks
WHEN NEW.status = 'succeeded' AND OLD.status <> 'succeeded' AND NEW.has_children BEGIN
    UPDATE tasks SET status = CASE WHEN run_at > NEW.updated_at THEN 'scheduled' ELSE 'queued' END,
        run_at = MAX(run_at, NEW.updated_at), updated_at = NEW.updated_at, published_at = NULL
    WHERE status = 'waiting'
      AND id IN (SELECT child FROM task_deps WHERE parent = NEW.id)
      AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks p ON p.id = d.parent
                      WHERE d.child = tasks.id AND p.status <> 'succeeded');
END;

CREATE TRIGGER tasks_children_doomed AFTER UPDATE OF status ON tasks
WHEN NEW.status IN ('failed', 'cancelled') AND OLD.status <> NEW.status AND NEW.has_children
BEGIN
    UPDATE tasks SET status = 'cancelled', finished_at = NEW.updated_at,
        updated_at = NEW.updated_at,
        last_error = 'dependency_failed: '
            || CASE WHEN NEW.step IS NULL THEN 'task ' || NEW.id
                    ELSE 'step ' || NEW.step || ' (task ' || NEW.id || ')' END
            || ' ' || CASE WHEN NEW.status = 'failed' THEN 'failed' ELSE 'was cancelled' END
    WHERE status = 'waiting' AND id IN (SELECT child FROM task_deps WHERE parent = NEW.id);
END;
