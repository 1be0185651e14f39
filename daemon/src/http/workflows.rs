//! `/api/v1/workflows…`: create a workflow (every step a task, in one transaction), read
//! one or a page of them, cancel and retry one.

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use taskplane_api::{
    ErrorBody, STEP_LABEL, StepRef, SubmitTask, WORKFLOW_LABEL, Workflow, WorkflowAction,
    WorkflowCreated, WorkflowList, WorkflowQuery, WorkflowSpec, WorkflowStatus, WorkflowStepState,
};
use uuid::Uuid;

use super::AppState;
use super::controls::Actor;
use super::convert::instant;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams, WorkflowId, next_page, page_limit};
use super::guard;
use super::openapi::{Refused, WriteRefused};
use crate::auth::Principal;
use crate::domain::{validate, workflow};
use crate::store::{Graph, WorkflowRow, WorkflowState, WorkflowSummary};
use crate::util::now_ms;

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "workflow_not_found",
        format!("no workflow {id}"),
    )
}

/// `POST /api/v1/workflows`: 201 with the workflow's id and each step's task id.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows",
    request_body = WorkflowSpec,
    responses(
        (status = 201, description = "created: every step a task, those that need nothing queued", body = WorkflowCreated),
        (status = 400, description = "bad input: a cycle, a need or a reference that is not a step, a step id used twice, a reference to a step not needed, more than 1,000 steps (invalid_workflow), a bad name (invalid_name), or a step's task (naming the step)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    headers: axum::http::HeaderMap,
    JsonBody(spec): JsonBody<WorkflowSpec>,
) -> Result<Response, ApiError> {
    for step in &spec.steps {
        guard::check_kind(principal.as_deref(), &step.kind)?;
    }
    let checked = workflow::check(&spec)?;
    let now = now_ms();
    let workflow_id = Uuid::now_v7();
    // Ids in the order the steps were given: a workflow's steps are read back in id order.
    let ids: Vec<Uuid> = spec.steps.iter().map(|_| Uuid::now_v7()).collect();
    state.broker.know_gates(state.store.as_ref()).await;
    let mark = state.broker.submit_mark();
    // Every step belongs to the workflow's trace.
    let trace_parent = crate::telemetry::submitted_in(&headers);
    let mut tasks = Vec::with_capacity(spec.steps.len());
    for ((step, needs), id) in spec.steps.iter().zip(&checked.needs).zip(&ids) {
        let in_step = |error: ApiError| ApiError {
            message: format!("step '{}': {}", step.id, error.message),
            ..error
        };
        for reserved in [WORKFLOW_LABEL, STEP_LABEL] {
            if step.labels.contains_key(reserved) {
                return Err(in_step(ApiError::bad_request(
                    "invalid_request",
                    format!("labels: '{reserved}' is set by taskd on a workflow's steps"),
                )));
            }
        }
        let mut labels = step.labels.clone();
        labels.insert(WORKFLOW_LABEL.to_owned(), workflow_id.to_string());
        labels.insert(STEP_LABEL.to_owned(), step.id.clone());
        let request = SubmitTask {
            kind: step.kind.clone(),
            payload: step.payload.clone(),
            queue: step.queue.clone(),
            priority: step.priority,
            max_attempts: step.max_attempts,
            timeout_secs: step.timeout_secs,
            labels,
            retry_base_ms: step.retry_base_ms,
            retry_max_ms: step.retry_max_ms,
            ..SubmitTask::default()
        };
        let mut task = validate::step(request, &state.kinds, *id, now)
            .map_err(|e| in_step(ApiError::from(e)))?;
        task.depends_on = needs.iter().map(|&i| ids[i]).collect();
        task.workflow_id = Some(workflow_id);
        task.step = Some(step.id.clone());
        task.trace_parent = trace_parent.clone();
        super::controls::audit_submit(&actor, &mut task);
        task.published_at = state.broker.stamp(&task, mark);
        tasks.push(task);
    }
    let graph = Graph {
        tasks,
        workflow: Some(WorkflowRow {
            id: workflow_id,
            name: spec.name.clone(),
            created_at: now,
        }),
    };
    let stored = state
        .store
        .insert_graph(graph)
        .await?
        .map_err(super::tasks::graph_refused)?;
    super::tasks::accepted(&state, &stored.iter().collect::<Vec<_>>(), mark);
    let created = WorkflowCreated {
        id: workflow_id,
        name: spec.name,
        steps: spec
            .steps
            .into_iter()
            .zip(ids)
            .map(|(step, task_id)| StepRef {
                id: step.id,
                task_id,
            })
            .collect(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/workflows/{workflow_id}"))],
        Json(created),
    )
        .into_response())
}

/// Counts by status, as the wire shows them.
fn counts(
    pairs: impl IntoIterator<Item = (taskplane_api::TaskStatus, u32)>,
) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for (status, n) in pairs {
        *out.entry(status.as_str().to_owned()).or_insert(0) += n;
    }
    out
}

