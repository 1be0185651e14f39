//! `/health` (the process is up) and `/ready` (its dependencies answer).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use taskplane_api::Health;

use super::AppState;

pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        checks: BTreeMap::new(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        role: state.role.to_owned(),
    })
}

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
