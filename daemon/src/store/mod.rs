//! Task state: the [`Store`] trait that the API and the workers use, and its backends.
//!
//! Every state change is one guarded statement (`… WHERE id = ? AND status = …`), so two
//! workers racing on a task, a duplicate delivery or a stale report change nothing.

mod controls;
mod decode;
mod group;
mod postgres;
mod schedules;
mod sql;
mod sql_store;
mod sqlite;
mod workflows;

use std::sync::Arc;

use taskplane_api::{LogStream, TaskStatus};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::lifecycle::Settlement;
use crate::domain::validate::NewTask;

pub use controls::{
    AuditEntry, AuditFilter, AuditRow, Controls, GateState, GatedClaim, QueueChange,
};
pub use group::GroupCommit;
pub(crate) use group::{next_group, take_waiting};
pub use postgres::PgStore;
pub use schedules::{Fire, ScheduleRow, Schedules};
pub use sql_store::{Dialect, SqlStore};
pub use sqlite::SqliteStore;
pub use workflows::{Graph, GraphRefused, WorkflowRow, WorkflowState, WorkflowSummary, Workflows};

pub use crate::util::BoxFuture;
use crate::util::redact_url;

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement, or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A row holds something this version cannot read (a status or id it does not know).
    #[error("corrupt row for task {id}: {reason}")]
    Corrupt { id: String, reason: String },
    /// Applying the schema failed.
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    /// The database refused recent writes (the reason is the last refusal's error).
    #[error("the database refuses writes: {0}")]
    WritesRefused(String),
    /// The database URL names a backend this build cannot use.
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://…")]
    Unsupported(String),
    /// The process is shutting down: its submit writer has stopped.
    #[error("taskd is shutting down")]
    Stopped,
}

impl StoreError {
    /// True when the database is unreachable, restarting or refusing writes (a full disk, a
    /// read-only file): worth a retry and a 503, as opposed to a statement that will fail
    /// again whatever the database's state.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(error) => match error {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
                _ => false,
            },
            StoreError::WritesRefused(_) | StoreError::Stopped => true,
            _ => false,
        }
    }
}

impl StoreError {
    /// True when the database itself refuses writes (a full disk, a read-only file or
    /// server, lost I/O), as opposed to being busy: another writer's lock (SQLite's BUSY and
    /// LOCKED) or an exhausted pool is load, and says nothing about the next write.
    pub fn refuses_writes(&self) -> bool {
        if !self.is_unavailable() {
            return false;
        }
        match self {
            StoreError::Database(sqlx::Error::PoolTimedOut) => false,
            StoreError::Database(sqlx::Error::Database(db)) => !db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
            _ => true,
        }
    }

    /// The database's own words for the failure, without the layers above it (for an API
    /// error message or a probe).
    pub fn reason(&self) -> String {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db.message().to_owned(),
            StoreError::WritesRefused(reason) => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// Error codes that describe the database's state rather than the statement: PostgreSQL's
/// SQLSTATE classes and SQLite's (extended) result codes.
fn unavailable_code(code: &str) -> bool {
    // 08: connection exceptions; 53: insufficient resources (disk full, out of memory, too
    // many connections); 57P0x: shutting down or starting; 58: system errors (I/O);
    // 25006: a read-only transaction (a standby, or default_transaction_read_only).
    if code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || code == "25006"
    {
        return true;
    }
    // SQLite reports extended codes; the primary code is the low byte. BUSY (5), LOCKED (6):
    // another writer; NOMEM (7); READONLY (8); IOERR (10); CORRUPT is not here: it will not
    // heal by itself; FULL (13); CANTOPEN (14); PROTOCOL (15).
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15))
}

