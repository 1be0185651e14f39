//! The OpenAPI document is generated from the handlers' annotations and the `api` types; the
//! committed copy (`api/openapi.json`, what clients and reviewers read) must match it.
//! `UPDATE_OPENAPI=1 cargo test -p taskd --test openapi` rewrites the copy.

use std::path::PathBuf;

#[test]
fn the_committed_openapi_document_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("api/openapi.json");
    let generated = format!("{}\n", taskd::http::openapi::json());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write api/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "api/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p taskd --test openapi"
    );
    // And it is a document a client can use: every route of the API is in it.
    let doc: serde_json::Value = serde_json::from_str(&generated).expect("JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for route in [
        "/api/v1/tasks",
        "/api/v1/tasks/batch",
        "/api/v1/tasks/{id}",
        "/api/v1/tasks/{id}/cancel",
        "/api/v1/tasks/{id}/retry",
        "/api/v1/tasks/{id}/logs",
        "/api/v1/events",
        "/api/v1/queues",
        "/api/v1/workers",
        "/api/v1/dlq/retry",
        "/api/v1/dlq/purge",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(doc["paths"][route].is_object(), "{route} is missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The documented ranges are the ones validation enforces.
    let submit = &doc["components"]["schemas"]["SubmitTask"]["properties"];
    use taskd::domain::validate::{MAX_ATTEMPTS_LIMIT, MAX_TIMEOUT_SECS, PRIORITY_RANGE};
    assert_eq!(submit["max_attempts"]["maximum"], MAX_ATTEMPTS_LIMIT);
    assert_eq!(submit["timeout_secs"]["maximum"], MAX_TIMEOUT_SECS);
    assert_eq!(submit["priority"]["minimum"], *PRIORITY_RANGE.start());
    assert_eq!(submit["priority"]["maximum"], *PRIORITY_RANGE.end());
}
