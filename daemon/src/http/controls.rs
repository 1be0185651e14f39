//! Queue controls (`/api/v1/queues/{queue}[/pause|resume]`) and the audit log
//! (`/api/v1/audit`), with the [`Actor`] every audited action is recorded under.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use serde_json::{Value, json};
use taskplane_api::{AuditList, AuditQuery, ErrorBody, QueuePatch, QueueSettings};

use super::AppState;
use super::convert::instant;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams, next_page, page_limit};
use super::openapi::{Refused, WriteRefused};
use crate::auth::Principal;
use crate::domain::gates::Gate;
use crate::store::{AuditEntry, AuditFilter, QueueChange};
use crate::util::now_ms;

/// Who is acting: the token's subject, or `anonymous@<peer address>` when auth is off.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Actor(principal.subject.clone()));
        }
        Ok(Actor(
            match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
                Some(ConnectInfo(peer)) => format!("anonymous@{}", peer.ip()),
                None => "anonymous".to_owned(),
            },
        ))
    }
}

impl Actor {
    /// The audit entry of `action` on `target` by this actor.
    pub fn did(&self, action: &str, target: impl Into<String>, details: Value) -> AuditEntry {
        AuditEntry {
            actor: self.0.clone(),
            action: action.to_owned(),
            target: target.into(),
            details: details.to_string(),
        }
    }
}

/// A payload as the audit log keeps it: the values of `env`, `pillar` and `headers` (where
/// secrets go) left out.
fn redacted(payload: &mut Value) {
    for field in ["env", "pillar", "headers"] {
        if let Some(Value::Object(map)) = payload.get_mut(field) {
            for value in map.values_mut() {
                *value = Value::String("[redacted]".into());
            }
        }
    }
}

/// A schedule's spec (JSON text) as the audit log keeps it, its task's payload redacted.
pub fn spec_details(spec: &str) -> Value {
    let mut spec: Value = serde_json::from_str(spec).unwrap_or(Value::Null);
    if let Some(payload) = spec.pointer_mut("/task/payload") {
        redacted(payload);
    }
    // The name is the entry's target (the stored spec keeps it blank, in a column of its own).
    if let Some(fields) = spec.as_object_mut() {
        fields.remove("name");
    }
    json!({ "spec": spec })
}

/// Records a submit of an admin-only kind (shell, salt, kubectl) on `task`: its kind,
/// queue and payload (redacted).
pub fn audit_submit(actor: &Actor, task: &mut crate::domain::validate::NewTask) {
    if !crate::auth::kind_needs_admin(&task.kind) {
        return;
    }
    let mut payload: Value = serde_json::from_str(&task.payload).unwrap_or(Value::Null);
    redacted(&mut payload);
    task.audit = Some(actor.did(
        "submit",
        task.id.to_string(),
        json!({"kind": task.kind, "queue": task.queue, "payload": payload}),
    ));
}

/// The most a running limit may be, and a rate.
const MAX_RUNNING: i64 = 100_000;
const MAX_RATE: f64 = 100_000.0;

fn check_queue(queue: &str) -> Result<(), ApiError> {
    crate::domain::validate::check_name("queue", queue, 64)
        .map_err(|e| ApiError::bad_request("invalid_name", e.message))
}

pub fn settings(gate: Gate) -> QueueSettings {
    QueueSettings {
        queue: gate.queue,
        paused: gate.paused,
        max_running: gate.max_running,
        rate_per_sec: gate.rate_milli.map(|r| r as f64 / 1000.0),
        updated_at: Some(instant(gate.updated_at)),
    }
}

/// The settings of a queue that has none.
fn unset(queue: &str) -> QueueSettings {
    QueueSettings {
        queue: queue.to_owned(),
        paused: false,
        max_running: None,
        rate_per_sec: None,
        updated_at: None,
    }
}

async fn change(
    state: &AppState,
    queue: &str,
    change: QueueChange,
    audit: AuditEntry,
) -> Result<Json<QueueSettings>, ApiError> {
    check_queue(queue)?;
    let (after, ungated) = state
        .store
        .change_queue(queue, &change, now_ms(), &audit)
        .await?;
    // This process's claims look again at once; other processes' within a second.
    state.broker.gates().touch();
    if ungated {
        // Its ready tasks are ready for the ordinary claims (and the dispatcher) again.
        state.broker.work_ready();
    }
    tracing::info!(queue, action = %audit.action, actor = %audit.actor, "queue settings changed");
    Ok(Json(after.map_or_else(|| unset(queue), settings)))
}

