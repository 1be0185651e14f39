//! `/api/v1/tasks…`: submit, batch submit, list, get, cancel, retry, logs.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use taskplane_api::{
    BatchSubmit, BulkResult, DlqPurge, DlqRetry, ListQuery, LogPage, LogQuery, MAX_BATCH_TASKS,
    SubmitTask, TaskList, TaskStatus,
};
use uuid::Uuid;

use super::AppState;
use super::controls::{Actor, audit_submit};
use super::convert;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams, TaskId};
use super::guard;
use super::openapi::{Refused, WriteRefused};
use crate::auth::Principal;
use crate::domain::labels::Selector;
use crate::domain::validate::{self, NewTask};
use crate::store::{CancelOutcome, FinishedFilter, ListFilter, RetryOutcome, StoredTask};
use crate::util::now_ms;
use axum::Extension;
use taskplane_api::{ErrorBody, Task};

const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 1000;
/// A task has at most 32 labels; a selector list longer than that only costs the database.
const MAX_LABEL_SELECTORS: usize = 32;
/// A page of tasks ends once it holds this much (payloads, results, errors), even short of
/// `limit`: 1,000 tasks of 1 MiB each would otherwise be a 1 GiB answer built in memory.
const MAX_LIST_BYTES: usize = 8 * 1024 * 1024;
const DEFAULT_LOG_LIMIT: u32 = 1000;
const MAX_LOG_LIMIT: u32 = 10_000;

/// What follows a committed submit (its tasks stamped with `mark`): count it, hand it to the
/// broker, and read the event feed now rather than at the next tick.
pub(super) fn accepted(state: &AppState, created: &[&crate::store::StoredTask], mark: Option<i64>) {
    for row in created {
        state.metrics.submitted(&row.queue, &row.kind);
    }
    state.broker.submitted(created, mark);
    state.events.poke();
}

/// `POST /api/v1/tasks`: 201 with the new task, or 200 with the task an idempotency key names.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks",
    request_body = SubmitTask,
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the first task submitted with this key")),
    responses(
        (status = 201, description = "created", body = Task),
        (status = 200, description = "an idempotency key replayed an existing task", body = Task),
        (status = 409, description = "the idempotency key belongs to a different task", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn submit(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    headers: HeaderMap,
    JsonBody(mut request): JsonBody<SubmitTask>,
) -> Result<Response, ApiError> {
    guard::check_kind(principal.as_deref(), &request.kind)?;
    if let Some(value) = headers.get("idempotency-key") {
        let key = value.to_str().map_err(|_| {
            ApiError::bad_request("invalid_request", "Idempotency-Key must be visible ASCII")
        })?;
        match &request.idempotency_key {
            Some(body_key) if body_key != key => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "the Idempotency-Key header and the idempotency_key field differ",
                ));
            }
            _ => request.idempotency_key = Some(key.to_owned()),
        }
    }
    let now = now_ms();
    let mut task = validate::submit(request, &state.kinds, Uuid::now_v7(), now)?;
    task.trace_parent = crate::telemetry::submitted_in(&headers);
    audit_submit(&actor, &mut task);
    state.broker.know_gates(state.store.as_ref()).await;
    let mark = state.broker.submit_mark();
    task.published_at = state.broker.stamp(&task, mark);
    let (kind, payload) = (task.kind.clone(), task.payload.clone());
    let mut stored = if task.depends_on.is_empty() {
        crate::telemetry::traced("store.insert", None, state.submits.insert(vec![task])).await?
    } else {
        insert_graph(&state, vec![task]).await?
    };
    let (row, created) = stored.pop().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the store returned no task",
        )
    })?;
    if created {
        accepted(&state, &[&row], mark);
    } else if row.kind != kind || row.payload != payload {
        // A replay answers the first task only for the same request: a key reused for
        // different work (or someone else's key) must not pass for success.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this idempotency key belongs to a different task; use a new key",
        ));
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/api/v1/tasks/{}", row.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(convert::task(row)),
    )
        .into_response())
}

