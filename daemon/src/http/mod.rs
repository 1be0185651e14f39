//! The HTTP API: routers, extraction that answers bad input with the contract's JSON errors,
//! and the conversion of store rows into wire types.

mod controls;
mod convert;
mod error;
mod extract;
pub mod guard;
mod leases;
mod live;
pub mod openapi;
mod probes;
mod schedules;
pub mod server;
mod tasks;
mod ui;
mod workflows;

use std::sync::Arc;

use crate::broker::Broker;
use crate::domain::validate::Kinds;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::store::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, patch, post, put};
use guard::Guard;
pub use leases::LeaseSettings;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Single submits, group-committed.
    pub submits: Arc<crate::store::GroupCommit>,
    pub kinds: Arc<Kinds>,
    /// Told about new and requeued work.
    pub broker: Arc<Broker>,
    /// Live events for `/api/v1/events`.
    pub events: Arc<EventHub>,
    /// This process's counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The role this process runs, for `/health`.
    pub role: &'static str,
    /// Fires schedules; woken when one changes here.
    pub scheduler: Arc<crate::scheduler::Scheduler>,
    /// The lease protocol's lease and backoff.
    pub leases: Arc<LeaseSettings>,
}

/// Whether the API serves the web dashboard at `/ui/`, and whether it offers actions there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dashboard {
    Off,
    On { readonly: bool },
}

/// The full API (the `api` role), behind `guard`, taking bodies up to `max_body` bytes, with
/// the dashboard unless the guard says it is off.
pub fn api_router(state: AppState, guard: Arc<Guard>, max_body: usize) -> Router {
    let api = Router::new()
        .route("/api/v1/tasks", post(tasks::submit).get(tasks::list))
        .route("/api/v1/tasks/batch", post(tasks::submit_batch))
        .route("/api/v1/tasks/{id}", get(tasks::get_one))
        .route("/api/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/api/v1/tasks/{id}/retry", post(tasks::retry))
        .route(
            "/api/v1/tasks/{id}/logs",
            get(tasks::logs).post(leases::logs),
        )
        .route("/api/v1/events", get(live::events))
        .route("/api/v1/queues", get(live::queues))
        .route("/api/v1/queues/{queue}", patch(controls::patch))
        .route("/api/v1/queues/{queue}/pause", post(controls::pause))
        .route("/api/v1/queues/{queue}/resume", post(controls::resume))
        .route("/api/v1/audit", get(controls::audit))
        .route("/api/v1/workers", get(live::workers))
        .route("/api/v1/dlq/retry", post(tasks::dlq_retry))
        .route("/api/v1/dlq/purge", post(tasks::dlq_purge))
        .route(
            "/api/v1/schedules",
            post(schedules::create).get(schedules::list),
        )
        .route(
            "/api/v1/schedules/{name}",
            put(schedules::put)
                .get(schedules::get_one)
                .delete(schedules::delete),
        )
        .route("/api/v1/schedules/{name}/pause", post(schedules::pause))
        .route("/api/v1/schedules/{name}/resume", post(schedules::resume))
        .route("/api/v1/schedules/{name}/trigger", post(schedules::trigger))
        .route("/api/v1/schedules/{name}/next", get(schedules::next))
        .route("/api/v1/cron/next", get(schedules::preview))
        .route(
            "/api/v1/workflows",
            post(workflows::create).get(workflows::list),
        )
        .route("/api/v1/workflows/{id}", get(workflows::get_one))
        .route("/api/v1/workflows/{id}/cancel", post(workflows::cancel))
        .route("/api/v1/workflows/{id}/retry", post(workflows::retry))
        .route("/api/v1/kinds", get(leases::kinds))
        .route("/api/v1/leases", post(leases::lease))
        .route("/api/v1/tasks/{id}/heartbeat", post(leases::heartbeat))
        .route("/api/v1/tasks/{id}/complete", post(leases::complete))
        .route("/api/v1/tasks/{id}/fail", post(leases::fail))
        .route("/api/v1/openapi.json", get(openapi::document))
        .merge(probe_routes())
        // Innermost first: the rate limit reads the principal that auth leaves.
        .route_layer(from_fn_with_state(guard.clone(), guard::rate_limit))
        .route_layer(from_fn_with_state(guard.clone(), guard::authenticate));
    // The dashboard's pages sign in with a cookie of their own (ui::gate), not the API's
    // bearer check; the layers below (same-site rules, timeouts, CORS) hold for both.
    let routes = match guard.dashboard {
        Dashboard::On { readonly } => api.merge(ui::router(&state, guard.clone(), readonly)),
        Dashboard::Off => api,
    };
    routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(from_fn_with_state(guard.clone(), guard::timeout))
        .layer(from_fn_with_state(guard.clone(), guard::same_site))
        .layer(from_fn_with_state(state.clone(), record_request))
        .layer(from_fn_with_state(guard, guard::cors))
        .with_state(state)
}

/// Times every request by route template (not by path, which would explode the series).
async fn record_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = if crate::telemetry::on() {
        // A span per request for the trace exporter, the child of the caller's
        // `traceparent` when it sends one. Without traces, none is made.
        use tracing::Instrument as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let span = tracing::info_span!(
            "http.request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
        );
        let _ = span.set_parent(crate::telemetry::context_of(request.headers()));
        let response = next.run(request).instrument(span.clone()).await;
        span.record("http.response.status_code", response.status().as_u16());
        response
    } else {
        next.run(request).await
    };
    state.metrics.http(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Only the probes (a worker-only process), behind the same guard (`--private-probes`).
pub fn probe_router(state: AppState, guard: Arc<Guard>) -> Router {
    probe_routes()
        .route_layer(from_fn_with_state(guard.clone(), guard::authenticate))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(from_fn_with_state(guard.clone(), guard::timeout))
        .layer(from_fn_with_state(guard, guard::same_site))
        .with_state(state)
}

fn probe_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(probes::health))
        .route("/ready", get(probes::ready))
        .route("/metrics", get(probes::metrics))
}