/// `POST /api/v1/queues/{queue}/pause`: workers stop taking the queue's tasks within a
/// second, on every process (running ones finish); submits are still accepted.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/pause", tag = "queues",
    params(("queue" = String, Path, description = "the queue (it need not have tasks yet)")),
    responses(
        (status = 200, description = "the queue's settings", body = QueueSettings),
        (status = 400, description = "not a queue name (invalid_name)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["admin"])))]
pub async fn pause(
    State(state): State<AppState>,
    actor: Actor,
    Path(queue): Path<String>,
) -> Result<Json<QueueSettings>, ApiError> {
    set_paused(&state, &actor, &queue, true).await
}

/// Pauses or resumes a queue.
async fn set_paused(
    state: &AppState,
    actor: &Actor,
    queue: &str,
    paused: bool,
) -> Result<Json<QueueSettings>, ApiError> {
    let action = if paused {
        "queue.pause"
    } else {
        "queue.resume"
    };
    let change_to = QueueChange {
        paused: Some(paused),
        ..QueueChange::default()
    };
    change(state, queue, change_to, actor.did(action, queue, json!({}))).await
}

/// `POST /api/v1/queues/{queue}/resume`: workers take the queue's tasks again.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/resume", tag = "queues",
    params(("queue" = String, Path, description = "the queue")),
    responses(
        (status = 200, description = "the queue's settings", body = QueueSettings),
        (status = 400, description = "not a queue name (invalid_name)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["admin"])))]
pub async fn resume(
    State(state): State<AppState>,
    actor: Actor,
    Path(queue): Path<String>,
) -> Result<Json<QueueSettings>, ApiError> {
    set_paused(&state, &actor, &queue, false).await
}

/// `PATCH /api/v1/queues/{queue}`: the running limit and the rate (`null` clears one; a
/// field left out stays). They hold across every worker process, and persist.
#[utoipa::path(patch, path = "/api/v1/queues/{queue}", tag = "queues",
    params(("queue" = String, Path, description = "the queue (it need not have tasks yet)")),
    request_body = QueuePatch,
    responses(
        (status = 200, description = "the queue's settings", body = QueueSettings),
        (status = 400, description = "a limit or rate out of range (invalid_request), or not a queue name (invalid_name)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["admin"])))]
pub async fn patch(
    State(state): State<AppState>,
    actor: Actor,
    Path(queue): Path<String>,
    JsonBody(patch): JsonBody<QueuePatch>,
) -> Result<Json<QueueSettings>, ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_request", message);
    let max_running = match patch.max_running {
        Some(Some(n)) if !(1..=MAX_RUNNING).contains(&n) => {
            return Err(bad(format!(
                "max_running: {n} is outside 1..={MAX_RUNNING} (null clears it; pause the queue to run none)"
            )));
        }
        Some(limit) => Some(limit.map(|n| n as u32)),
        None => None,
    };
    let rate_milli = match patch.rate_per_sec {
        Some(Some(rate)) if !(rate > 0.0 && rate <= MAX_RATE) => {
            return Err(bad(format!(
                "rate_per_sec: {rate} must be more than 0 and at most {MAX_RATE} (null clears it)"
            )));
        }
        // At least a thousandth of a start per second.
        Some(rate) => Some(rate.map(|r| ((r * 1000.0).round() as i64).max(1))),
        None => None,
    };
    if max_running.is_none() && rate_milli.is_none() && patch.paused.is_none() {
        return Err(bad(
            "nothing to change: give max_running, rate_per_sec or paused".into(),
        ));
    }
    let mut details = serde_json::Map::new();
    if let Some(limit) = &patch.max_running {
        details.insert("max_running".into(), json!(limit));
    }
    if let Some(rate) = &patch.rate_per_sec {
        details.insert("rate_per_sec".into(), json!(rate));
    }
    if let Some(paused) = patch.paused {
        details.insert("paused".into(), json!(paused));
    }
    let audit = actor.did("queue.set", &queue, Value::Object(details));
    let change_to = QueueChange {
        paused: patch.paused,
        max_running,
        rate_milli,
    };
    change(&state, &queue, change_to, audit).await
}

/// `GET /api/v1/audit`: operator actions, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "entries, newest first", body = AuditList),
        (status = 400, description = "bad input", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["admin"])))]
pub async fn audit(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = page_limit(query.limit)?;
    let before = match &query.cursor {
        Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_cursor",
                format!("cursor: '{cursor}' is not one this API gave"),
            )
        })?),
        None => None,
    };
    let mut rows = state
        .store
        .audit_log(AuditFilter {
            since: query.since.map(|at| at.timestamp_millis()),
            actor: query.actor,
            action: query.action,
            before,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = next_page(&mut rows, limit, |row| row.seq.to_string());
    Ok(Json(AuditList {
        entries: rows
            .into_iter()
            .map(|row| taskplane_api::AuditEntry {
                seq: row.seq,
                at: instant(row.at),
                actor: row.entry.actor,
                action: row.entry.action,
                target: row.entry.target,
                details: serde_json::from_str(&row.entry.details).unwrap_or(Value::Null),
            })
            .collect(),
        next_cursor,
    }))
}