/// What writes found lately: whether the database refuses them now, and why. Reads may keep
/// working meanwhile (SQLite on a full disk reads fine), so `/ready` asks this too.
///
/// A refusal counts for [`REFUSAL_HOLDS`]: on a nearly full disk small writes (a lease
/// renewal) may pass between refused submits, and `/ready` should not flap with them.
#[derive(Debug)]
pub(crate) struct WriteHealth {
    started: std::time::Instant,
    /// Milliseconds since `started` of the last refused write, plus one (0: never).
    refused_at: std::sync::atomic::AtomicU64,
    /// Milliseconds since `started` of the last accepted write, plus one (0: never).
    accepted_at: std::sync::atomic::AtomicU64,
    reason: std::sync::Mutex<String>,
    /// The "refuses" and the "accepts again" lines, once a minute each: on a nearly full
    /// disk small writes pass between refused ones, and the state would flip at each.
    refused_line: crate::log_gate::LogGate,
    accepted_line: crate::log_gate::LogGate,
}

/// How long a refused write keeps `/ready` at 503.
const REFUSAL_HOLDS: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for WriteHealth {
    fn default() -> Self {
        WriteHealth {
            started: std::time::Instant::now(),
            refused_at: Default::default(),
            accepted_at: Default::default(),
            reason: Default::default(),
            refused_line: crate::log_gate::LogGate::new(60_000),
            accepted_line: crate::log_gate::LogGate::new(60_000),
        }
    }
}

impl WriteHealth {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Runs a write and records what it found.
    pub(crate) async fn track<T>(&self, write: impl Future<Output = Result<T>>) -> Result<T> {
        use std::sync::atomic::Ordering;
        let result = write.await;
        match &result {
            Ok(_) => {
                let before = self.accepted_at.swap(self.now(), Ordering::AcqRel);
                if self.refused_at.load(Ordering::Acquire) > before && self.accepted_line.open() {
                    tracing::info!("the database accepts writes again");
                }
            }
            Err(error) if error.refuses_writes() => {
                let before = self.refused_at.swap(self.now(), Ordering::AcqRel);
                if before <= self.accepted_at.load(Ordering::Acquire) && self.refused_line.open() {
                    tracing::error!(%error, "the database refuses writes; submits answer 503 until it takes them again");
                }
                if let Ok(mut reason) = self.reason.lock() {
                    *reason = error.reason();
                }
            }
            Err(_) => {}
        }
        result
    }

    /// A write failed for a reason of its own (not the database's state): writes are taken.
    pub(crate) fn accepted(&self) {
        self.accepted_at
            .store(self.now(), std::sync::atomic::Ordering::Release);
    }

    /// The last write was refused: the connection it used may be the reason (SQLite opens a
    /// file it cannot write read-only, and stays so), so a fresh one is worth its cost.
    pub(crate) fn refused(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.refused_at.load(Ordering::Acquire) > self.accepted_at.load(Ordering::Acquire)
    }

    /// Why writes are refused, while a refusal holds; `None` when writes are accepted or the
    /// last refusal is old enough that only a new write can tell (see [`Self::refused`]).
    pub(crate) fn refusal(&self) -> Option<String> {
        use std::sync::atomic::Ordering;
        let at = self.refused_at.load(Ordering::Acquire);
        if at == 0 || self.now() - at > REFUSAL_HOLDS.as_millis() as u64 {
            return None;
        }
        Some(self.reason.lock().map(|r| r.clone()).unwrap_or_default())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A task as the store holds it. Instants are Unix milliseconds; payload and result are JSON
/// text, passed through untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: i32,
    pub payload: String,
    pub status: TaskStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    pub run_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub result: Option<String>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub labels: String,
    pub worker: Option<String>,
    pub cancel_requested: bool,
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    /// The workflow this task is a step of, and its step id there.
    pub workflow_id: Option<String>,
    pub step: Option<String>,
    /// At most `concurrency_limit` tasks with this key run at once.
    pub concurrency_key: Option<String>,
    pub concurrency_limit: Option<u32>,
}

impl StoredTask {
    /// About how many bytes the task takes on the wire.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.result.as_ref().map_or(0, String::len)
            + self.last_error.as_ref().map_or(0, String::len)
            + self.labels.len()
            + self.idempotency_key.as_ref().map_or(0, String::len)
            + 400
    }

