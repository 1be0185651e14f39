//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the `api` crate's types. A committed copy
//! (`api/openapi.json`) is compared with it by a test, so a change to the API shows in review.

use axum::Json;
use taskplane_api::{
    AuditEntry, AuditList, BatchSubmit, BrokerQueue, BulkResult, CatchUp, Complete, CronQuery,
    DlqPurge, DlqRetry, ErrorBody, ErrorDetail, EventKind, Fail, Health, Heartbeat,
    HeartbeatAnswer, KindInfo, KindList, LeaseList, LeaseRequest, LeasedTask, LogLine, LogPage,
    LogReport, LogStream, NextFires, NextQuery, Overlap, QueueList, QueuePatch, QueueSettings,
    QueueStats, ReportAnswer, ReportedLine, Schedule, ScheduleList, ScheduleQuery, ScheduleSpec,
    StepRef, SubmitTask, Task, TaskEvent, TaskList, TaskStatus, TaskSummary, WorkerInfo,
    WorkerList, Workflow, WorkflowAction, WorkflowCreated, WorkflowList, WorkflowQuery,
    WorkflowSpec, WorkflowStatus, WorkflowStep, WorkflowStepState,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{controls, leases, live, probes, schedules, tasks, workflows};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Taskplane API",
        description = "Submit, follow and control background tasks. Errors are `{\"error\": {\"code\", \"message\"}}`. With auth on, every /api/v1 route needs `Authorization: Bearer <JWT>` with the scope listed on it (`admin` includes every scope).",
        license(name = "Apache-2.0")
    ),
    paths(
        tasks::submit,
        tasks::submit_batch,
        tasks::list,
        tasks::get_one,
        tasks::cancel,
        tasks::retry,
        tasks::logs,
        tasks::dlq_retry,
        tasks::dlq_purge,
        schedules::create,
        schedules::list,
        schedules::get_one,
        schedules::put,
        schedules::delete,
        schedules::pause,
        schedules::resume,
        schedules::trigger,
        schedules::next,
        schedules::preview,
        workflows::create,
        workflows::list,
        workflows::get_one,
        workflows::cancel,
        workflows::retry,
        live::events,
        live::queues,
        controls::pause,
        controls::resume,
        controls::patch,
        controls::audit,
        live::workers,
        leases::kinds,
        leases::lease,
        leases::heartbeat,
        leases::complete,
        leases::fail,
        leases::logs,
        probes::health,
        probes::ready,
        probes::metrics,
    ),
    components(schemas(
        Task, TaskStatus, SubmitTask, BatchSubmit, TaskList, LogLine, LogPage, LogStream,
        DlqRetry, DlqPurge, BulkResult, EventKind, TaskSummary, TaskEvent, BrokerQueue,
        QueueStats, QueueList, WorkerInfo, WorkerList, ErrorBody, ErrorDetail, Health,
        ScheduleSpec, Schedule, ScheduleList, Overlap, CatchUp, NextFires, NextQuery, CronQuery,
        ScheduleQuery, WorkflowSpec, WorkflowStep, WorkflowStatus, StepRef, WorkflowCreated,
        WorkflowStepState, Workflow, WorkflowList, WorkflowQuery, WorkflowAction, KindInfo,
        KindList, LeaseRequest, LeasedTask, LeaseList, Heartbeat, HeartbeatAnswer, Complete, Fail,
        ReportedLine, LogReport, ReportAnswer, QueueSettings, QueuePatch, AuditEntry, AuditList
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// What every route behind auth may answer besides its own statuses. The enums only
/// describe responses for the document; handlers answer with `ApiError`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refused {
    #[response(status = 401, description = "no or bad token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "the token lacks the scope, or the request names a host this taskd does not answer for (host_not_allowed) or comes from a web origin it does not allow (cross_origin)"
    )]
    Forbidden(ErrorBody),
    #[response(
        status = 503,
        description = "the store is unavailable, or the request timed out"
    )]
    Unavailable(ErrorBody),
}

/// What a route that takes a JSON body may answer besides [`Refused`].
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum WriteRefused {
    #[response(status = 400, description = "bad input")]
    BadInput(ErrorBody),
    #[response(status = 413, description = "body or payload too large")]
    TooLarge(ErrorBody),
    #[response(
        status = 415,
        description = "the body is not sent as Content-Type: application/json"
    )]
    NotJson(ErrorBody),
    #[response(status = 429, description = "write rate limit (Retry-After)")]
    RateLimited(ErrorBody),
}

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document as JSON text, exactly as served and committed.
pub fn json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