/// Inserts tasks of which some depend on others, with their edges, in one transaction.
async fn insert_graph(
    state: &AppState,
    tasks: Vec<NewTask>,
) -> Result<Vec<(crate::store::StoredTask, bool)>, ApiError> {
    let graph = crate::store::Graph {
        tasks,
        workflow: None,
    };
    match state.store.insert_graph(graph).await? {
        Ok(stored) => Ok(stored.into_iter().map(|task| (task, true)).collect()),
        Err(refused) => Err(graph_refused(refused)),
    }
}

/// The answer to a graph the store refused.
pub(super) fn graph_refused(refused: crate::store::GraphRefused) -> ApiError {
    match refused {
        crate::store::GraphRefused::UnknownParent(id) => ApiError::bad_request(
            "unknown_dependency",
            format!("depends_on: there is no task {id}"),
        ),
        crate::store::GraphRefused::ParentFinished(id, status) => ApiError::bad_request(
            "dependency_failed",
            format!(
                "depends_on: task {id} is {status}, so this task could never run; retry it first"
            ),
        ),
    }
}

/// `POST /api/v1/tasks/batch`: all or nothing; one invalid task refuses the whole batch.
#[utoipa::path(post, path = "/api/v1/tasks/batch", tag = "tasks",
    request_body = BatchSubmit,
    responses(
        (status = 201, description = "every task, in request order (a task whose idempotency key was used before is the first task; an empty batch is an empty list)", body = TaskList),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn submit_batch(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    headers: HeaderMap,
    JsonBody(batch): JsonBody<BatchSubmit>,
) -> Result<Response, ApiError> {
    for task in &batch.tasks {
        guard::check_kind(principal.as_deref(), &task.kind)?;
    }
    if batch.tasks.len() > MAX_BATCH_TASKS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "a batch holds at most {MAX_BATCH_TASKS} tasks; this one has {}",
                batch.tasks.len()
            ),
        ));
    }
    let now = now_ms();
    let trace_parent = crate::telemetry::submitted_in(&headers);
    state.broker.know_gates(state.store.as_ref()).await;
    let mark = state.broker.submit_mark();
    let tasks: Vec<NewTask> = batch
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let mut task =
                validate::submit(request, &state.kinds, Uuid::now_v7(), now).map_err(|e| {
                    let mut error = ApiError::from(e);
                    error.message = format!("tasks[{i}]: {}", error.message);
                    error
                })?;
            audit_submit(&actor, &mut task);
            task.trace_parent = trace_parent.clone();
            task.published_at = state.broker.stamp(&task, mark);
            Ok::<_, ApiError>(task)
        })
        .collect::<Result<_, _>>()?;
    let stored = if tasks.is_empty() {
        Vec::new()
    } else if tasks.iter().all(|task| task.depends_on.is_empty()) {
        crate::telemetry::traced("store.insert", None, state.store.insert(tasks)).await?
    } else {
        insert_graph(&state, tasks).await?
    };
    let created: Vec<&crate::store::StoredTask> = stored
        .iter()
        .filter(|(_, created)| *created)
        .map(|(row, _)| row)
        .collect();
    let any_created = !created.is_empty();
    if any_created {
        accepted(&state, &created, mark);
    }
    let list = TaskList {
        tasks: stored
            .into_iter()
            .map(|(row, _)| convert::task(row))
            .collect(),
        next_cursor: None,
    };
    // One status whatever the batch held (a script checks one code); which tasks are new
    // is what their `created_at` tells, as for replays of single submits.
    Ok((StatusCode::CREATED, Json(list)).into_response())
}

