//! Row decoding shared by the backends: one generic function per row shape.

use std::str::FromStr;

use sqlx::{ColumnIndex, Database, Decode, Row, Type};
use taskplane_api::{LogStream, TaskStatus};
use uuid::Uuid;

use super::{
    ClaimedTask, EVENTS_PER_ROW, EventRow, MinuteCount, Publishable, QueueCount, Result,
    StoreError, StoredEvent, StoredLogLine, StoredTask, WorkerRow,
};

/// What a row type must decode for the shared code to read it: any sqlx row, and SQLite's
/// rows read on the writer's own connection ([`super::sqlite`]).
pub trait TaskRow {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn small(&self, column: &str) -> Result<i32>;
    fn flag(&self, column: &str) -> Result<bool>;
}

impl<R> TaskRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }
    fn small(&self, column: &str) -> Result<i32> {
        Ok(self.try_get(column)?)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.try_get(column)?)
    }
}

pub fn corrupt(id: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        reason: reason.to_string(),
    }
}

pub fn parse_id(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| corrupt(text, e))
}

fn count<T: TryFrom<i64>>(id: &str, value: i64) -> Result<T>
where
    T::Error: std::fmt::Display,
{
    T::try_from(value).map_err(|e| corrupt(id, e))
}

fn opt_count(id: &str, value: Option<i64>) -> Result<Option<u64>> {
    value.map(|v| count(id, v)).transpose()
}

pub fn task<R: TaskRow>(row: &R) -> Result<StoredTask> {
    let id = row.text("id")?;
    let status = TaskStatus::from_str(&row.text("status")?).map_err(|e| corrupt(&id, e))?;
    Ok(StoredTask {
        id: parse_id(&id)?,
        kind: row.text("kind")?,
        queue: row.text("queue")?,
        priority: row.small("priority")?,
        payload: row.text("payload")?,
        status,
        attempts: count(&id, row.int("attempts")?)?,
        max_attempts: count(&id, row.int("max_attempts")?)?,
        timeout_secs: count(&id, row.int("timeout_secs")?)?,
        run_at: row.int("run_at")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        started_at: row.opt_int("started_at")?,
        finished_at: row.opt_int("finished_at")?,
        result: row.opt_text("result")?,
        last_error: row.opt_text("last_error")?,
        idempotency_key: row.opt_text("idempotency_key")?,
        labels: row.text("labels")?,
        worker: row.opt_text("worker")?,
        cancel_requested: row.flag("cancel_requested")?,
        retry_base_ms: opt_count(&id, row.opt_int("retry_base_ms")?)?,
        retry_max_ms: opt_count(&id, row.opt_int("retry_max_ms")?)?,
        workflow_id: row.opt_text("workflow_id")?,
        step: row.opt_text("step")?,
        concurrency_key: row.opt_text("concurrency_key")?,
        concurrency_limit: row
            .opt_int("concurrency_limit")?
            .map(|n| count(&id, n))
            .transpose()?,
    })
}

pub fn claimed<R: TaskRow>(row: &R) -> Result<(i32, ClaimedTask)> {
    let id = row.text("id")?;
    Ok((
        row.small("priority")?,
        ClaimedTask {
            id: parse_id(&id)?,
            kind: row.text("kind")?,
            queue: row.text("queue")?,
            payload: row.text("payload")?,
            attempt: count(&id, row.int("attempts")?)?,
            max_attempts: count(&id, row.int("max_attempts")?)?,
            timeout_secs: count(&id, row.int("timeout_secs")?)?,
            retry_base_ms: opt_count(&id, row.opt_int("retry_base_ms")?)?,
            retry_max_ms: opt_count(&id, row.opt_int("retry_max_ms")?)?,
            created_at: row.int("created_at")?,
            workflow_id: row.opt_text("workflow_id")?,
            trace_parent: row.opt_text("trace_parent")?,
        },
    ))
}

/// Claimed rows, most urgent first (RETURNING keeps no order).
pub fn claimed_in_order<R: TaskRow>(rows: &[R]) -> Result<Vec<ClaimedTask>> {
    let claimed = rows.iter().map(claimed).collect::<Result<Vec<_>>>()?;
    Ok(most_urgent_first(claimed))
}

