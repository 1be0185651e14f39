//! The lease protocol (`docs/worker-protocol.md`): remote workers take tasks of the declared
//! kinds (`POST /api/v1/leases`, a long-poll woken like taskd's own workers), keep them with
//! heartbeats and report how they ended. A lease is `ATTEMPT.WORKER`: the task's
//! `lease_owner` and `attempts` guard every report, so a stale or foreign one is a 409 and
//! changes nothing. Also `GET /api/v1/kinds`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde_json::Value;
use taskplane_api::{
    Complete, ErrorBody, Fail, Heartbeat, HeartbeatAnswer, KindInfo, KindList, LeaseList,
    LeaseRequest, LeasedTask, LogReport, LogStream, MAX_LEASE_TASKS, MAX_LEASE_WAIT_MS,
    MAX_REPORT_LINES, ReportAnswer,
};
use uuid::Uuid;

use super::AppState;
use super::convert::instant;
use super::error::ApiError;
use super::extract::{JsonBody, TaskId};
use super::openapi::{Refused, WriteRefused};
use crate::domain::HEARTBEAT_EVERY;
use crate::domain::lifecycle::{self, AttemptOutcome, Settlement};
use crate::domain::validate::{check_name, valid_name};
use crate::store::{ClaimedTask, NewLogLine, StoredTask, WorkerRow};
use crate::util::now_ms;

/// What the lease protocol needs from taskd's flags.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// How long a lease lasts without a heartbeat (`--lease`).
    pub lease: Duration,
    /// The backoff of a failed attempt without bounds of its own (`--retry-base`, `--retry-max`).
    pub backoff: crate::domain::backoff::Backoff,
}

/// What a report may answer besides its own success, [`WriteRefused`] and [`Refused`]. Only
/// describes responses for the document; handlers answer with `ApiError`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum LeaseRefused {
    #[response(status = 404, description = "no such task")]
    NotFound(ErrorBody),
    #[response(
        status = 409,
        description = "the lease is stale or someone else's (`lease_lost`): nothing changed"
    )]
    Lost(ErrorBody),
}

/// The longest line a report may carry; longer ones are cut (as taskd's own runner cuts).
const MAX_LINE_BYTES: usize = 16 * 1024;
/// The longest error a `fail` keeps.
const MAX_ERROR_BYTES: usize = 8 * 1024;

/// `GET /api/v1/kinds`: the built-in and declared kinds, each with the live workers serving it.
#[utoipa::path(get, path = "/api/v1/kinds", tag = "workers",
    responses(
        (status = 200, description = "every kind this taskd accepts or knows", body = KindList),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn kinds(State(state): State<AppState>) -> Result<Json<KindList>, ApiError> {
    let workers = live_workers(&state).await?;
    let serving = |name: &str| -> Vec<String> {
        workers
            .iter()
            .filter(|w| w.kinds.split(',').any(|k| k == name))
            .map(|w| w.id.clone())
            .collect()
    };
    let mut kinds: Vec<KindInfo> = crate::domain::kinds::BUILTIN
        .iter()
        .map(|kind| KindInfo {
            name: kind.name.to_owned(),
            builtin: true,
            admin: kind.admin,
            enabled: state.kinds.enabled(kind),
            about: Some(kind.about.to_owned()),
            workers: serving(kind.name),
        })
        .collect();
    kinds.extend(state.kinds.declared.iter().map(|name| KindInfo {
        name: name.clone(),
        builtin: false,
        admin: false,
        enabled: true,
        about: None,
        workers: serving(name),
    }));
    Ok(Json(KindList { kinds }))
}

/// The workers alive now: taskd's own within three heartbeats, remote ones within a lease
/// (they beat when they poll or report, which a busy one does about every third of it).
pub(super) async fn live_workers(state: &AppState) -> Result<Vec<WorkerRow>, ApiError> {
    let now = now_ms();
    let local_since = now - 3 * HEARTBEAT_EVERY.as_millis() as i64;
    let remote_since = now - state.leases.lease.as_millis() as i64;
    let rows = state.store.workers(local_since.min(remote_since)).await?;
    Ok(rows
        .into_iter()
        .filter(|row| {
            row.heartbeat_at
                >= if row.remote {
                    remote_since
                } else {
                    local_since
                }
        })
        .collect())
}

/// `POST /api/v1/leases`: takes up to `max` ready tasks of the worker's kinds and queues,
/// waiting up to `wait_ms` for the first. The wait ends as soon as work may be ready (a
/// submit here, or another process's through the database's notification) and looks again
/// every two seconds beside (retries made ready elsewhere), when it also renews the worker's
/// heartbeat.
#[utoipa::path(post, path = "/api/v1/leases", tag = "workers",
    request_body = LeaseRequest,
    responses(
        (status = 200, description = "the tasks taken (none when nothing was ready in time)", body = LeaseList),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["worker"])))]
