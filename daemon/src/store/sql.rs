//! The SQL both backends share. Placeholders are `$N`, which sqlx binds by number on SQLite
//! and PostgreSQL alike; instants are Unix milliseconds and ids are text on both, so the
//! statements read the same. Dialect-specific statements live in the backend's module.

use super::ListFilter;
use crate::domain::labels::Selector;
use taskplane_api::TaskStatus;

/// How a statement that changes many task rows locks them. On PostgreSQL it locks them first,
/// in id order (`ordered`: waiting for a row another transaction holds; `skip`: passing over
/// it, where a later round picks it up), so two such statements can never each hold a row the
/// other waits for: no deadlocks by construction. SQLite has one writer and needs neither.
#[derive(Debug, Clone, Copy)]
pub struct Locks {
    pub ordered: &'static str,
    pub skip: &'static str,
}

pub const SQLITE_LOCKS: Locks = Locks {
    ordered: "",
    skip: "",
};

pub const POSTGRES_LOCKS: Locks = Locks {
    ordered: " FOR UPDATE",
    skip: " FOR UPDATE SKIP LOCKED",
};

/// How a multi-row statement's parameters are written. PostgreSQL numbers them (`$N`).
/// SQLite takes them in order (`?`): it keeps numbered and named parameters in a list that
/// each bind scans (`sqlite3_bind_parameter_name`), so binding a statement of n numbered
/// parameters costs n² steps (15 % of the writer thread's time at 32 rows of 15), while
/// anonymous ones cost none. A statement written for `InOrder` uses each parameter once,
/// in the order they are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    Numbered,
    InOrder,
}

impl Params {
    /// The placeholder of parameter `n` (from 1).
    fn nth(self, n: usize) -> String {
        match self {
            Params::Numbered => format!("${n}"),
            Params::InOrder => "?".to_owned(),
        }
    }

