//! `/api/v1/schedules…` and `/api/v1/cron/next`: create, list, read, replace, delete, pause,
//! resume and trigger schedules, and preview fire times.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use taskplane_api::{
    CronQuery, ErrorBody, NextFires, NextQuery, Schedule, ScheduleList, ScheduleQuery,
    ScheduleSpec, Task,
};

use super::AppState;
use super::controls::{Actor, spec_details};
use super::convert;
use super::convert::instant;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams, next_page, page_limit};
use super::guard;
use super::openapi::{Refused, WriteRefused};
use crate::auth::Principal;
use crate::domain::schedule::Timing;
use crate::scheduler::{self, Checked, SpecError, Triggered};
use crate::store::ScheduleRow;
use crate::util::now_ms;
use serde_json::json;

const DEFAULT_NEXT: u32 = 5;
const MAX_NEXT: u32 = 1000;

impl From<SpecError> for ApiError {
    fn from(error: SpecError) -> Self {
        let status = if error.code == "payload_too_large" {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, error.code, error.message)
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "schedule_not_found",
        format!("no schedule named '{name}'"),
    )
}

/// A name from the path, checked.
fn path_name(name: &str) -> Result<(), ApiError> {
    if scheduler::valid_name(name) {
        Ok(())
    } else {
        Err(scheduler::name_error("name", name).into())
    }
}

/// The wire form of a stored schedule.
fn to_wire(row: ScheduleRow) -> Result<Schedule, ApiError> {
    let (spec, _) = scheduler::stored(&row)?;
    Ok(Schedule {
        cron: spec.cron,
        every_secs: spec.every_secs,
        timezone: spec.timezone.unwrap_or_else(|| "UTC".to_owned()),
        overlap: spec.overlap,
        catch_up: spec.catch_up,
        paused: row.paused,
        task: spec.task,
        next_run_at: row.next_run_at.map(instant),
        last_run_at: row.last_run_at.map(instant),
        last_task_id: row.last_task_id.as_deref().and_then(|id| id.parse().ok()),
        last_status: row.last_status,
        created_at: instant(row.created_at),
        updated_at: instant(row.updated_at),
        name: row.name,
    })
}

/// The first fire time after `now` of a schedule whose next one was `current` (an interval
/// keeps its phase).
fn next_from(timing: &Timing, current: Option<i64>, now: i64) -> Option<i64> {
    match (timing, current) {
        (Timing::Every { every_ms }, Some(at)) if at <= now => {
            let every = (*every_ms).max(1);
            at.checked_add(((now - at) / every + 1) * every)
        }
        (Timing::Every { .. }, Some(at)) => Some(at),
        _ => timing.next_after(now),
    }
}

/// `POST /api/v1/schedules`: 201 with the new schedule.
#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules",
    request_body = ScheduleSpec,
    responses(
        (status = 201, description = "created", body = Schedule),
        (status = 409, description = "a schedule of that name exists (schedule_exists)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    JsonBody(spec): JsonBody<ScheduleSpec>,
) -> Result<Response, ApiError> {
    guard::check_kind(principal.as_deref(), &spec.task.kind)?;
    let now = now_ms();
    let name = spec.name.clone();
    let paused = spec.paused.unwrap_or(false);
    let checked = scheduler::check(spec, &state.kinds, now)?;
    let row = ScheduleRow {
        name: name.clone(),
        spec: checked.spec_json(),
        paused,
        next_run_at: checked.first_after(now),
        last_run_at: None,
        last_task_id: None,
        last_status: None,
        created_at: now,
        updated_at: now,
    };
    let audit = actor.did("schedule.create", &name, spec_details(&row.spec));
    if !state.store.create_schedule(&row, Some(&audit)).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "schedule_exists",
            format!(
                "a schedule named '{name}' exists; change it with PUT /api/v1/schedules/{name}"
            ),
        ));
    }
    state.scheduler.wake.notify_one();
    let location = format!("/api/v1/schedules/{name}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(to_wire(row)?),
    )
        .into_response())
}