/// `GET /api/v1/tasks`: newest first, keyset-paged by id.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "newest first", body = TaskList),
        (status = 400, description = "bad input", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn list(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_LIST_LIMIT}"),
        ));
    }
    let before = query
        .cursor
        .as_deref()
        .map(|cursor| {
            Uuid::parse_str(cursor).map_err(|_| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "cursor must be the next_cursor of a previous page",
                )
            })
        })
        .transpose()?;
    if query.label.len() > MAX_LABEL_SELECTORS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("at most {MAX_LABEL_SELECTORS} label selectors"),
        ));
    }
    let labels = query
        .label
        .iter()
        .map(|text| Selector::parse(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    let rows = state
        .store
        .list(ListFilter {
            status: query.status,
            queue: query.queue,
            kind: query.kind,
            before,
            labels,
            limit,
            max_bytes: MAX_LIST_BYTES,
        })
        .await?;
    let cut_short = rows.iter().map(StoredTask::size).sum::<usize>() >= MAX_LIST_BYTES;
    let next_cursor = if rows.len() == limit as usize || cut_short {
        rows.last().map(|row| row.id.to_string())
    } else {
        None
    };
    Ok(Json(TaskList {
        tasks: rows.into_iter().map(convert::task).collect(),
        next_cursor,
    }))
}

/// `GET /api/v1/tasks/{id}`.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = Uuid, Path, description = "task id")),
    responses(
        (status = 200, description = "the task", body = Task),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 404, description = "no such task", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn get_one(
    State(state): State<AppState>,
    TaskId(id): TaskId,
) -> Result<Json<taskplane_api::Task>, ApiError> {
    match state.store.get(id).await? {
        Some(row) => {
            let mut task = convert::task(row);
            task.depends_on = state.store.parents(id).await?;
            Ok(Json(task))
        }
        None => Err(ApiError::task_not_found(id)),
    }
}

/// `POST /api/v1/tasks/{id}/cancel`: waiting tasks are cancelled at once (200); a running one
/// is signalled (202, `cancel_requested: true`); a finished one is a conflict (409).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = Uuid, Path, description = "task id")),
    responses(
        (status = 200, description = "cancelled", body = Task),
        (status = 202, description = "running: its worker is told to stop it", body = Task),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 404, description = "no such task", body = ErrorBody),
        (status = 409, description = "not allowed in the task's state", body = ErrorBody),
        (status = 429, description = "write rate limit (Retry-After)", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn cancel(
    State(state): State<AppState>,
    actor: Actor,
    TaskId(id): TaskId,
) -> Result<Response, ApiError> {
    let audit = actor.did("cancel", id.to_string(), json!({}));
    match state.store.cancel_by(id, now_ms(), Some(&audit)).await? {
        CancelOutcome::Cancelled(row) => {
            Ok((StatusCode::OK, Json(convert::task(row))).into_response())
        }
        CancelOutcome::Requested(row) => {
            Ok((StatusCode::ACCEPTED, Json(convert::task(row))).into_response())
        }
        CancelOutcome::Finished(row) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!(
                "task {id} has already finished ({}); nothing to cancel",
                row.status
            ),
        )),
        CancelOutcome::NotFound => Err(ApiError::task_not_found(id)),
    }
}

/// `POST /api/v1/tasks/{id}/retry`: a failed or cancelled task goes back to queued with a
/// fresh set of attempts.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/retry", tag = "tasks",
    params(("id" = Uuid, Path, description = "task id")),
    responses(
        (status = 200, description = "queued again with fresh attempts", body = Task),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 404, description = "no such task", body = ErrorBody),
        (status = 409, description = "not allowed in the task's state", body = ErrorBody),
        (status = 429, description = "write rate limit (Retry-After)", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn retry(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    TaskId(id): TaskId,
) -> Result<Json<taskplane_api::Task>, ApiError> {
    // Running a task again is running it: the privileged kinds need admin here too.
    if let Some(p) = principal.as_deref()
        && !p.allows(crate::auth::Scope::Admin)
    {
        let task = state
            .store
            .get(id)
            .await?
            .ok_or_else(|| ApiError::task_not_found(id))?;
        guard::check_kind(Some(p), &task.kind)?;
    }
    let audit = actor.did("retry", id.to_string(), json!({}));
    match state.store.retry_by(id, now_ms(), Some(&audit)).await? {
        RetryOutcome::Requeued(row) => {
            state.broker.work_ready();
            state.events.poke();
            Ok(Json(convert::task(row)))
        }
        RetryOutcome::NotRetryable(row) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "task {id} {}; only failed or cancelled tasks can be retried",
                if row.status.is_terminal() {
                    format!("has {}", row.status)
                } else {
                    format!("is {}", row.status)
                }
            ),
        )),
        RetryOutcome::NotFound => Err(ApiError::task_not_found(id)),
    }
}