    /// Placeholders `first ..= first + count - 1`, comma-separated.
    pub(super) fn run(self, first: usize, count: usize) -> String {
        (first..first + count)
            .map(|n| self.nth(n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `UPDATE tasks SET {set} WHERE {filter}`, with the rows locked first in id order (`lock`)
/// and the filter checked again on the locked rows.
fn update_locked(set: &str, filter: &str, lock: &str) -> String {
    update_locked_found(set, filter, filter, lock)
}

/// [`update_locked`] for rows named by id: `find` picks them (by id alone, so the planner
/// takes the primary key: with the status there too it may walk every queued task of a
/// backlog), and `filter` is checked on the locked rows.
fn update_locked_found(set: &str, find: &str, filter: &str, lock: &str) -> String {
    format!(
        "WITH locked AS (SELECT id AS locked_id FROM tasks WHERE {find} ORDER BY id{lock})
         UPDATE tasks SET {set} FROM locked WHERE tasks.id = locked.locked_id AND {filter}"
    )
}

/// The columns a [`StoredTask`](super::StoredTask) is decoded from.
pub const TASK_COLUMNS: &str = "id, kind, queue, priority, payload, status, attempts, max_attempts, \
     timeout_secs, run_at, created_at, updated_at, started_at, finished_at, result, last_error, \
     idempotency_key, labels, worker, cancel_requested, retry_base_ms, retry_max_ms, workflow_id, \
     step, concurrency_key, concurrency_limit";

/// The columns a [`ClaimedTask`](super::ClaimedTask) is decoded from.
pub const CLAIM_COLUMNS: &str = "id, kind, queue, payload, attempts, max_attempts, timeout_secs, \
     priority, retry_base_ms, retry_max_ms, created_at, workflow_id, trace_parent";

/// What a claim writes: running under `$1`'s lease until `$2`, started at `$3`.
pub const CLAIM_SET: &str = "status = 'running', attempts = attempts + 1, worker = $1, \
     lease_owner = $1, lease_expires_at = $2, started_at = $3, updated_at = $3";

/// Rows per multi-row statement (inserts, success settles, labels, hand-backs and marks),
/// written with numbered parameters: a batch of up to this many is one statement, committed
/// on its own where it can be. Small on purpose: bigger statements cost PostgreSQL more to
/// plan than they save in round trips, and SQLite looks up each numbered parameter by a
/// linear scan, so binding costs grow with the square of a statement's parameters (see
/// [`Params`]).
pub const ROWS_PER_STATEMENT: usize = 32;

/// Columns bound per row by [`insert_rows`].
pub const INSERT_PARAMS: usize = 21;

/// A multi-row insert of `rows` tasks (21 parameters each, in the column order below); a task
/// whose idempotency key exists is skipped. With `returning` it answers the ids it inserted
/// (only keyed tasks can be skipped, so a batch without keys needs no answer but the count,
/// and the rows need not travel back one by one).
pub fn insert_rows(rows: usize, params: Params, returning: bool) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("({})", params.run(r * INSERT_PARAMS + 1, INSERT_PARAMS)))
        .collect();
    format!(
        "INSERT INTO tasks (id, kind, queue, priority, payload, status, max_attempts,
             timeout_secs, run_at, created_at, updated_at, idempotency_key, labels,
             retry_base_ms, retry_max_ms, published_at, workflow_id, step, concurrency_key,
             concurrency_limit, trace_parent)
         VALUES {}
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING{}",
        values.join(", "),
        if returning { " RETURNING id" } else { "" }
    )
}

/// Settles `rows` succeeded tasks in one statement: now and the worker, then an id and a
/// result per task. It changes the rows the worker still held (the count says whether that
/// was all; [`settled_check`] tells which). The rows are locked in id order first, as every
/// multi-row statement does, so it may run as a statement of its own (no transaction
/// around it).
pub fn settle_succeeded_rows(rows: usize, locks: Locks, params: Params) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("({})", params.run(3 + 2 * r, 2)))
        .collect();
    // Now and the worker are bound once (`p`), as `InOrder` parameters must be.
    format!(
        "WITH p (settled_at, settler) AS (VALUES ({})),
         b (settled_id, settled_result) AS (VALUES {}),
         locked AS (SELECT id AS locked_id FROM tasks
             WHERE id IN (SELECT settled_id FROM b) AND status = 'running'
               AND lease_owner = (SELECT settler FROM p)
             ORDER BY id{})
         UPDATE tasks SET status = 'succeeded', result = b.settled_result,
             finished_at = (SELECT settled_at FROM p), lease_owner = NULL,
             lease_expires_at = NULL, updated_at = (SELECT settled_at FROM p)
         FROM b, locked
         WHERE tasks.id = b.settled_id AND tasks.id = locked.locked_id
           AND tasks.status = 'running'",
        params.run(1, 2),
        values.join(", "),
        locks.ordered
    )
}

/// Which of `rows` ids a [`settle_succeeded_rows`] by the worker at an instant settled: the
/// ids, then the worker, then the instant.
pub fn settled_check(rows: usize, params: Params) -> String {
    format!(
        "SELECT id FROM tasks WHERE id IN ({}) AND status = 'succeeded' AND worker = {}
           AND finished_at = {}",
        params.run(1, rows),
        params.nth(rows + 1),
        params.nth(rows + 2)
    )
}

pub fn select_by_id() -> String {
    format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1")
}

pub fn select_by_key() -> String {
    format!("SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key = $1")
}

/// Inserts `rows` label rows: a task id, a key and a value each.
pub fn insert_labels(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
        .collect();
    format!(
        "INSERT INTO task_labels (task_id, key, value) VALUES {}",
        values.join(", ")
    )
}