/// `GET /api/v1/schedules`: by name, keyset-paged.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    params(ScheduleQuery),
    responses(
        (status = 200, description = "by name", body = ScheduleList),
        (status = 400, description = "bad input", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn list(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ScheduleQuery>,
) -> Result<Json<ScheduleList>, ApiError> {
    let limit = page_limit(query.limit)?;
    let mut rows = state.store.schedules(query.cursor, limit + 1).await?;
    let next_cursor = next_page(&mut rows, limit, |row| row.name.clone());
    let schedules = rows.into_iter().map(to_wire).collect::<Result<_, _>>()?;
    Ok(Json(ScheduleList {
        schedules,
        next_cursor,
    }))
}

/// `GET /api/v1/schedules/{name}`.
#[utoipa::path(get, path = "/api/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 200, description = "the schedule", body = Schedule),
        (status = 400, description = "not a schedule name (invalid_name)", body = ErrorBody),
        (status = 404, description = "no such schedule (schedule_not_found)", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    path_name(&name)?;
    let row = state
        .store
        .schedule(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(to_wire(row)?))
}

/// `PUT /api/v1/schedules/{name}`: creates the schedule (201) or replaces its spec (200).
/// Fire times are recomputed only when the timing changed; a spec that is the same already
/// writes nothing.
#[utoipa::path(put, path = "/api/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    request_body = ScheduleSpec,
    responses(
        (status = 200, description = "replaced, or the same already", body = Schedule),
        (status = 201, description = "created", body = Schedule),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn put(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    Path(name): Path<String>,
    JsonBody(mut spec): JsonBody<ScheduleSpec>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    if spec.name.is_empty() {
        spec.name = name.clone();
    } else if spec.name != name {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "name: the body names '{}' but the path '{name}'; rename by creating the new one and deleting the old",
                spec.name
            ),
        ));
    }
    guard::check_kind(principal.as_deref(), &spec.task.kind)?;
    let Some(current) = state.store.schedule(&name).await? else {
        return create(State(state), principal, actor, JsonBody(spec)).await;
    };
    let (old, _) = scheduler::stored(&current)?;
    // Changing what a schedule of an admin kind runs takes what making it takes.
    guard::check_kind(principal.as_deref(), &old.task.kind)?;
    let now = now_ms();
    let paused = spec.paused.unwrap_or(current.paused);
    let checked: Checked = scheduler::check(spec, &state.kinds, now)?;
    let spec_json = checked.spec_json();
    if spec_json == current.spec && paused == current.paused {
        return Ok((StatusCode::OK, Json(to_wire(current)?)).into_response());
    }
    let resumed = current.paused && !paused;
    let next_run_at = if checked.retimes(&old) {
        checked.first_after(now)
    } else if resumed {
        next_from(&checked.timing, current.next_run_at, now)
    } else {
        current.next_run_at
    };
    let row = ScheduleRow {
        spec: spec_json,
        paused,
        next_run_at,
        updated_at: now,
        ..current
    };
    let audit = actor.did("schedule.update", &name, spec_details(&row.spec));
    if !state.store.update_schedule(&row, Some(&audit)).await? {
        return Err(not_found(&name));
    }
    state.scheduler.wake.notify_one();
    Ok((StatusCode::OK, Json(to_wire(row)?)).into_response())
}

/// `DELETE /api/v1/schedules/{name}`: answers the schedule as it was; its tasks stay.
#[utoipa::path(delete, path = "/api/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 200, description = "deleted; the schedule as it was", body = Schedule),
        (status = 404, description = "no such schedule (schedule_not_found)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    Path(name): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    path_name(&name)?;
    let row = state
        .store
        .schedule(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let (spec, _) = scheduler::stored(&row)?;
    guard::check_kind(principal.as_deref(), &spec.task.kind)?;
    let audit = actor.did("schedule.delete", &name, json!({}));
    if !state.store.delete_schedule(&name, Some(&audit)).await? {
        return Err(not_found(&name));
    }
    Ok(Json(to_wire(row)?))
}

/// Sets a schedule's pause state; resuming skips the fire times that passed while paused.
async fn set_paused(
    state: &AppState,
    principal: Option<&Principal>,
    actor: &Actor,
    name: &str,
    paused: bool,
) -> Result<Json<Schedule>, ApiError> {
    path_name(name)?;
    let current = state
        .store
        .schedule(name)
        .await?
        .ok_or_else(|| not_found(name))?;
    let (spec, timing) = scheduler::stored(&current)?;
    guard::check_kind(principal, &spec.task.kind)?;
    if current.paused == paused {
        return Ok(Json(to_wire(current)?));
    }
    let now = now_ms();
    let next_run_at = if paused {
        current.next_run_at
    } else {
        next_from(&timing, current.next_run_at, now)
    };
    let row = ScheduleRow {
        paused,
        next_run_at,
        updated_at: now,
        ..current
    };
    let action = if paused {
        "schedule.pause"
    } else {
        "schedule.resume"
    };
    let audit = actor.did(action, name, json!({}));
    if !state.store.update_schedule(&row, Some(&audit)).await? {
        return Err(not_found(name));
    }
    state.scheduler.wake.notify_one();
    Ok(Json(to_wire(row)?))
}

/// `POST /api/v1/schedules/{name}/pause`: it fires no more until resumed (a trigger still
/// runs it).
#[utoipa::path(post, path = "/api/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 200, description = "paused (or paused already)", body = Schedule),
        (status = 404, description = "no such schedule (schedule_not_found)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn pause(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    Path(name): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    set_paused(&state, principal.as_deref(), &actor, &name, true).await
}

/// `POST /api/v1/schedules/{name}/resume`: it fires again from its next time after now.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 200, description = "resumed (or running already)", body = Schedule),
        (status = 404, description = "no such schedule (schedule_not_found)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn resume(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    Path(name): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    set_paused(&state, principal.as_deref(), &actor, &name, false).await
}

/// `POST /api/v1/schedules/{name}/trigger`: one task now, paused or not; its fire times are
/// unchanged.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/trigger", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 201, description = "the task it submitted", body = Task),
        (status = 404, description = "no such schedule (schedule_not_found)", body = ErrorBody),
        WriteRefused,
        Refused
    ),
    security(("bearer" = ["tasks.write"])))]