/// `GET /api/v1/tasks/{id}/logs?after=SEQ&limit=N`.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/logs", tag = "tasks",
    params(("id" = Uuid, Path, description = "task id"), LogQuery),
    responses(
        (status = 200, description = "a page of output; with follow=true an NDJSON stream of LogLine until the task has finished", body = LogPage,
            content_type = "application/json"),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 404, description = "no such task", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn logs(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    QueryParams(query): QueryParams<LogQuery>,
) -> Result<Response, ApiError> {
    if query.follow {
        return super::live::follow_logs(state, id, query.after.unwrap_or(0)).await;
    }
    let limit = query.limit.unwrap_or(DEFAULT_LOG_LIMIT);
    if !(1..=MAX_LOG_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_LOG_LIMIT}"),
        ));
    }
    let after = query.after.unwrap_or(0);
    // Read the status first: a follower that sees a terminal status and then an empty page
    // knows it has every line.
    let task = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::task_not_found(id))?;
    let lines = state.store.logs(id, after, limit).await?;
    let next_after = lines.last().map(|line| line.seq).unwrap_or(after);
    Ok(Json(LogPage {
        task_id: id,
        task_status: task.status,
        lines: lines.into_iter().map(convert::log_line).collect(),
        next_after,
    })
    .into_response())
}

/// `POST /api/v1/dlq/retry`: every failed task (of a kind or queue) back to queued.
#[utoipa::path(post, path = "/api/v1/dlq/retry", tag = "dead letters",
    request_body = DlqRetry,
    responses(
        (status = 200, description = "how many tasks were requeued", body = BulkResult),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn dlq_retry(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    JsonBody(filter): JsonBody<DlqRetry>,
) -> Result<Json<BulkResult>, ApiError> {
    // Without admin, the privileged kinds stay in the dead-letter set: naming one is a 403,
    // and a retry of everything leaves them out.
    if let Some(kind) = &filter.kind {
        guard::check_kind(principal.as_deref(), kind)?;
    }
    let skip_privileged = principal
        .as_deref()
        .is_some_and(|p| !p.allows(crate::auth::Scope::Admin));
    let count = state
        .store
        .retry_failed(
            filter.kind.clone(),
            filter.queue.clone(),
            skip_privileged,
            now_ms(),
            Some(&actor.did(
                "dlq.retry",
                "dlq",
                json!({"kind": filter.kind, "queue": filter.queue}),
            )),
        )
        .await?;
    if count > 0 {
        state.broker.work_ready();
    }
    Ok(Json(BulkResult { count }))
}

/// `POST /api/v1/dlq/purge`: deletes failed tasks that finished `older_than_secs` ago, except
/// workflow steps (they stay with their workflow).
#[utoipa::path(post, path = "/api/v1/dlq/purge", tag = "dead letters",
    request_body = DlqPurge,
    responses(
        (status = 200, description = "how many tasks were deleted", body = BulkResult),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["admin"])))]
pub async fn dlq_purge(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(filter): JsonBody<DlqPurge>,
) -> Result<Json<BulkResult>, ApiError> {
    let age_ms = i64::try_from(filter.older_than_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let audit = actor.did(
        "dlq.purge",
        "dlq",
        json!({"kind": filter.kind, "queue": filter.queue, "older_than_secs": filter.older_than_secs}),
    );
    let count = state
        .store
        .delete_finished_by(
            FinishedFilter {
                statuses: vec![TaskStatus::Failed],
                finished_before: now_ms().saturating_sub(age_ms),
                kind: filter.kind,
                queue: filter.queue,
                steps: false,
            },
            Some(&audit),
        )
        .await?;
    Ok(Json(BulkResult { count }))
}