/// A page of tasks, newest first, of `filter`'s status. Its parameters, numbered from `$1`
/// and only for what is given: the queue, the kind, the id the page starts `before`, each
/// label selector's key (and value, if it has one) in order, and last the most rows.
///
/// One selector, `driver` (`key=value` or `key`), finds its tasks through the label index;
/// every other one looks up the candidate's own label by primary key. So the work is bounded
/// by the driver's matches (or the table) times the selectors, whatever the planner believes
/// about the labels: two semi-joins on a table without statistics yet were planned by
/// PostgreSQL as a nested loop over both label sets (47 s on 100k tasks).
pub fn list(filter: &ListFilter, before: bool, driver: Option<usize>, name_index: bool) -> String {
    // Only the filters given are written, the status as a literal: the planner then sees
    // `status = 'failed'` and can read the partial index that holds that status (with
    // `$1 IS NULL OR status = $1` it could use none, and scanned every id).
    let mut conditions = Vec::new();
    if let Some(status) = filter.status {
        conditions.push(format!("status = '{}'", status.as_str()));
    }
    let mut next = 1;
    let mut param = || {
        next += 1;
        next - 1
    };
    if filter.queue.is_some() {
        conditions.push(format!("queue = ${}", param()));
    }
    if filter.kind.is_some() {
        conditions.push(format!("kind = ${}", param()));
    }
    if before {
        conditions.push(format!("id < ${}", param()));
    }
    for (i, selector) in filter.labels.iter().enumerate() {
        let key = param();
        let value = selector.value().map(|_| param());
        let condition = if Some(i) == driver {
            match value {
                Some(value) => format!(
                    "id IN (SELECT task_id FROM task_labels WHERE key = ${key} AND value = ${value})"
                ),
                None => format!("id IN (SELECT task_id FROM task_labels WHERE key = ${key})"),
            }
        } else {
            let own = format!(
                "(SELECT value FROM task_labels WHERE task_id = tasks.id AND key = ${key})"
            );
            match (selector, value) {
                (Selector::Equals(..), Some(value)) => format!("{own} = ${value}"),
                (Selector::NotEquals(..), Some(value)) => {
                    format!("{own} IS DISTINCT FROM ${value}")
                }
                (Selector::Exists(_), _) => format!("{own} IS NOT NULL"),
                _ => format!("{own} IS NULL"),
            }
        };
        conditions.push(condition);
    }
    let limit = param();
    // A state the workers keep small (running), or that only the clock empties (scheduled,
    // retrying), is read whole through its index and sorted; finished tasks, through
    // theirs in id order. Queued ones are left to the planner: a backlog is the newest
    // tasks, found first in id order. The index is named only where the planner would
    // otherwise walk ids (SQLite has no statistics) and no label selector may be narrower.
    let index = match filter.status {
        _ if !name_index || !filter.labels.is_empty() => None,
        Some(TaskStatus::Running) => Some("tasks_leases"),
        Some(TaskStatus::Waiting) => Some("tasks_waiting"),
        Some(TaskStatus::Scheduled | TaskStatus::Retrying) => Some("tasks_due"),
        Some(TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled) => {
            Some("tasks_finished_status")
        }
        Some(TaskStatus::Queued) | None => None,
    };
    let indexed = index.map_or(String::new(), |index| format!(" INDEXED BY {index}"));
    let filters = if conditions.is_empty() {
        String::new()
    } else {
        format!("\n         WHERE {}", conditions.join("\n           AND "))
    };
    format!(
        "SELECT {TASK_COLUMNS} FROM tasks{indexed}{filters}
         ORDER BY id DESC
         LIMIT ${limit}"
    )
}

/// How many tasks have label `$1` = `$2`, counted up to 1000: with several `key=value`
/// selectors, the one with the fewest drives the list.
pub const LABEL_PROBE: &str = "SELECT COUNT(*) FROM
     (SELECT 1 FROM task_labels WHERE key = $1 AND value = $2 LIMIT 1000) AS probe";

/// The `last_error` of a waiting task cancelled because its parent (a workflow's `step`)
/// ended `status`: the same words as migration 6's triggers write.
pub fn dependency_failed(parent: &str, step: Option<&str>, status: TaskStatus) -> String {
    let who = match step {
        Some(step) => format!("step {step} (task {parent})"),
        None => format!("task {parent}"),
    };
    let how = if status == TaskStatus::Failed {
        "failed"
    } else {
        "was cancelled"
    };
    format!("dependency_failed: {who} {how}")
}