pub async fn trigger(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    actor: Actor,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    if let Some(row) = state.store.schedule(&name).await? {
        let (spec, _) = scheduler::stored(&row)?;
        guard::check_kind(principal.as_deref(), &spec.task.kind)?;
    }
    let audit = actor.did("schedule.trigger", &name, json!({}));
    match state.scheduler.trigger(&name, Some(audit)).await? {
        Triggered::Submitted(task) => {
            let location = format!("/api/v1/tasks/{}", task.id);
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(convert::task(*task)),
            )
                .into_response())
        }
        Triggered::NotFound => Err(not_found(&name)),
        Triggered::Refused(error) => Err(error.into()),
    }
}

fn count(count: Option<u32>) -> Result<usize, ApiError> {
    let count = count.unwrap_or(DEFAULT_NEXT);
    if count == 0 || count > MAX_NEXT {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("count: must be 1 to {MAX_NEXT}"),
        ));
    }
    Ok(count as usize)
}

/// `count` fire times from `first` on: in UTC, and on the wall clock of `zone`.
fn fires(timing: &Timing, first: Option<i64>, count: usize, zone: &str) -> NextFires {
    let tz = crate::domain::schedule::parse_zone(zone).unwrap_or(chrono_tz::Tz::UTC);
    let mut out = NextFires {
        timezone: zone.to_owned(),
        ..Default::default()
    };
    let mut at = first;
    while let Some(t) = at {
        if out.fire_times.len() == count {
            break;
        }
        if let Some(instant) = DateTime::from_timestamp_millis(t) {
            out.local_times.push(
                instant
                    .with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            out.fire_times.push(instant);
        }
        at = timing.next_after(t);
    }
    out
}

/// `GET /api/v1/schedules/{name}/next`: the schedule's next fire times.
#[utoipa::path(get, path = "/api/v1/schedules/{name}/next", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name"), NextQuery),
    responses(
        (status = 200, description = "its next fire times", body = NextFires),
        (status = 400, description = "not a schedule name (invalid_name), or a count out of range", body = ErrorBody),
        (status = 404, description = "no such schedule (schedule_not_found)", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn next(
    State(state): State<AppState>,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<NextQuery>,
) -> Result<Json<NextFires>, ApiError> {
    path_name(&name)?;
    let count = count(query.count)?;
    let row = state
        .store
        .schedule(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let (spec, timing) = scheduler::stored(&row)?;
    let first = next_from(&timing, row.next_run_at, now_ms());
    let zone = spec.timezone.unwrap_or_else(|| "UTC".to_owned());
    Ok(Json(fires(&timing, first, count, &zone)))
}

/// `GET /api/v1/cron/next`: the next fire times of an expression, from now.
#[utoipa::path(get, path = "/api/v1/cron/next", tag = "schedules",
    params(CronQuery),
    responses(
        (status = 200, description = "its next fire times", body = NextFires),
        (status = 400, description = "a bad expression or zone", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn preview(
    QueryParams(query): QueryParams<CronQuery>,
) -> Result<Json<NextFires>, ApiError> {
    let count = count(query.count)?;
    let Some(cron) = query.cron.clone() else {
        return Err(ApiError::bad_request("invalid_request", "cron: required"));
    };
    let spec = ScheduleSpec {
        cron: Some(cron),
        timezone: Some(query.timezone.clone().unwrap_or_else(|| "UTC".to_owned())),
        ..Default::default()
    };
    let timing = scheduler::timing(&spec)?;
    let zone = spec.timezone.clone().unwrap_or_default();
    Ok(Json(fires(
        &timing,
        timing.next_after(now_ms()),
        count,
        &zone,
    )))
}