    /// The row an insert creates, without reading it back.
    pub(crate) fn from_new(task: &NewTask) -> StoredTask {
        StoredTask {
            id: task.id,
            kind: task.kind.clone(),
            queue: task.queue.clone(),
            priority: task.priority,
            payload: task.payload.clone(),
            status: task.status,
            attempts: 0,
            max_attempts: task.max_attempts,
            timeout_secs: task.timeout_secs,
            run_at: task.run_at_ms,
            created_at: task.created_at_ms,
            updated_at: task.created_at_ms,
            started_at: None,
            finished_at: None,
            result: None,
            last_error: None,
            idempotency_key: task.idempotency_key.clone(),
            labels: task.labels.clone(),
            worker: None,
            cancel_requested: false,
            retry_base_ms: task.retry_base_ms,
            retry_max_ms: task.retry_max_ms,
            workflow_id: task.workflow_id.map(|id| id.to_string()),
            step: task.step.clone(),
            concurrency_key: task.concurrency_key.clone(),
            concurrency_limit: task.concurrency_limit,
        }
    }
}

/// A ready task that a broker must deliver: a message names it (the worker reads the rest
/// from the row it claims).
#[derive(Debug, Clone, PartialEq)]
pub struct Publishable {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: i32,
    /// Marks which version of the row was published (see [`Store::mark_published`]).
    pub updated_at: i64,
    /// It has a concurrency key: the gated claim takes it from the database, and no broker
    /// carries it.
    pub keyed: bool,
}

impl Publishable {
    pub fn from_task(task: &StoredTask) -> Publishable {
        Publishable {
            id: task.id,
            kind: task.kind.clone(),
            queue: task.queue.clone(),
            priority: task.priority,
            updated_at: task.updated_at,
            keyed: task.concurrency_key.is_some(),
        }
    }
}

/// What a worker needs to run a task it has claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub payload: String,
    /// This attempt's number, 1-based.
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    /// The task's own backoff bounds, if it has them.
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub created_at: i64,
    /// The workflow this task is a step of: its payload may take the results of the steps
    /// it needs.
    pub workflow_id: Option<String>,
    /// The W3C `traceparent` it was submitted in, if any.
    pub trace_parent: Option<String>,
}

/// How many events one change-feed row holds at most: an event's id is its row's `seq`
/// times this plus its place in the row.
pub const EVENTS_PER_ROW: i64 = 1 << 20;

/// One row of the change feed: the events of one statement (PostgreSQL) or one change
/// (SQLite), in task id order.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: i64,
    pub events: Vec<StoredEvent>,
}

/// One task state change, with its task's unchanging fields.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// `seq * EVENTS_PER_ROW + place` (see [`EVENTS_PER_ROW`]).
    pub seq: i64,
    /// `created`, `queued`, `started`, `retrying`, `succeeded`, `failed`, `cancelled`, or
    /// `fired` (a schedule submitted the task).
    pub event: String,
    pub status: TaskStatus,
    pub attempts: u32,
    pub worker: Option<String>,
    pub at: i64,
    pub task_id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: i32,
    pub max_attempts: u32,
    pub created_at: i64,
    /// The schedule that fired (`fired` events only).
    pub schedule: Option<String>,
    /// The workflow of a step's task.
    pub workflow: Option<String>,
}

/// A worker process, as its heartbeat records it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Comma-separated.
    pub queues: String,
    pub concurrency: u32,
    pub busy: u32,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// The kinds it serves, comma-separated.
    pub kinds: String,
    /// It leases tasks over the API (the lease protocol) rather than being a taskd process.
    pub remote: bool,
}

/// A task's lease after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    /// A user asked for the task to be cancelled: its worker should stop it.
    pub cancel_requested: bool,
    pub expires_at: i64,
}

/// How many tasks of a queue are in a status.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueCount {
    pub queue: String,
    pub status: TaskStatus,
    pub count: u64,
    /// The earliest `run_at` (for counts by status) or `finished_at` (for recent finishes).
    pub oldest: Option<i64>,
}

impl QueueCount {
    /// Seconds from `oldest` to `now` (never negative): for the ready count, how long its
    /// oldest task has waited.
    pub fn oldest_secs(&self, now: i64) -> Option<f64> {
        self.oldest.map(|at| (now - at).max(0) as f64 / 1000.0)
    }
}