/// Waiting tasks are cancelled at once; a running one is flagged for its worker.
pub fn cancel() -> String {
    format!(
        "UPDATE tasks SET
             status = CASE WHEN status = 'running' THEN 'running' ELSE 'cancelled' END,
             finished_at = CASE WHEN status = 'running' THEN finished_at ELSE $2 END,
             cancel_requested = TRUE,
             updated_at = $2
         WHERE id = $1 AND status IN ('waiting', 'scheduled', 'queued', 'retrying', 'running')
         RETURNING {TASK_COLUMNS}"
    )
}

/// What a manual retry resets: a fresh set of attempts, ready now (`$1`), or waiting again
/// while a parent it depends on has not succeeded.
const REQUEUE: &str = "status = CASE WHEN EXISTS (SELECT 1 FROM task_deps d
             JOIN tasks p ON p.id = d.parent WHERE d.child = tasks.id AND p.status <> 'succeeded')
         THEN 'waiting' ELSE 'queued' END, last_error = NULL, attempts = 0, run_at = $1, updated_at = $1,
     started_at = NULL, finished_at = NULL, result = NULL, worker = NULL,
     cancel_requested = FALSE, published_at = NULL";

pub fn retry() -> String {
    format!(
        "UPDATE tasks SET {REQUEUE}
         WHERE id = $2 AND status IN ('failed', 'cancelled')
         RETURNING {TASK_COLUMNS}"
    )
}

/// Every failed task, or those of one kind (`$2`) or queue (`$3`); not those of the kinds
/// `$4` lists, comma-separated, when given (the kinds only an admin may run,
/// [`crate::domain::kinds::admin_list`]).
pub fn retry_failed(locks: Locks) -> String {
    update_locked(
        REQUEUE,
        "status = 'failed' AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR queue = $3)
           AND ($4 IS NULL OR (',' || $4 || ',') NOT LIKE ('%,' || kind || ',%'))",
        locks.skip,
    )
}

/// Which finished tasks a purge or the retention sweep removes (their output goes with them,
/// `ON DELETE CASCADE`): `$1` statuses as a
/// comma-separated list, finished before `$2`, of kind `$3` and queue `$4` when given,
/// workflow steps only when `$5` is 1. At most 1000 at a time, so no statement holds its
/// locks for long.
pub fn delete_finished(locks: Locks) -> String {
    format!(
        "WITH doomed AS (SELECT id FROM tasks
             WHERE finished_at IS NOT NULL AND finished_at < $2
               AND (',' || $1 || ',') LIKE ('%,' || status || ',%')
               AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR queue = $4)
               AND ($5 = 1 OR workflow_id IS NULL)
             ORDER BY id
             LIMIT 1000{})
         DELETE FROM tasks WHERE id IN (SELECT id FROM doomed)",
        locks.skip
    )
}

/// Workflows created before `$1` none of whose steps is left.
pub const DELETE_EMPTY_WORKFLOWS: &str = "DELETE FROM workflows WHERE created_at < $1
     AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.workflow_id = workflows.id)";

/// The guard every outcome shares: only the worker holding the lease may settle.
const GUARD: &str = "WHERE id = $1 AND status = 'running' AND lease_owner = $2";
const RELEASE: &str = "lease_owner = NULL, lease_expires_at = NULL, updated_at = $3";

/// One success (`$4`, the result): SQLite's writer settles row by row (see
/// `sqlite::writer`); PostgreSQL settles many in one [`settle_succeeded_rows`].
pub fn settle_succeeded() -> String {
    format!(
        "UPDATE tasks SET status = 'succeeded', result = $4, finished_at = $3, {RELEASE} {GUARD}"
    )
}

pub fn settle_retrying() -> String {
    format!("UPDATE tasks SET status = 'retrying', last_error = $4, run_at = $5, {RELEASE} {GUARD}")
}

pub fn settle_failed() -> String {
    format!(
        "UPDATE tasks SET status = 'failed', last_error = $4, finished_at = $3, {RELEASE} {GUARD}"
    )
}

