//! Extractors that turn malformed requests into the contract's JSON errors instead of
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;

/// A JSON body. Too large → 413 `payload_too_large`; not JSON or the wrong shape → 400.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is over this taskd's size limit (--max-body, 1MiB by default)",
                )
            } else {
                ApiError::bad_request("invalid_body", rejection.body_text())
            }
        })?;
        // Every body of this API is an object; serde would also read a struct from an array.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::bad_request(
                "invalid_json",
                if bytes.trim_ascii().is_empty() {
                    "the request body is empty; send a JSON object"
                } else {
                    "the request body must be a JSON object"
                },
            ));
        }
        // The path names the field at fault (`run_at`, `tasks[3].labels`), which serde's own
        // message, a line and column, does not.
        let mut reader = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut reader)
            .map(JsonBody)
            .map_err(|e| {
                named_error(
                    e,
                    "invalid_json",
                    "invalid JSON body:",
                    "invalid JSON body:",
                )
            })
    }
}

/// Query parameters; unknown or malformed ones → 400 `invalid_query`.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // serde_html_form, not axum's Query: a list parameter (`label`) is its key repeated.
        let query = parts.uri.query().unwrap_or_default().as_bytes();
        serde_path_to_error::deserialize(serde_html_form::Deserializer::from_bytes(query))
            .map(QueryParams)
            .map_err(|e| {
                named_error(
                    e,
                    "invalid_query",
                    "bad query string:",
                    "bad query parameter",
                )
            })
    }
}

/// A 400 whose message names the field at fault when there is one: `{named} {path}: …`,
/// else `{whole} …`.
fn named_error<E: std::fmt::Display>(
    error: serde_path_to_error::Error<E>,
    code: &'static str,
    whole: &str,
    named: &str,
) -> ApiError {
    let path = error.path().to_string();
    let message = if path == "." {
        format!("{whole} {}", error.inner())
    } else {
        format!("{named} {path}: {}", error.inner())
    };
    ApiError::bad_request(code, message)
}

/// A page's size when a list's `limit` is not given, and the most it may be.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// A keyset-paged list's `limit`, checked: 1 to 1000, 100 when not given.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit: must be 1 to {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// Cuts `rows`, read with one more than `limit` (which says whether there is a next
/// page), to `limit`, and answers the next page's cursor (`cursor` of the last row kept)
/// when there is one.
pub fn next_page<T>(
    rows: &mut Vec<T>,
    limit: u32,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    more.then(|| rows.last().map(cursor)).flatten()
}

/// The `{id}` path segment as a task id; anything but a UUID → 400 `invalid_id`.
pub struct TaskId(pub Uuid);

/// The `{id}` path segment as a workflow id; anything but a UUID → 400 `invalid_id`.
pub struct WorkflowId(pub Uuid);

/// The `{id}` path segment as the id of a `noun`.
async fn path_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    noun: &str,
) -> Result<Uuid, ApiError> {
    let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_id", e.body_text()))?;
    Uuid::parse_str(&raw).map_err(|_| {
        ApiError::bad_request("invalid_id", format!("'{raw}' is not a {noun} id (a UUID)"))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_id(parts, state, "task").await.map(TaskId)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WorkflowId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_id(parts, state, "workflow").await.map(WorkflowId)
    }
}
