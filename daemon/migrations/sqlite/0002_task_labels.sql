-- Labels as rows, so that a label selector (`GET /api/v1/tasks?label=team=ops`) reads an
-- index instead of every task's JSON. tasks.labels stays the task's labels as written; these
-- rows are written in the same transaction as the task and go with it.
CREATE TABLE task_labels (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (task_id, key)
) WITHOUT ROWID;
-- A selector: the tasks with a label (key) or a label and value, newest first.
CREATE INDEX task_labels_select ON task_labels (key, value, task_id);

INSERT INTO task_labels (task_id, key, value)
SELECT tasks.id, labels.key, labels.value
FROM tasks, json_each(tasks.labels) AS labels
WHERE tasks.labels <> '{}';