pub fn settle_cancelled() -> String {
    format!("UPDATE tasks SET status = 'cancelled', finished_at = $3, {RELEASE} {GUARD}")
}

/// Back to ready without counting the attempt (the worker is shutting down).
pub fn settle_requeued() -> String {
    format!(
        "UPDATE tasks SET status = 'queued', attempts = attempts - 1, started_at = NULL,
             run_at = $3, published_at = NULL, {RELEASE} {GUARD}"
    )
}

pub fn renew(locks: Locks) -> String {
    update_locked(
        "lease_expires_at = $2",
        "lease_owner = $1 AND status = 'running'",
        locks.ordered,
    )
}

pub const CANCEL_REQUESTS: &str = "SELECT id FROM tasks
     WHERE lease_owner = $1 AND status = 'running' AND cancel_requested = TRUE";

pub fn promote(locks: Locks) -> String {
    update_locked(
        "status = 'queued', updated_at = $1, published_at = NULL",
        "(status = 'scheduled' OR status = 'retrying') AND run_at <= $1",
        locks.skip,
    )
}

/// Running tasks whose lease ran out: their worker is gone.
pub fn reap(locks: Locks) -> String {
    update_locked(
        "status = CASE WHEN cancel_requested = TRUE THEN 'cancelled'
                       WHEN attempts >= max_attempts THEN 'failed'
                       ELSE 'queued' END,
         finished_at = CASE WHEN cancel_requested = TRUE OR attempts >= max_attempts
                            THEN $1 ELSE NULL END,
         last_error = 'worker ' || COALESCE(lease_owner, '?')
             || ' stopped renewing its lease during attempt ' || attempts
             || ' (it crashed or was killed)',
         run_at = $1, lease_owner = NULL, lease_expires_at = NULL, updated_at = $1,
         published_at = NULL",
        "status = 'running' AND lease_expires_at < $1",
        locks.skip,
    )
}

pub const APPEND_LOG: &str = "INSERT INTO task_logs (task_id, attempt, stream, ts, line)
     VALUES ($1, $2, $3, $4, $5)";

pub const LOGS: &str = "SELECT seq, attempt, stream, ts, line FROM task_logs
     WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// Ready tasks the dispatcher must publish (requeued, due, retried, handed back), oldest
/// first within a priority.
pub const UNPUBLISHED: &str = "SELECT id, kind, queue, priority, updated_at,
         concurrency_key IS NOT NULL AS keyed FROM tasks
     WHERE status = 'queued' AND published_at IS NULL
     ORDER BY priority DESC, created_at
     LIMIT $1";

/// A publisher's heartbeat: `$1` its token, `$2` now.
pub const PUBLISHER_BEAT: &str = "INSERT INTO publishers (token, heartbeat_at) VALUES ($1, $2)
     ON CONFLICT (token) DO UPDATE SET heartbeat_at = excluded.heartbeat_at";

pub const PRUNE_PUBLISHERS: &str = "DELETE FROM publishers WHERE heartbeat_at < $1";

/// Appends an audit entry: `$1` at, `$2` actor, `$3` action, `$4` target, `$5` details.
pub const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)";

/// What the claims of ungated work add to their filter: no keyed task (the gated claim
/// takes those).
pub const UNKEYED: &str = " AND tasks.concurrency_key IS NULL";

/// What the claims of ungated work add to their filter: no keyed task and no task of a
/// gated queue (see [`super::controls`]); the gated claim takes those. `queue` is the
/// expression of the task's queue (a parameter when the statement claims from one queue,
/// so the check runs once).
pub fn ungated(queue: &str) -> String {
    format!(
        "{UNKEYED} AND NOT EXISTS (SELECT 1 FROM queue_settings g
             WHERE g.queue = {queue} AND g.gated)"
    )
}