pub async fn lease(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(request): JsonBody<LeaseRequest>,
) -> Result<Json<LeaseList>, ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_request", message);
    if !valid_name(&request.worker) {
        return Err(bad(format!(
            "worker: '{}' must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
            request.worker
        )));
    }
    if request.kinds.is_empty() {
        return Err(bad(
            "kinds: name at least one kind this worker serves".into()
        ));
    }
    for kind in &request.kinds {
        if crate::domain::kinds::builtin(kind).is_some() {
            return Err(ApiError::bad_request(
                "unknown_kind",
                format!("kinds: '{kind}' is built in; taskd's own workers run it"),
            ));
        }
        if !state.kinds.is_declared(kind) {
            return Err(ApiError::bad_request(
                "unknown_kind",
                format!(
                    "kinds: '{kind}' is not declared on this taskd (declared: {}); start taskd with --kinds {kind}",
                    if state.kinds.declared.is_empty() {
                        "none".to_owned()
                    } else {
                        state.kinds.declared.join(", ")
                    }
                ),
            ));
        }
    }
    let queues = if request.queues.is_empty() {
        vec![crate::domain::validate::DEFAULT_QUEUE.to_owned()]
    } else {
        request.queues.clone()
    };
    if queues.len() > 64 {
        return Err(bad("queues: at most 64".into()));
    }
    for queue in &queues {
        check_name("queues", queue, 64)?;
    }
    let max = request.max.unwrap_or(1);
    if !(1..=MAX_LEASE_TASKS).contains(&max) {
        return Err(bad(format!("max: {max} is outside 1..={MAX_LEASE_TASKS}")));
    }
    let wait_ms = request.wait_ms.unwrap_or(0);
    if wait_ms > MAX_LEASE_WAIT_MS {
        return Err(bad(format!(
            "wait_ms: {wait_ms} is more than {MAX_LEASE_WAIT_MS}"
        )));
    }
    let concurrency = request.concurrency.unwrap_or(max).max(max);

    let now = now_ms();
    let row = WorkerRow {
        id: request.worker.clone(),
        host: peer.map_or_else(|| "unknown".to_owned(), |p| p.0.0.ip().to_string()),
        pid: 0,
        queues: queues.join(","),
        concurrency,
        busy: concurrency - max,
        started_at: now,
        heartbeat_at: now,
        kinds: request.kinds.join(","),
        remote: true,
    };
    state.store.heartbeat(&row).await?;

    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut beat = tokio::time::Instant::now() + HEARTBEAT_EVERY;
    let mut gated = crate::broker::GatedTaker::default();
    let claimed = loop {
        // Listening before looking: a submit between the claim and the wait still wakes it.
        let woken = state.broker.lease_signal().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let now = now_ms();
        let lease_until = now + state.leases.lease.as_millis() as i64;
        let mut claimed = state
            .store
            .claim_of(
                &request.worker,
                &queues,
                Some(&request.kinds),
                max,
                now,
                lease_until,
            )
            .await?;
        if claimed.len() < max as usize {
            let room = max - claimed.len() as u32;
            let more = gated
                .take(
                    state.broker.gates(),
                    state.store.as_ref(),
                    &request.worker,
                    &queues,
                    Some(&request.kinds),
                    room,
                    state.leases.lease,
                )
                .await;
            claimed.extend(more);
        }
        if !claimed.is_empty() || tokio::time::Instant::now() >= deadline {
            break claimed;
        }
        let mut until = deadline.min(beat);
        if let Some(at) = gated.rate_wake() {
            until = until.min(at);
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep_until(until) => {}
        }
        if tokio::time::Instant::now() >= beat {
            beat += HEARTBEAT_EVERY;
            if let Err(error) = state.store.touch_worker(&request.worker, now_ms()).await {
                tracing::debug!(%error, worker = %request.worker, "recording a remote worker's heartbeat failed");
            }
        }
    };
    if !claimed.is_empty() {
        state.events.poke();
    }
    let mut tasks = Vec::with_capacity(claimed.len());
    for task in claimed {
        if let Some(leased) = hand_out(&state, &request.worker, task).await {
            tasks.push(leased);
        }
    }
    Ok(Json(LeaseList { tasks }))
}

