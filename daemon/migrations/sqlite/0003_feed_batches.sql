-- The change feed in the shape PostgreSQL writes it (see the PostgreSQL migration of the
-- same number): a row holds a JSON array of events, each with its task's unchanging fields,
-- and an event's id is the row's seq times 2^20 plus its place in the array. SQLite has
-- no statement-level triggers, so here each change is a row of one event.
DROP TRIGGER tasks_created;
DROP TRIGGER tasks_changed;
DROP TABLE task_events;

CREATE TABLE task_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    events TEXT NOT NULL
);
CREATE INDEX task_events_at ON task_events (at);

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

-- Publisher tokens and the outbox as on PostgreSQL (see its migration of the same number),
-- for a SQLite database used with a RabbitMQ broker.
CREATE TABLE publishers (
    token        INTEGER PRIMARY KEY,
    heartbeat_at INTEGER NOT NULL
);
DROP INDEX tasks_unpublished;
CREATE INDEX tasks_unpublished ON tasks (created_at)
    WHERE status = 'queued' AND published_at IS NULL;
