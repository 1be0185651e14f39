//! Request and response bodies of the HTTP API.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Where a task is in its life. `succeeded`, `failed` and `cancelled` are terminal.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its parents (`depends_on`) to succeed.
    Waiting,
    /// Waiting for its `run_at`.
    Scheduled,
    /// Ready to be claimed by a worker.
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    /// An attempt failed; waiting for the backoff to pass.
    Retrying,
    /// Finished successfully.
    Succeeded,
    /// Attempts exhausted: the dead-letter set.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Waiting,
        TaskStatus::Scheduled,
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Retrying,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// The status as it is spelled on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Retrying => "retrying",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// A terminal status never changes again on its own (only a manual retry revives it).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown status name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown status '{0}' (expected one of waiting, scheduled, queued, running, retrying, succeeded, failed, cancelled)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: i32,
    pub payload: Value,
    pub status: TaskStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub worker: Option<String>,
    pub cancel_requested: bool,
    /// This task's backoff bounds between attempts; null means the worker's defaults.
    #[serde(default)]
    pub retry_base_ms: Option<u64>,
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
    /// The tasks this one waits for (it runs once they have all succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Uuid>,
    /// The workflow this task is a step of, and its step id there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// At most `concurrency_limit` tasks with this key run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
}

impl Task {
    /// The labels as `k=v,k2=v2`, in key order (how kubectl writes a selector).
    pub fn labels_text(&self) -> String {
        let pairs: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join(",")
    }
}

/// The body of `POST /api/v1/tasks`: everything but `kind` is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// One of the daemon's kinds: noop, echo, sleep, shell, http, salt, kubectl.
    #[schema(min_length = 1, example = "echo")]
    pub kind: String,
    /// Kind-specific input; absent means `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Higher starts first among ready tasks of one queue. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Defaults to 300; at most 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub timeout_secs: Option<u64>,
    /// Run no earlier than this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Run no earlier than this many milliseconds after the server accepts the task.
    /// Measured on the server's clock, so client clock skew does not matter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// A second submit with the same key returns the first task instead of a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The shortest backoff bound between attempts of this task (overrides `--retry-base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_base_ms: Option<u64>,
    /// The longest backoff between attempts of this task (overrides `--retry-max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_max_ms: Option<u64>,
    /// Tasks that must succeed first: until then this one is `waiting`; when one of them
    /// fails or is cancelled, this one is cancelled (`dependency_failed`). At most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Uuid>,
    /// At most `concurrency_limit` tasks with this key run at once, across queues and
    /// worker processes (say `host=web1`). 1 to 255 printable characters without spaces.
    /// The `salt` and `kubectl` kinds have a default key per target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// How many tasks with `concurrency_key` may run at once. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub concurrency_limit: Option<u32>,
}

/// The body of `POST /api/v1/tasks/batch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmit {
    pub tasks: Vec<SubmitTask>,
}

/// The answer to a batch submit and to a list: tasks in request (or listing) order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query parameters of `GET /api/v1/tasks`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "failed")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "default")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "shell")]
    pub kind: Option<String>,
    /// 1 to 1000; defaults to 100. A page of large tasks ends sooner (at about 8 MiB):
    /// follow `next_cursor` until it is null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 50)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "01a20649-73ff-71a9-a177-5aa009d23a9d")]
    pub cursor: Option<String>,
    /// Label selectors, repeatable; a task must match them all: `key=value` (has the label
    /// with that value), `key!=value` (has not), `key` (has the label), `!key` (has not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[param(example = json!(["team=ops"]))]
    pub label: Vec<String>,
}

/// Which stream a captured log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// A note written by taskd itself (attempt started, output truncated, ...).
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }
}

/// One captured line of a task's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    /// Increases with every line the daemon stores; use it as `after` to page.
    pub seq: i64,
    pub attempt: u32,
    pub stream: LogStream,
    pub ts: DateTime<Utc>,
    pub line: String,
}

/// The answer to `GET /api/v1/tasks/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    pub task_id: Uuid,
    /// The task's status when the page was read: a follower stops once it is terminal and
    /// a page comes back empty.
    pub task_status: TaskStatus,
    pub lines: Vec<LogLine>,
    /// The `seq` to pass as `after` for the next page.
    pub next_after: i64,
}

/// Query parameters of `GET /api/v1/tasks/{id}/logs`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Stream the output as it is produced, one JSON [`LogLine`] per line
    /// (`application/x-ndjson`), until the task finishes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[param(example = false)]
    pub follow: bool,
    /// Only lines with a greater `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 120)]
    pub after: Option<i64>,
    /// 1 to 10000; defaults to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 1000)]
    pub limit: Option<u32>,
}

/// The body of `POST /api/v1/dlq/retry`: every failed task, or those of one kind or queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DlqRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// The body of `POST /api/v1/dlq/purge`: deletes failed tasks (and their output) that
/// finished at least `older_than_secs` ago.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DlqPurge {
    pub older_than_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// How many tasks a bulk operation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkResult {
    pub count: u64,
}

