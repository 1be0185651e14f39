//! `/health` (the process is up) and `/ready` (its dependencies answer).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use taskplane_api::{ErrorBody, Health};

use super::AppState;

#[utoipa::path(get, path = "/health", tag = "probes",
    responses((status = 200, description = "the process is up", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        checks: BTreeMap::new(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        role: state.role.to_owned(),
    })
}

#[utoipa::path(get, path = "/ready", tag = "probes",
    responses(
        (status = 200, description = "the store (and broker) answer", body = Health),
        (status = 503, description = "not ready", body = Health),
        (status = 401, description = "no or bad token (with --private-probes)", body = ErrorBody)
    ))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let store = match state.store.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.to_string(),
    };
    let broker = match state.broker.check() {
        Ok(()) => "ok".to_owned(),
        Err(reason) => reason,
    };
    let ok = store == "ok" && broker == "ok";
    let health = Health {
        status: if ok { "ok" } else { "unavailable" }.to_owned(),
        checks: BTreeMap::from([("store".to_owned(), store), ("broker".to_owned(), broker)]),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        role: state.role.to_owned(),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// `GET /metrics`: Prometheus text: this process's counters and histograms, the depth of every
/// queue by status (from the store), and the build.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "no or bad token (with --private-probes)", body = ErrorBody)
    ))]
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    use std::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(text, "# HELP taskplane_build_info The running taskd.");
    let _ = writeln!(text, "# TYPE taskplane_build_info gauge");
    let _ = writeln!(
        text,
        "taskplane_build_info{{version=\"{}\",role=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        state.role
    );
    state.metrics.render(&mut text);
    let _ = writeln!(
        text,
        "# HELP taskplane_queue_depth Tasks per queue and status."
    );
    let _ = writeln!(text, "# TYPE taskplane_queue_depth gauge");
    let now = crate::util::now_ms();
    match state.store.queue_counts(None).await {
        Ok(counts) => {
            // How long the oldest ready task of each queue has waited (0 with none ready).
            let oldest: Vec<(String, f64)> = counts
                .iter()
                .filter(|c| c.status == taskplane_api::TaskStatus::Queued)
                .map(|c| (c.queue.clone(), c.oldest_secs(now).unwrap_or(0.0)))
                .collect();
            let counts = counts
                .into_iter()
                .map(|c| (c.queue, c.status.to_string(), c.count))
                .collect();
            let depths = crate::metrics::fold_depths(counts);
            for (queue, status, n) in &depths {
                let _ = writeln!(
                    text,
                    "taskplane_queue_depth{{queue=\"{queue}\",status=\"{status}\"}} {n}"
                );
            }
            // The same queues as the depths, every one present; a queue folded into `other`
            // counts towards other's oldest.
            let shown: std::collections::BTreeSet<&String> =
                depths.iter().map(|(queue, _, _)| queue).collect();
            let mut waited: BTreeMap<&str, f64> =
                shown.iter().map(|queue| (queue.as_str(), 0.0)).collect();
            for (queue, seconds) in &oldest {
                let key = if shown.contains(queue) {
                    queue.as_str()
                } else {
                    crate::metrics::OTHER
                };
                if let Some(slot) = waited.get_mut(key) {
                    *slot = slot.max(*seconds);
                }
            }
            let _ = writeln!(
                text,
                "# HELP taskplane_queue_oldest_ready_seconds How long the oldest ready task of each queue has waited (0 when none is ready)."
            );
            let _ = writeln!(text, "# TYPE taskplane_queue_oldest_ready_seconds gauge");
            for (queue, seconds) in waited {
                let _ = writeln!(
                    text,
                    "taskplane_queue_oldest_ready_seconds{{queue=\"{queue}\"}} {seconds}"
                );
            }
        }
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("# store unavailable: {error}\n"),
            )
                .into_response();
        }
    }
    if let Ok(workers) = super::leases::live_workers(&state).await {
        let _ = writeln!(
            text,
            "# HELP taskplane_workers_live Workers with a recent heartbeat: taskd's own (local) and those leasing over the API (remote)."
        );
        let _ = writeln!(text, "# TYPE taskplane_workers_live gauge");
        let remote = workers.iter().filter(|w| w.remote).count();
        let local = workers.len() - remote;
        let _ = writeln!(text, "taskplane_workers_live{{kind=\"local\"}} {local}");
        let _ = writeln!(text, "taskplane_workers_live{{kind=\"remote\"}} {remote}");
    }
    let _ = writeln!(
        text,
        "# HELP taskplane_schedule_lag_seconds How far behind its fire time each schedule that is not paused is (0 when none of its times has passed unfired)."
    );
    let _ = writeln!(text, "# TYPE taskplane_schedule_lag_seconds gauge");
    if let Ok(rows) = state
        .store
        .schedules(None, crate::metrics::MAX_NAMED as u32)
        .await
    {
        for row in rows.iter().filter(|row| !row.paused) {
            let lag = row.next_run_at.map_or(0, |next| (now - next).max(0));
            let _ = writeln!(
                text,
                "taskplane_schedule_lag_seconds{{schedule=\"{}\"}} {}",
                crate::metrics::escape(&row.name),
                lag as f64 / 1000.0
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}
