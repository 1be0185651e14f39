//! The lease protocol: how a worker outside taskd (`taskctl worker`, the Python SDK, a Go or
//! Node program) takes tasks of the kinds taskd declares (`taskd --kinds`), keeps them, and
//! reports how they ended. `docs/worker-protocol.md` describes it for people.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::LogStream;

/// The longest a lease request may wait for work.
pub const MAX_LEASE_WAIT_MS: u64 = 30_000;
/// The most tasks one lease request may take.
pub const MAX_LEASE_TASKS: u32 = 100;
/// The most lines one `logs` report may carry.
pub const MAX_REPORT_LINES: usize = 1000;

/// `POST /api/v1/leases`: take up to `max` ready tasks of `kinds` from `queues`, waiting up
/// to `wait_ms` for the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// This worker's id, unique among the workers (e.g. `host-pid-random`). Its leases are
    /// its own: another id's report on them is refused.
    pub worker: String,
    /// The kinds it serves: declared kinds only (built-in kinds run in taskd's workers).
    pub kinds: Vec<String>,
    /// The queues it takes tasks from (`default` when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// How many tasks at most (1 to 100; default 1): its free slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How long to wait for a task when none is ready, in milliseconds (0 to 30,000;
    /// default 0: answer at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Its slots in all (for `taskctl workers`; default `max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// A task handed to a remote worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeasedTask {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    /// The payload as submitted (a workflow step's with the results it names filled in).
    pub payload: Value,
    /// This attempt's number, 1-based.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The worker must stop the task after this long and report it failed.
    pub timeout_secs: u64,
    /// Opaque: every report on this attempt carries it.
    pub lease: String,
    /// The lease ends here unless a heartbeat extends it; then the task runs again elsewhere.
    pub lease_expires_at: DateTime<Utc>,
    /// The W3C `traceparent` the attempt runs in, when the task belongs to a trace: a worker
    /// that traces makes its spans children of it (and passes it on, e.g. as `TRACEPARENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The answer of `POST /api/v1/leases`: empty when nothing was ready within `wait_ms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseList {
    pub tasks: Vec<LeasedTask>,
}

/// `POST /api/v1/tasks/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub lease: String,
    /// Any JSON (a fraction, a count, a phrase): written to the task's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAnswer {
    /// Someone cancelled the task: stop it, then report `fail` (it ends cancelled).
    pub cancel_requested: bool,
    pub lease_expires_at: DateTime<Utc>,
}

/// `POST /api/v1/tasks/{id}/complete`: the attempt succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    pub lease: String,
    /// The task's result (any JSON; null when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// `POST /api/v1/tasks/{id}/fail`: the attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    pub lease: String,
    /// What went wrong, for `last_error`.
    pub error: String,
    /// False: fail the task now, whatever attempts are left (default true: retry with
    /// backoff while attempts are left, then dead-letter).
    #[serde(default = "yes")]
    pub retry: bool,
    /// True: the worker stopped the attempt because it is shutting down; the task goes back
    /// to its queue at once and the attempt is not counted (`error` is only logged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

fn yes() -> bool {
    true
}

/// One line of a task's output, as a remote worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedLine {
    /// `stdout` or `stderr`.
    pub stream: LogStream,
    pub line: String,
}

/// `POST /api/v1/tasks/{id}/logs`: lines of output, appended in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogReport {
    pub lease: String,
    pub lines: Vec<ReportedLine>,
}

/// The answer to `complete`, `fail` and `logs`: the task's status afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportAnswer {
    pub id: Uuid,
    pub status: crate::TaskStatus,
}

/// One kind, as `GET /api/v1/kinds` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KindInfo {
    pub name: String,
    /// Run by taskd's own workers; otherwise declared (`--kinds`) and served by remote
    /// workers.
    pub builtin: bool,
    /// Only a token with the admin scope may submit it.
    pub admin: bool,
    /// Submits are accepted (a built-in kind may be switched off, e.g. `shell` without
    /// `--enable-shell`).
    pub enabled: bool,
    /// What it does (built-in kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
    /// The live workers serving it now, by id.
    pub workers: Vec<String>,
}

/// The answer of `GET /api/v1/kinds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KindList {
    pub kinds: Vec<KindInfo>,
}