/// What happened to a task, as `/api/v1/events` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Submitted (now `queued`, `scheduled`, or `waiting` for the tasks it depends on).
    Created,
    /// Retried, and waiting again for a task it depends on.
    Waiting,
    /// Ready again: its time came, it was retried, or it came back from a stopped worker.
    Queued,
    /// A worker started an attempt.
    Started,
    /// An attempt failed; another follows after the backoff.
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
    /// A schedule submitted it (the event's `schedule` names it); its `created` event is
    /// separate.
    Fired,
    /// The workflow the event names ended: every step succeeded. Its `task` is the step
    /// that finished last. Sent live only: a resume or a replay does not repeat it.
    WorkflowSucceeded,
    /// The workflow ended, and a step failed.
    WorkflowFailed,
    /// The workflow ended, none of its steps failed, and one was cancelled.
    WorkflowCancelled,
    /// Something this version does not know (a newer server).
    #[serde(other)]
    Other,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Waiting => "waiting",
            EventKind::Queued => "queued",
            EventKind::Started => "started",
            EventKind::Retrying => "retrying",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
            EventKind::Fired => "fired",
            EventKind::WorkflowSucceeded => "workflow_succeeded",
            EventKind::WorkflowFailed => "workflow_failed",
            EventKind::WorkflowCancelled => "workflow_cancelled",
            EventKind::Other => "other",
        }
    }

    /// The event that says a workflow ended so.
    pub fn workflow_ended(status: crate::WorkflowStatus) -> Option<EventKind> {
        match status {
            crate::WorkflowStatus::Succeeded => Some(EventKind::WorkflowSucceeded),
            crate::WorkflowStatus::Failed => Some(EventKind::WorkflowFailed),
            crate::WorkflowStatus::Cancelled => Some(EventKind::WorkflowCancelled),
            crate::WorkflowStatus::Running => None,
        }
    }

    /// Whether this event is about a whole workflow rather than its task.
    pub fn is_workflow(self) -> bool {
        matches!(
            self,
            EventKind::WorkflowSucceeded | EventKind::WorkflowFailed | EventKind::WorkflowCancelled
        )
    }
}

/// A task as an event shows it: its state right after the change, without payload or result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskSummary {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: i32,
    pub status: TaskStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub worker: Option<String>,
}

/// One task state change. Sent as a Server-Sent Event whose `id` is `seq` and whose `event`
/// is the kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskEvent {
    /// Increases with every change; pass the last one seen as `Last-Event-ID` to resume.
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the change happened.
    pub at: DateTime<Utc>,
    pub task: TaskSummary,
    /// The schedule that fired (only on `fired` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The workflow the task is a step of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Uuid>,
}

/// Query parameters of `GET /api/v1/events`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of tasks in this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "default")]
    pub queue: Option<String>,
    /// Only events of tasks of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "shell")]
    pub kind: Option<String>,
    /// Only events of these tasks (comma-separated ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "01a20649-73ff-71a9-a177-5aa009d23a9d")]
    pub tasks: Option<String>,
    /// Only events of the steps of this workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "01a20649-73ff-71a9-a177-5aa009d23a9d")]
    pub workflow: Option<Uuid>,
    /// First replay the kept events (the last ten minutes) recorded this many seconds ago
    /// or later, then go on live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 300)]
    pub since_secs: Option<u64>,
    /// First replay the last this many kept events that match the filters (at most
    /// 10000; with `since_secs`, only of those), then go on live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 20)]
    pub last: Option<u32>,
}

/// The broker's view of a queue (RabbitMQ or Redis; absent with `--broker db`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokerQueue {
    /// Messages (RabbitMQ) or stream entries (Redis) not delivered yet; one names up to 16
    /// tasks published together.
    pub messages: u64,
    /// Consumers: with RabbitMQ the workers consuming now, with Redis the consumers of the
    /// queue's group (a stopped worker's is forgotten after a minute).
    pub consumers: u64,
}

/// One queue's state, as `GET /api/v1/queues` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub queue: String,
    /// Tasks by status (every status is present, zero or not).
    pub counts: BTreeMap<TaskStatus, u64>,
    /// Tasks ready to run now (`queued`).
    pub depth: u64,
    /// How long the oldest ready task has been ready, in seconds.
    pub oldest_ready_secs: Option<f64>,
    /// Tasks that finished in the last minute, successfully or not.
    pub finished_last_minute: u64,
    pub failed_last_minute: u64,
    /// Tasks finished per second over the last minute.
    pub throughput_per_sec: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerQueue>,
    /// Workers take none of its tasks (see `POST /api/v1/queues/{queue}/pause`).
    #[serde(default)]
    pub paused: bool,
    /// At most this many of its tasks run at once.
    #[serde(default)]
    pub max_running: Option<u32>,
    /// At most this many of its tasks start per second.
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueStats>,
}

/// A live worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub queues: Vec<String>,
    pub concurrency: u32,
    /// Slots running a task at the last heartbeat.
    pub busy: u32,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    /// The kinds it serves.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// It leases tasks over the API (`taskctl worker`, an SDK) rather than being a taskd
    /// process; `host` is then the address it connects from, and `pid` 0.
    #[serde(default)]
    pub remote: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// Every error the API answers has this shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: scripts may match on it.
    pub code: String,
    /// For humans: one sentence.
    pub message: String,
}

/// The answer of `/health` and `/ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency is down.
    pub status: String,
    /// Per dependency (`store`, `broker`): `ok` or the reason it is not.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, String>,
    pub version: String,
    pub role: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            let json = serde_json::to_string(&status).expect("serializes");
            assert_eq!(json, format!("\"{status}\""));
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn submit_rejects_unknown_fields() {
        let err = serde_json::from_str::<SubmitTask>(r#"{"kind":"noop","payloda":{}}"#)
            .expect_err("unknown field must be refused");
        assert!(err.to_string().contains("payloda"), "{err}");
    }

    #[test]
    fn submit_defaults_are_absent() {
        let task: SubmitTask = serde_json::from_str(r#"{"kind":"echo"}"#).expect("parses");
        assert_eq!(task.kind, "echo");
        assert_eq!(task.payload, None);
        assert_eq!(
            serde_json::to_string(&task).expect("serializes"),
            r#"{"kind":"echo"}"#
        );
    }
}