/// Claimed tasks (each with its priority), most urgent first.
pub fn most_urgent_first(mut claimed: Vec<(i32, ClaimedTask)>) -> Vec<ClaimedTask> {
    claimed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    claimed.into_iter().map(|(_, task)| task).collect()
}

pub fn publishable<R: TaskRow>(row: &R) -> Result<Publishable> {
    Ok(Publishable {
        id: parse_id(&row.text("id")?)?,
        kind: row.text("kind")?,
        queue: row.text("queue")?,
        priority: row.small("priority")?,
        updated_at: row.int("updated_at")?,
        keyed: row.flag("keyed")?,
    })
}

pub fn log_line<R: TaskRow>(row: &R, task_id: &str) -> Result<StoredLogLine> {
    let stream = match row.text("stream")?.as_str() {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        "system" => LogStream::System,
        other => return Err(corrupt(task_id, format!("unknown log stream '{other}'"))),
    };
    Ok(StoredLogLine {
        seq: row.int("seq")?,
        attempt: count(task_id, row.int("attempt")?)?,
        stream,
        ts: row.int("ts")?,
        line: row.text("line")?,
    })
}

fn status(id: &str, text: &str) -> Result<TaskStatus> {
    TaskStatus::from_str(text).map_err(|e| corrupt(id, e))
}

/// One change-feed row: its `seq` and its events (a JSON array, see the schema).
/// One event of a change-feed row: `[task id, event, status, attempts, worker, at, kind,
/// queue, priority, max_attempts, created_at]`, and a twelfth element, the schedule's name, on
/// `fired` events (null on others), and a thirteenth, the workflow's id, on a step's events.
#[derive(serde::Deserialize)]
struct WireEvent(
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    #[serde(default)] Option<String>,
    #[serde(default)] Option<String>,
);

pub fn event_row<R: TaskRow>(row: &R) -> Result<EventRow> {
    let seq = row.int("seq")?;
    let what = format!("change-feed row {seq}");
    let wire: Vec<WireEvent> =
        serde_json::from_str(&row.text("events")?).map_err(|e| corrupt(&what, e))?;
    let mut events = Vec::with_capacity(wire.len());
    for (place, event) in wire.into_iter().enumerate() {
        let WireEvent(
            id,
            name,
            state,
            attempts,
            worker,
            at,
            kind,
            queue,
            priority,
            max_attempts,
            created,
            schedule,
            workflow,
        ) = event;
        events.push(StoredEvent {
            seq: seq * EVENTS_PER_ROW + place as i64,
            event: name,
            status: status(&id, &state)?,
            attempts: count(&id, attempts)?,
            worker,
            at,
            kind,
            queue,
            priority: i32::try_from(priority).map_err(|e| corrupt(&id, e))?,
            max_attempts: count(&id, max_attempts)?,
            created_at: created,
            task_id: parse_id(&id)?,
            schedule,
            workflow,
        });
    }
    Ok(EventRow { seq, events })
}

pub fn queue_count<R: TaskRow>(row: &R) -> Result<QueueCount> {
    let queue = row.text("queue")?;
    Ok(QueueCount {
        status: status(&queue, &row.text("status")?)?,
        count: count(&queue, row.int("n")?)?,
        oldest: row.opt_int("oldest")?,
        queue,
    })
}

pub fn minute_count<R: TaskRow>(row: &R) -> Result<MinuteCount> {
    Ok(MinuteCount {
        minute: row.int("minute")?,
        status: status("finished_by_minute", &row.text("status")?)?,
        count: count("finished_by_minute", row.int("n")?)?,
    })
}

pub fn worker<R: TaskRow>(row: &R) -> Result<WorkerRow> {
    let id = row.text("id")?;
    Ok(WorkerRow {
        host: row.text("host")?,
        pid: count(&id, row.int("pid")?)?,
        queues: row.text("queues")?,
        concurrency: count(&id, row.int("concurrency")?)?,
        busy: count(&id, row.int("busy")?)?,
        started_at: row.int("started_at")?,
        heartbeat_at: row.int("heartbeat_at")?,
        kinds: row.text("kinds")?,
        remote: row.flag("remote")?,
        id,
    })
}