/// How many tasks finished in a status during one minute.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteCount {
    /// The minute's start (ms since the epoch, a multiple of 60,000).
    pub minute: i64,
    pub status: TaskStatus,
    pub count: u64,
}

/// Which finished tasks a bulk delete removes.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedFilter {
    pub statuses: Vec<TaskStatus>,
    /// Only tasks that finished before this instant.
    pub finished_before: i64,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Workflow steps too (the retention sweep). A purge leaves them: a step belongs to its
    /// workflow, whose retry would otherwise run its dependents without it.
    pub steps: bool,
}

/// A page of the task listing, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ListFilter {
    pub status: Option<TaskStatus>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    /// Only tasks with a smaller id (older) than this.
    pub before: Option<Uuid>,
    /// Label selectors; a task must match them all.
    pub labels: Vec<crate::domain::labels::Selector>,
    pub limit: u32,
    /// The page ends after the task that brings it to this many bytes ([`StoredTask::size`]),
    /// even short of `limit`.
    pub max_bytes: usize,
}

impl Default for ListFilter {
    fn default() -> Self {
        ListFilter {
            status: None,
            queue: None,
            kind: None,
            before: None,
            labels: Vec::new(),
            limit: 100,
            max_bytes: usize::MAX,
        }
    }
}

/// The result of a cancel request.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// It was waiting and is now cancelled.
    Cancelled(StoredTask),
    /// It is running; its worker has been asked to stop it.
    Requested(StoredTask),
    /// It had already finished.
    Finished(StoredTask),
    NotFound,
}

/// The result of a manual retry.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    Requeued(StoredTask),
    /// It is not failed or cancelled.
    NotRetryable(StoredTask),
    NotFound,
}

/// One captured output line on its way to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLogLine {
    pub task_id: Uuid,
    pub attempt: u32,
    pub stream: LogStream,
    pub ts: i64,
    pub line: String,
}

/// A stored output line.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLogLine {
    pub seq: i64,
    pub attempt: u32,
    pub stream: LogStream,
    pub ts: i64,
    pub line: String,
}