/// A claimed task as the worker gets it: a workflow step's payload filled in first. A step
/// that cannot be filled in fails here (as it would in taskd's worker) and is not handed out.
async fn hand_out(state: &AppState, worker: &str, task: ClaimedTask) -> Option<LeasedTask> {
    let payload = match crate::worker::fill_in(state.store.as_ref(), &task).await {
        Ok(None) => task.payload.clone(),
        Ok(Some(filled)) => {
            let line = NewLogLine {
                task_id: task.id,
                attempt: task.attempt,
                stream: LogStream::System,
                ts: now_ms(),
                line: format!("payload with the results of earlier steps: {filled}"),
            };
            if let Err(error) = state.store.append_logs(vec![line]).await {
                tracing::debug!(%error, task_id = %task.id, "writing the filled-in payload to the log failed");
            }
            filled
        }
        Err(outcome) => {
            let settlement =
                lifecycle::settle(outcome, task.attempt, task.max_attempts, now_ms(), 0);
            if let Err(error) = state
                .store
                .settle(task.id, worker, &settlement, now_ms())
                .await
            {
                tracing::warn!(%error, task_id = %task.id, "failing a step whose payload cannot be filled in failed; its lease will expire");
            }
            return None;
        }
    };
    let lease_until = now_ms() + state.leases.lease.as_millis() as i64;
    Some(LeasedTask {
        id: task.id,
        kind: task.kind,
        queue: task.queue,
        payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        timeout_secs: task.timeout_secs,
        lease: format!("{}.{worker}", task.attempt),
        lease_expires_at: instant(lease_until),
        traceparent: task.trace_parent,
    })
}

/// A lease, read: the attempt it is for and the worker holding it.
fn parse_lease(lease: &str) -> Option<(u32, &str)> {
    let (attempt, worker) = lease.split_once('.')?;
    let attempt = attempt.parse().ok()?;
    (!worker.is_empty()).then_some((attempt, worker))
}

fn lost(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "lease_lost", message)
}

/// The task a report names, if `lease` holds it now: running, this attempt, this worker,
/// and of a declared kind (taskd's own workers' tasks are never leased).
async fn held(
    state: &AppState,
    id: Uuid,
    lease: &str,
) -> Result<(StoredTask, u32, String), ApiError> {
    let Some((attempt, worker)) = parse_lease(lease) else {
        return Err(lost(format!(
            "'{lease}' is not a lease this taskd handed out"
        )));
    };
    let Some(task) = state.store.get(id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {id}"),
        ));
    };
    if !state.kinds.is_declared(&task.kind) {
        return Err(lost(format!(
            "task {id} is of the built-in kind '{}', which is never leased",
            task.kind
        )));
    }
    if task.status != taskplane_api::TaskStatus::Running {
        return Err(lost(format!(
            "task {id} is {}, not running: the lease has ended",
            task.status.as_str()
        )));
    }
    if task.worker.as_deref() != Some(worker) {
        return Err(lost(format!("task {id} is held by another worker")));
    }
    if task.attempts != attempt {
        return Err(lost(format!(
            "the lease is for attempt {attempt}; task {id} is on attempt {}",
            task.attempts
        )));
    }
    Ok((task, attempt, worker.to_owned()))
}

/// `POST /api/v1/tasks/{id}/heartbeat`: extends the lease by taskd's `--lease` and says
/// whether the task was cancelled.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/heartbeat", tag = "workers",
    params(("id" = Uuid, Path, description = "task id")),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "the lease is extended", body = HeartbeatAnswer),
        LeaseRefused,
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["worker"])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    JsonBody(beat): JsonBody<Heartbeat>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let (_, attempt, worker) = held(&state, id, &beat.lease).await?;
    let now = now_ms();
    let until = now + state.leases.lease.as_millis() as i64;
    let Some(renewed) = state.store.renew_lease(id, &worker, attempt, until).await? else {
        return Err(lost(format!("task {id} is no longer held by this lease")));
    };
    // The lease is renewed: a failure to mark the worker alive is not the task's.
    if let Err(error) = state.store.touch_worker(&worker, now).await {
        tracing::debug!(%error, worker, "recording a remote worker's heartbeat failed");
    }
    if let Some(progress) = beat.progress {
        let line = NewLogLine {
            task_id: id,
            attempt,
            stream: LogStream::System,
            ts: now,
            line: format!("progress: {progress}"),
        };
        state.store.append_logs(vec![line]).await?;
    }
    Ok(Json(HeartbeatAnswer {
        cancel_requested: renewed.cancel_requested,
        lease_expires_at: instant(renewed.expires_at),
    }))
}