/// PostgreSQL's check that a row's queue is not gated, for statements over rows of many
/// queues: the gated queues are read once (an InitPlan) and each row's queue compared with
/// them. A correlated `NOT EXISTS` here made the claim by id an anti-join whose estimates
/// led PostgreSQL to memoize the lookup of every claimed row (13 % more of its CPU per
/// task at single submits).
pub const NOT_GATED_QUEUE: &str =
    " AND queue <> ALL (ARRAY(SELECT g.queue FROM queue_settings g WHERE g.gated))";

/// The gated claim of the listed tasks (ids from `$4` on) that are still queued: `$1` the
/// worker, `$2` its lease's end, `$3` now (see [`CLAIM_SET`]).
pub fn claim_listed(rows: usize, locks: Locks) -> String {
    update_locked_found(
        CLAIM_SET,
        &format!("id IN ({})", Params::Numbered.run(4, rows)),
        "tasks.status = 'queued'",
        locks.ordered,
    )
}

/// A queue that stops being gated (resumed, its limits cleared): its ready tasks were not
/// published while it was gated, or their deliveries were passed over and acknowledged, so
/// they go to the dispatcher to be published (a task still in the broker is then delivered
/// twice, and the guarded claim drops the second; the sweep marks a leased kind's or a
/// keyed task's without publishing it). With the db broker nothing reads the mark. `$1` the
/// queue, `$2` now: `updated_at` moves, so a dispatcher's mark of a publish made before (and
/// passed over while the queue was gated) is refused and the task is published again.
pub fn ungate(locks: Locks) -> String {
    update_locked(
        "published_at = NULL, updated_at = $2",
        "queue = $1 AND status = 'queued' AND published_at IS NOT NULL",
        locks.ordered,
    )
}

/// Hands tasks their publisher could not publish to the dispatcher: `$1` the publisher's
/// mark (its token, negated), the ids from `$2` on.
pub fn hand_back_rows(rows: usize, locks: Locks) -> String {
    let find = format!("id IN ({})", Params::Numbered.run(2, rows));
    update_locked_found(
        "published_at = NULL",
        &find,
        &format!("status = 'queued' AND published_at = $1 AND {find}"),
        locks.ordered,
    )
}

/// Hands the dispatcher the ready tasks of publishers that stopped: stamped with a token
/// (or 0, nobody) before `$1`, and no publisher with that token has beaten since.
pub fn orphaned(locks: Locks) -> String {
    update_locked(
        "published_at = NULL",
        "status = 'queued' AND published_at <= 0 AND created_at < $1
           AND NOT EXISTS (SELECT 1 FROM publishers
                           WHERE token = -tasks.published_at AND heartbeat_at >= $1)",
        locks.skip,
    )
}

/// Marks `rows` tasks published at `$1`: an id and an `updated_at` each from `$2` on,
/// guarded by `updated_at`, so a task that changed since it was read (and may need another
/// publish) is not marked. Rows another transaction holds are passed over (they are being
/// claimed or changed); the sweep publishes an unmarked task again, and the guarded claim
/// drops the duplicate.
pub fn mark_published_rows(rows: usize, locks: Locks) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(${}, ${})", 2 + 2 * r, 3 + 2 * r))
        .collect();
    // A row-value IN keeps the locking select on one table (both SQLite and PostgreSQL
    // take it), so the same lock clause as every other statement applies.
    let ids: Vec<String> = (0..rows).map(|r| format!("${}", 2 + 2 * r)).collect();
    update_locked_found(
        "published_at = $1",
        &format!("id IN ({})", ids.join(", ")),
        &format!(
            "status = 'queued' AND (id, updated_at) IN (VALUES {})",
            values.join(", ")
        ),
        locks.skip,
    )
}

/// A worker exiting without a drain hands its running tasks back: ready again without
/// counting the attempt, or cancelled if that was asked for.
pub fn release_leases(locks: Locks) -> String {
    update_locked(
        "status = CASE WHEN cancel_requested = TRUE THEN 'cancelled' ELSE 'queued' END,
         finished_at = CASE WHEN cancel_requested = TRUE THEN $2 ELSE NULL END,
         attempts = CASE WHEN cancel_requested = TRUE THEN attempts ELSE attempts - 1 END,
         started_at = CASE WHEN cancel_requested = TRUE THEN started_at ELSE NULL END,
         run_at = $2, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2,
         published_at = NULL",
        "lease_owner = $1 AND status = 'running'",
        locks.ordered,
    )
}

