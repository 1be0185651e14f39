//! Store rows → wire types. The only place the two meet.

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskplane_api::{LogLine, Task};

use crate::store::{StoredLogLine, StoredTask};

/// An instant the store keeps as Unix milliseconds, for the wire.
pub(super) fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// JSON text the daemon stored itself; a row that somehow is not JSON is shown as a string
/// rather than failing the whole listing.
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

pub fn task(row: StoredTask) -> Task {
    Task {
        id: row.id,
        kind: row.kind,
        queue: row.queue,
        priority: row.priority,
        payload: json(&row.payload),
        status: row.status,
        attempts: row.attempts,
        max_attempts: row.max_attempts,
        timeout_secs: row.timeout_secs,
        run_at: instant(row.run_at),
        created_at: instant(row.created_at),
        updated_at: instant(row.updated_at),
        started_at: row.started_at.map(instant),
        finished_at: row.finished_at.map(instant),
        result: row.result.as_deref().map(json),
        last_error: row.last_error,
        idempotency_key: row.idempotency_key,
        labels: serde_json::from_str(&row.labels).unwrap_or_default(),
        worker: row.worker,
        cancel_requested: row.cancel_requested,
        retry_base_ms: row.retry_base_ms,
        retry_max_ms: row.retry_max_ms,
        depends_on: Vec::new(),
        workflow_id: row.workflow_id.as_deref().and_then(|id| id.parse().ok()),
        step: row.step,
        concurrency_limit: row
            .concurrency_key
            .as_ref()
            .map(|_| row.concurrency_limit.unwrap_or(1)),
        concurrency_key: row.concurrency_key,
    }
}

pub fn log_line(row: StoredLogLine) -> LogLine {
    LogLine {
        seq: row.seq,
        attempt: row.attempt,
        stream: row.stream,
        ts: instant(row.ts),
        line: row.line,
    }
}