/// The wire form of a workflow and its steps.
fn to_wire(state: WorkflowState) -> Workflow {
    let step_of: HashMap<Uuid, String> = state
        .steps
        .iter()
        .map(|task| (task.id, task.step.clone().unwrap_or_default()))
        .collect();
    let status = WorkflowStatus::of(state.steps.iter().map(|task| task.status));
    let finished_at = status
        .is_terminal()
        .then(|| state.steps.iter().filter_map(|task| task.finished_at).max())
        .flatten()
        .map(instant);
    let counts = counts(state.steps.iter().map(|task| (task.status, 1)));
    let steps = state
        .steps
        .into_iter()
        .map(|task| {
            let needs = state
                .parents
                .get(&task.id)
                .map(|parents| {
                    parents
                        .iter()
                        .filter_map(|parent| step_of.get(parent).cloned())
                        .collect()
                })
                .unwrap_or_default();
            WorkflowStepState {
                id: task.step.unwrap_or_default(),
                task_id: task.id,
                kind: task.kind,
                status: task.status,
                needs,
                attempts: task.attempts,
                max_attempts: task.max_attempts,
                started_at: task.started_at.map(instant),
                finished_at: task.finished_at.map(instant),
                last_error: task.last_error,
            }
        })
        .collect();
    Workflow {
        id: state.row.id,
        name: state.row.name,
        status,
        created_at: instant(state.row.created_at),
        finished_at,
        counts,
        steps,
    }
}

fn summary_to_wire(summary: WorkflowSummary) -> Workflow {
    Workflow {
        id: summary.row.id,
        name: summary.row.name,
        status: WorkflowStatus::of(summary.counts.iter().map(|(status, _)| *status)),
        created_at: instant(summary.row.created_at),
        finished_at: summary.finished_at.map(instant),
        counts: counts(summary.counts),
        steps: Vec::new(),
    }
}

async fn read(state: &AppState, id: Uuid) -> Result<Workflow, ApiError> {
    let found = state
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(to_wire(found))
}

/// `GET /api/v1/workflows/{id}`: the workflow, its status and its steps.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id")),
    responses(
        (status = 200, description = "the workflow, its steps in the order given", body = Workflow),
        (status = 400, description = "not a workflow id (invalid_id)", body = ErrorBody),
        (status = 404, description = "no such workflow (workflow_not_found)", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn get_one(
    State(state): State<AppState>,
    WorkflowId(id): WorkflowId,
) -> Result<Json<Workflow>, ApiError> {
    read(&state, id).await.map(Json)
}

/// `GET /api/v1/workflows`: newest first, keyset-paged, without their steps.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows",
    params(WorkflowQuery),
    responses(
        (status = 200, description = "newest first", body = WorkflowList),
        (status = 400, description = "bad input", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn list(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<WorkflowQuery>,
) -> Result<Json<WorkflowList>, ApiError> {
    let limit = page_limit(query.limit)?;
    if let Some(name) = &query.name
        && !validate::valid_name(name)
    {
        return Err(workflow::name_error("name", name).into());
    }
    let mut rows = state
        .store
        .workflows(query.name, query.cursor, limit + 1)
        .await?;
    let next_cursor = next_page(&mut rows, limit, |row| row.row.id.to_string());
    Ok(Json(WorkflowList {
        workflows: rows.into_iter().map(summary_to_wire).collect(),
        next_cursor,
    }))
}

/// `POST /api/v1/workflows/{id}/cancel`: cancels every unfinished step (a running one is
/// asked to stop).
#[utoipa::path(post, path = "/api/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id")),
    responses(
        (status = 200, description = "how many steps it changed, and the workflow now", body = WorkflowAction),
        (status = 400, description = "not a workflow id (invalid_id)", body = ErrorBody),
        (status = 404, description = "no such workflow (workflow_not_found)", body = ErrorBody),
        (status = 429, description = "write rate limit (Retry-After)", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn cancel(
    State(state): State<AppState>,
    actor: Actor,
    WorkflowId(id): WorkflowId,
) -> Result<Json<WorkflowAction>, ApiError> {
    let audit = actor.did("workflow.cancel", id.to_string(), serde_json::json!({}));
    let changed = state
        .store
        .cancel_workflow(id, now_ms(), Some(&audit))
        .await?
        .ok_or_else(|| not_found(id))?;
    state.events.poke();
    let workflow = read(&state, id).await?;
    Ok(Json(WorkflowAction { changed, workflow }))
}

/// `POST /api/v1/workflows/{id}/retry`: runs the failed and cancelled steps again, and so
/// the steps that depend on them; the steps that succeeded keep their results.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/retry", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id")),
    responses(
        (status = 200, description = "how many steps it changed, and the workflow now", body = WorkflowAction),
        (status = 400, description = "not a workflow id (invalid_id)", body = ErrorBody),
        (status = 403, description = "a step to run again is of an admin-only kind and the token lacks admin", body = ErrorBody),
        (status = 404, description = "no such workflow (workflow_not_found)", body = ErrorBody),
        (status = 429, description = "write rate limit (Retry-After)", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn retry(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    WorkflowId(id): WorkflowId,
) -> Result<Json<WorkflowAction>, ApiError> {
    // Running a step again is running it: the privileged kinds need admin here too.
    if principal.is_some() {
        let before = read(&state, id).await?;
        for step in before.steps.iter().filter(|step| {
            matches!(
                step.status,
                taskplane_api::TaskStatus::Failed | taskplane_api::TaskStatus::Cancelled
            )
        }) {
            guard::check_kind(principal.as_deref(), &step.kind)?;
        }
    }
    let changed = state
        .store
        .retry_workflow(
            id,
            now_ms(),
            Some(&actor.did("workflow.retry", id.to_string(), serde_json::json!({}))),
        )
        .await?
        .ok_or_else(|| not_found(id))?;
    state.broker.work_ready();
    state.events.poke();
    let workflow = read(&state, id).await?;
    Ok(Json(WorkflowAction { changed, workflow }))
}