/// `POST /api/v1/tasks/{id}/complete`: the attempt succeeded with `result`.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", tag = "workers",
    params(("id" = Uuid, Path, description = "task id")),
    request_body = Complete,
    responses(
        (status = 200, description = "recorded", body = ReportAnswer),
        LeaseRefused,
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["worker"])))]
pub async fn complete(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    JsonBody(report): JsonBody<Complete>,
) -> Result<Json<ReportAnswer>, ApiError> {
    let result = report.result.unwrap_or(Value::Null).to_string();
    let (task, _, worker) = held(&state, id, &report.lease).await?;
    settle(&state, task, &worker, AttemptOutcome::Succeeded(result)).await
}

/// `POST /api/v1/tasks/{id}/fail`: the attempt failed. It is retried with backoff while
/// attempts are left unless `retry` is false; a cancelled task ends cancelled; an
/// `interrupted` attempt goes back to the queue uncounted.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/fail", tag = "workers",
    params(("id" = Uuid, Path, description = "task id")),
    request_body = Fail,
    responses(
        (status = 200, description = "recorded", body = ReportAnswer),
        LeaseRefused,
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["worker"])))]
pub async fn fail(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    JsonBody(report): JsonBody<Fail>,
) -> Result<Json<ReportAnswer>, ApiError> {
    let (task, _, worker) = held(&state, id, &report.lease).await?;
    let error = cut(report.error, MAX_ERROR_BYTES);
    let outcome = if task.cancel_requested {
        AttemptOutcome::Cancelled
    } else if report.interrupted {
        AttemptOutcome::Interrupted
    } else if report.retry {
        AttemptOutcome::Failed(error)
    } else {
        AttemptOutcome::Rejected(error)
    };
    settle(&state, task, &worker, outcome).await
}

async fn settle(
    state: &AppState,
    task: StoredTask,
    worker: &str,
    outcome: AttemptOutcome,
) -> Result<Json<ReportAnswer>, ApiError> {
    let now = now_ms();
    let backoff = state
        .leases
        .backoff
        .with_task(task.retry_base_ms, task.retry_max_ms);
    let delay = backoff.delay(task.attempts, fastrand::f64());
    let settlement = lifecycle::settle(
        outcome,
        task.attempts,
        task.max_attempts,
        now,
        delay.as_millis() as u64,
    );
    if !state
        .store
        .settle(task.id, worker, &settlement, now)
        .await?
    {
        return Err(lost(format!(
            "task {} is no longer held by this lease",
            task.id
        )));
    }
    let status = settlement.status();
    let started = task.started_at.unwrap_or(now);
    state.metrics.attempt_ended(
        &task.queue,
        &task.kind,
        status.as_str(),
        task.created_at,
        started,
        now,
    );
    if matches!(settlement, Settlement::Requeued) {
        state.broker.work_ready();
    }
    state.events.poke();
    Ok(Json(ReportAnswer {
        id: task.id,
        status,
    }))
}

/// `POST /api/v1/tasks/{id}/logs`: appends output lines to the task's log (this attempt's).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/logs", tag = "workers",
    params(("id" = Uuid, Path, description = "task id")),
    request_body = LogReport,
    responses(
        (status = 200, description = "appended", body = ReportAnswer),
        LeaseRefused,
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["worker"])))]
pub async fn logs(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    JsonBody(report): JsonBody<LogReport>,
) -> Result<Json<ReportAnswer>, ApiError> {
    if report.lines.len() > MAX_REPORT_LINES {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("lines: at most {MAX_REPORT_LINES} per report"),
        ));
    }
    if report.lines.iter().any(|l| l.stream == LogStream::System) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "lines: a stream is stdout or stderr (system lines are taskd's own)",
        ));
    }
    let (task, attempt, _) = held(&state, id, &report.lease).await?;
    let now = now_ms();
    let lines: Vec<NewLogLine> = report
        .lines
        .into_iter()
        .map(|line| NewLogLine {
            task_id: id,
            attempt,
            stream: line.stream,
            ts: now,
            line: cut(line.line, MAX_LINE_BYTES),
        })
        .collect();
    if !lines.is_empty() {
        state.store.append_logs(lines).await?;
    }
    Ok(Json(ReportAnswer {
        id,
        status: task.status,
    }))
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lease_is_an_attempt_and_a_worker() {
        assert_eq!(super::parse_lease("3.host-1.a"), Some((3, "host-1.a")));
        assert_eq!(super::parse_lease("x.host"), None);
        assert_eq!(super::parse_lease("3."), None);
        assert_eq!(super::parse_lease("3"), None);
        assert_eq!(super::cut("héllo".into(), 2), "h");
    }
}