/// Change-feed rows (each a JSON array of events) with `seq` in `($1, $2]`, oldest first.
pub const EVENTS: &str =
    "SELECT seq, events FROM task_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3";

/// [`EVENTS`] without an upper bound (`$2` is the limit): what the hub reads each tick. One
/// bound, so that PostgreSQL without statistics (autovacuum off, or not run yet) still
/// estimates many rows and walks the primary key in order up to the limit: with the
/// two-sided range it guessed a few hundred, then read and sorted every row above `$1`
/// (seconds per read once the hub fell behind).
pub const EVENTS_AFTER: &str =
    "SELECT seq, events FROM task_events WHERE seq > $1 ORDER BY seq LIMIT $2";

/// Change-feed rows below `$1`, newest first.
pub const EVENTS_BEFORE: &str =
    "SELECT seq, events FROM task_events WHERE seq < $1 ORDER BY seq DESC LIMIT $2";

pub const FIRST_EVENT_SINCE: &str = "SELECT MIN(seq) FROM task_events WHERE at >= $1";

pub const LATEST_EVENT: &str = "SELECT COALESCE(MAX(seq), 0) FROM task_events";

pub const TRIM_EVENTS: &str = "DELETE FROM task_events WHERE at < $1";

/// Tasks per queue and status; `oldest` is the earliest `run_at` in the group.
pub const QUEUE_COUNTS: &str = "SELECT queue, status, COUNT(*) AS n, MIN(run_at) AS oldest
     FROM tasks GROUP BY queue, status";

/// Tasks per queue and status that finished since `$1`.
pub const FINISHED_SINCE: &str = "SELECT queue, status, COUNT(*) AS n, MIN(finished_at) AS oldest
     FROM tasks WHERE finished_at >= $1 GROUP BY queue, status";

/// Tasks finished since `$1` per minute (its start, ms) and status: a range of the
/// `finished_at` index.
pub const FINISHED_BY_MINUTE: &str =
    "SELECT (finished_at / 60000) * 60000 AS minute, status, COUNT(*) AS n
     FROM tasks WHERE finished_at >= $1 GROUP BY 1, 2";

pub const HEARTBEAT: &str = "INSERT INTO workers
         (id, host, pid, queues, concurrency, busy, started_at, heartbeat_at, kinds, remote)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (id) DO UPDATE SET busy = excluded.busy, heartbeat_at = excluded.heartbeat_at,
         queues = excluded.queues, concurrency = excluded.concurrency, kinds = excluded.kinds";

/// A remote worker's heartbeat through one of its tasks' (`$1` its id, `$2` now).
pub const TOUCH_WORKER: &str = "UPDATE workers SET heartbeat_at = $2 WHERE id = $1";

pub const WORKERS: &str =
    "SELECT id, host, pid, queues, concurrency, busy, started_at, heartbeat_at, kinds, remote
     FROM workers WHERE heartbeat_at >= $1 ORDER BY id";

/// Extends one task's lease: `$1` the task, `$2` its lease owner, `$3` the attempt it runs,
/// `$4` the lease's new end. A single row found by its key: no lock order to keep.
pub const RENEW_ONE: &str = "UPDATE tasks SET lease_expires_at = $4
     WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running'
     RETURNING cancel_requested, lease_expires_at";

pub const REMOVE_WORKER: &str = "DELETE FROM workers WHERE id = $1";

pub const PRUNE_WORKERS: &str = "DELETE FROM workers WHERE heartbeat_at < $1";

/// A write that changes nothing but still reaches the disk (a row is rewritten as it is):
/// `/ready` uses it to learn whether refused writes are accepted again.
pub const PROBE_WRITE: &str = "UPDATE schema_migrations SET applied_at = applied_at
     WHERE version = (SELECT MAX(version) FROM schema_migrations)";