/// The operations on task state. Implementations must make every transition a guarded update.
pub trait Store: Schedules + Workflows + Controls + Send + Sync + 'static {
    /// Applies the schema. Safe to run again. Answers the versions it applied now.
    fn migrate(&self) -> BoxFuture<'_, Result<Vec<i64>>>;

    /// Answers when the database can serve a query.
    fn ping(&self) -> BoxFuture<'_, Result<()>>;

    /// Inserts tasks in one transaction. For each, in order: the stored task and whether it
    /// was created (false: its idempotency key matched an existing task, which is returned).
    fn insert(&self, tasks: Vec<NewTask>) -> BoxFuture<'_, Result<Vec<(StoredTask, bool)>>>;

    fn get(&self, id: Uuid) -> BoxFuture<'_, Result<Option<StoredTask>>>;

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<StoredTask>>>;

    fn cancel(&self, id: Uuid, now: i64) -> BoxFuture<'_, Result<CancelOutcome>> {
        self.cancel_by(id, now, None)
    }

    /// [`Store::cancel`], recording `audit` in the same transaction when it changed the
    /// task.
    fn cancel_by<'a>(
        &'a self,
        id: Uuid,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<CancelOutcome>>;

    fn retry(&self, id: Uuid, now: i64) -> BoxFuture<'_, Result<RetryOutcome>> {
        self.retry_by(id, now, None)
    }

    /// [`Store::retry`], recording `audit` in the same transaction when it requeued.
    fn retry_by<'a>(
        &'a self,
        id: Uuid,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<RetryOutcome>>;

    /// Requeues every failed task (of `kind` and `queue`, when given; with
    /// `skip_privileged`, not the shell, salt and kubectl tasks); answers how many. Records
    /// `audit` in the same transaction.
    fn retry_failed<'a>(
        &'a self,
        kind: Option<String>,
        queue: Option<String>,
        skip_privileged: bool,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Deletes finished tasks (and their output) that match `filter`; answers how many.
    fn delete_finished(&self, filter: FinishedFilter) -> BoxFuture<'_, Result<u64>> {
        self.delete_finished_by(filter, None)
    }

    /// [`Store::delete_finished`], recording `audit` with the first of its deletes.
    fn delete_finished_by<'a>(
        &'a self,
        filter: FinishedFilter,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Claims up to `limit` ready tasks of `queues` (and of `kinds`, when given) for
    /// `worker`, highest priority first, holding a lease until `lease_until`.
    fn claim_of<'a>(
        &'a self,
        worker: &'a str,
        queues: &'a [String],
        kinds: Option<&'a [String]>,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Vec<ClaimedTask>>>;

    /// [`Store::claim_of`] tasks of any kind.
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        queues: &'a [String],
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Vec<ClaimedTask>>> {
        self.claim_of(worker, queues, None, limit, now, lease_until)
    }

    /// Claims these ready tasks (delivered by a broker) for `worker`, those of `kinds` when
    /// given. Ids that are not ready (duplicates, cancelled, already running) or of another
    /// kind are left out of the answer.
    fn claim_ids_of<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [Uuid],
        kinds: Option<&'a [String]>,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Vec<ClaimedTask>>>;

    /// [`Store::claim_ids_of`] tasks of any kind.
    fn claim_ids<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [Uuid],
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Vec<ClaimedTask>>> {
        self.claim_ids_of(worker, ids, None, now, lease_until)
    }

    /// Records how attempts ended, in one transaction, for the tasks `worker` still holds.
    /// Each answer is false when the worker no longer holds that task (its lease expired and
    /// someone else has it): that report is dropped.
    fn settle_many<'a>(
        &'a self,
        worker: &'a str,
        items: &'a [(Uuid, Settlement)],
        now: i64,
    ) -> BoxFuture<'a, Result<Vec<bool>>>;

    /// [`Store::settle_many`] for one task.
    fn settle<'a>(
        &'a self,
        id: Uuid,
        worker: &'a str,
        settlement: &'a Settlement,
        now: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let items = [(id, settlement.clone())];
            let settled = self.settle_many(worker, &items, now).await?;
            Ok(settled.first().copied().unwrap_or(false))
        })
    }

    /// Extends the leases of every task `worker` is running.
    fn renew_leases<'a>(&'a self, worker: &'a str, until: i64) -> BoxFuture<'a, Result<u64>>;

    /// Hands every task `worker` is running back (it is exiting without a drain).
    fn release_leases<'a>(&'a self, worker: &'a str, now: i64) -> BoxFuture<'a, Result<u64>>;

    /// The tasks `worker` runs whose cancellation was requested.
    fn cancel_requests<'a>(&'a self, worker: &'a str) -> BoxFuture<'a, Result<Vec<Uuid>>>;

    /// Moves scheduled and retrying tasks whose time has come to queued.
    fn promote_due(&self, now: i64) -> BoxFuture<'_, Result<u64>>;

    /// Takes running tasks whose lease has expired away from their dead worker: back to
    /// queued, or failed when that was their last attempt.
    fn reap_expired(&self, now: i64) -> BoxFuture<'_, Result<u64>>;

    fn append_logs(&self, lines: Vec<NewLogLine>) -> BoxFuture<'_, Result<()>>;

    fn logs(&self, id: Uuid, after: i64, limit: u32) -> BoxFuture<'_, Result<Vec<StoredLogLine>>>;

    /// Change-feed rows with `after < seq <= upto`, oldest first (at most `limit` rows).
    fn event_rows(&self, after: i64, upto: i64, limit: u32)
    -> BoxFuture<'_, Result<Vec<EventRow>>>;

    /// Change-feed rows with `seq < before`, newest first.
    fn event_rows_before(&self, before: i64, limit: u32) -> BoxFuture<'_, Result<Vec<EventRow>>>;

    /// The oldest change-feed row's `seq` recorded at or after `at` (None when there is
    /// none).
    fn first_event_since(&self, at: i64) -> BoxFuture<'_, Result<Option<i64>>>;

    /// The newest change-feed row's `seq` (0 when empty).
    fn latest_event(&self) -> BoxFuture<'_, Result<i64>>;

    /// Housekeeping the database would do itself if it could: on a PostgreSQL server whose
    /// autovacuum is off, vacuums and analyzes the tables whose dead or changed rows passed
    /// autovacuum's own thresholds. Answers the tables it tended (none on SQLite).
    fn tend(&self) -> BoxFuture<'_, Result<Vec<String>>>;

    /// Deletes change-feed rows older than `before`.
    fn trim_events(&self, before: i64) -> BoxFuture<'_, Result<u64>>;

    /// Counts by queue and status; with `finished_since`, only tasks that finished since then.
    fn queue_counts(&self, finished_since: Option<i64>) -> BoxFuture<'_, Result<Vec<QueueCount>>>;

    /// Tasks that finished since `since`, per minute and status (the dashboard's chart).
    fn finished_by_minute(&self, since: i64) -> BoxFuture<'_, Result<Vec<MinuteCount>>>;

    /// Records a worker's heartbeat (creating its row on the first one).
    fn heartbeat<'a>(&'a self, worker: &'a WorkerRow) -> BoxFuture<'a, Result<()>>;

    /// Records the heartbeat of a worker that has a row (a remote worker reporting on one of
    /// its tasks); nothing when it has none.
    fn touch_worker<'a>(&'a self, id: &'a str, now: i64) -> BoxFuture<'a, Result<()>>;

    /// Extends to `until` the lease `owner` holds on task `id` for attempt `attempt`; None
    /// when it holds none (the task finished, its lease expired and went to another
    /// attempt, or it is someone else's).
    fn renew_lease<'a>(
        &'a self,
        id: Uuid,
        owner: &'a str,
        attempt: u32,
        until: i64,
    ) -> BoxFuture<'a, Result<Option<LeaseState>>>;

    /// Workers whose last heartbeat is at or after `alive_since`.
    fn workers(&self, alive_since: i64) -> BoxFuture<'_, Result<Vec<WorkerRow>>>;

    /// Forgets a worker (it stopped), or every worker silent since `before` when `id` is None.
    fn remove_workers<'a>(&'a self, id: Option<&'a str>, before: i64)
    -> BoxFuture<'a, Result<u64>>;

    /// Ready tasks the dispatcher must publish: requeued, due, retried, or handed back
    /// (see [`Store::hand_back`] and [`Store::reclaim_orphans`]).
    fn unpublished(&self, limit: u32) -> BoxFuture<'_, Result<Vec<Publishable>>>;

    /// Records that these `(id, updated_at)` versions of tasks reached the broker (the
    /// dispatcher's publishes; a submitter's are known from its mark).
    fn mark_published<'a>(
        &'a self,
        tasks: &'a [(Uuid, i64)],
        now: i64,
    ) -> BoxFuture<'a, Result<()>>;

    /// A publisher's heartbeat: the tasks marked with its token (`published_at = -token`)
    /// are its to publish for as long as it beats.
    fn publisher_beat(&self, token: i64, now: i64) -> BoxFuture<'_, Result<()>>;

    /// Hands tasks their publisher (whose mark is `mark`) could not publish to the
    /// dispatcher.
    fn hand_back<'a>(&'a self, mark: i64, ids: &'a [Uuid]) -> BoxFuture<'a, Result<u64>>;

    /// Hands the dispatcher the ready tasks, created before `stale_before`, of publishers
    /// silent since then (they died between commit and publish), and forgets publishers
    /// silent for an hour. Answers how many tasks it handed over.
    fn reclaim_orphans(&self, stale_before: i64) -> BoxFuture<'_, Result<u64>>;

    /// Wakes `wake` whenever another process makes work ready, for as long as the store
    /// lives (PostgreSQL LISTEN/NOTIFY). Backends without notifications never wake it.
    fn listen_ready(&self, wake: Arc<Notify>) -> BoxFuture<'static, ()>;

    /// True when the store itself gathers the writes that wait into shared transactions
    /// (SQLite's writer rounds): submits and outcomes then go to it straight, without a
    /// group commit of their own in front.
    fn groups_writes(&self) -> bool {
        false
    }
}

/// Opens the store a database URL names.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url).await?))
    } else {
        Err(StoreError::Unsupported(redact_url(url)))
    }
}
