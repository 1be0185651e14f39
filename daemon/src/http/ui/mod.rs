//! The web dashboard at `/ui/`: pages rendered on the server from the same handlers the API
//! answers with, a little JavaScript of our own (compiled in, served from `/ui/assets/`) that
//! keeps them current from `/api/v1/events` and the log stream, and actions that call the
//! JSON API, so the API's scopes and audit log hold for them unchanged.
//!
//! With auth on, the sign-in page takes a token once and keeps it in an `HttpOnly`,
//! `SameSite=Lax` session cookie (never in a URL, never readable by scripts); the API accepts
//! that cookie in place of the `Authorization` header, and refuses a write on it unless it
//! comes from this very origin (`guard::authenticate`), besides the same-site rules every
//! browser request meets. `--ui-readonly` hides every action;
//! `--no-ui` leaves these routes out.

mod assets;
mod chart;
mod history;
mod pages;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use super::guard::Guard;
use crate::auth::{Principal, Scope};
use crate::util::now_ms;
use history::History;

/// The cookie that holds the token a browser signed in with.
pub const COOKIE: &str = "taskplane_token";
/// Its name over HTTPS: a `__Host-` cookie is the origin's alone (no sibling name or other
/// scheme can set or shadow it).
pub const HTTPS_COOKIE: &str = "__Host-taskplane_token";

/// What every page is served with: scripts, styles and connections only from taskd itself,
/// no frames, no plugins, no other origin at all.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's settings and memory, shared by its handlers.
pub struct Ui {
    readonly: bool,
    guard: Arc<Guard>,
    history: History,
    /// The queue names the filters suggest, and when they were read (they cost a count of
    /// every task, so a list page reads them at most every ten seconds).
    queue_names: std::sync::Mutex<(i64, Vec<String>)>,
    /// The last read of queues and workers, and when it started: the pages that show them
    /// read one at a time, and share a read that started just before they asked.
    fleet: tokio::sync::Mutex<Option<(std::time::Instant, Arc<Fleet>)>>,
}

/// Queues and workers as `GET /api/v1/queues` and `/api/v1/workers` answer.
pub struct Fleet {
    pub queues: taskplane_api::QueueList,
    pub workers: taskplane_api::WorkerList,
}

/// How much earlier than a request a shared read may have started. Every open page refreshes
/// on the same event at about the same moment; one read serves them all (each whole-table
/// count costs tens of milliseconds over 100,000 tasks). A change after the read sends an
/// event of its own, which refreshes the pages again.
const SHARE_WITHIN: Duration = Duration::from_millis(100);

impl Ui {
    /// Queues and workers, read once for every page that asks within [`SHARE_WITHIN`].
    async fn fleet(&self, state: &AppState) -> Result<Arc<Fleet>, ApiError> {
        let asked = std::time::Instant::now();
        let mut last = self.fleet.lock().await;
        if let Some((started, fleet)) = last.as_ref()
            && *started + SHARE_WITHIN >= asked
        {
            return Ok(fleet.clone());
        }
        let started = std::time::Instant::now();
        let axum::Json(queues) = super::live::queues(State(state.clone())).await?;
        let axum::Json(workers) = super::live::workers(State(state.clone())).await?;
        // Every fresh read is a sample of the queues' depths for the sparklines.
        self.history.record(
            now_ms(),
            queues.queues.iter().map(|q| (q.queue.clone(), q.depth)),
        );
        let fleet = Arc::new(Fleet { queues, workers });
        *last = Some((started, fleet.clone()));
        Ok(fleet)
    }

    /// Every queue with tasks, for the filters' suggestions (at most ten seconds old).
    async fn queue_names(&self, state: &AppState) -> Vec<String> {
        let now = now_ms();
        if let Ok(cached) = self.queue_names.lock()
            && now - cached.0 < 10_000
        {
            return cached.1.clone();
        }
        let names: Vec<String> = match state.store.queue_counts(None).await {
            Ok(counts) => counts
                .into_iter()
                .map(|c| c.queue)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(mut cached) = self.queue_names.lock() {
            *cached = (now, names.clone());
        }
        names
    }
}

/// Who is looking at a page, and what the page may offer them.
#[derive(Clone)]
pub struct Viewer {
    /// The signed-in token's principal (auth on).
    pub principal: Option<Principal>,
    pub readonly: bool,
    auth: bool,
}

impl Viewer {
    /// Whether the viewer's token has `scope` (everything when auth is off).
    pub fn allows(&self, scope: Scope) -> bool {
        match &self.principal {
            Some(principal) => principal.allows(scope),
            None => !self.auth,
        }
    }

    /// Whether an action that needs `scope` is shown: allowed, and the dashboard is not
    /// read-only.
    pub fn can(&self, scope: Scope) -> bool {
        !self.readonly && self.allows(scope)
    }

    pub fn scopes_text(&self) -> String {
        self.principal
            .as_ref()
            .map(|p| {
                p.scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }
}

/// The dashboard's routes (`/ui`, `/ui/…`), each behind [`gate`].
pub fn router(state: &AppState, guard: Arc<Guard>, readonly: bool) -> Router<AppState> {
    let ui = Arc::new(Ui {
        readonly,
        guard,
        history: History::default(),
        queue_names: std::sync::Mutex::new((i64::MIN / 2, Vec::new())),
        fleet: tokio::sync::Mutex::new(None),
    });
    tokio::spawn(sample_depths(Arc::downgrade(&ui), state.clone()));
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/tasks", get(pages::tasks))
        .route("/ui/tasks/{id}", get(pages::task))
        .route("/ui/dlq", get(pages::dlq))
        .route("/ui/queues", get(pages::queues))
        .route("/ui/schedules", get(pages::schedules))
        .route("/ui/workflows", get(pages::workflows))
        .route("/ui/workflows/{id}", get(pages::workflow))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/login", get(pages::login).post(sign_in))
        .route("/ui/logout", post(sign_out))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/{*rest}", get(pages::not_found))
        .route_layer(from_fn_with_state(ui.clone(), gate))
        .layer(Extension(ui))
}

/// The token in a request's session cookie (either name). Two of them (one planted by a
/// sibling site, say) count as none.
pub fn token_cookie(headers: &HeaderMap) -> Option<&str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            ((name == COOKIE || name == HTTPS_COOKIE) && !value.is_empty()).then_some(value)
        });
    let token = found.next()?;
    found.next().is_none().then_some(token)
}

/// Reads the signed-in viewer from the cookie, sends a browser without one to the sign-in
/// page (auth on), and puts the security headers on every answer.
async fn gate(State(ui): State<Arc<Ui>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let open = path.starts_with("/ui/assets/") || path == "/ui/login";
    let principal = match (&ui.guard.auth, token_cookie(request.headers())) {
        (Some(verifier), Some(token)) => verifier.verify(token).ok(),
        _ => None,
    };
    let auth = ui.guard.auth.is_some();
    let viewer = Viewer {
        principal,
        readonly: ui.readonly,
        auth,
    };
    let mut response = if auth && viewer.principal.is_none() && !open {
        if request.method() == Method::GET || request.method() == Method::HEAD {
            let wanted = request
                .uri()
                .path_and_query()
                .map_or("/ui/", |p| p.as_str());
            let next_page = serde_html_form::to_string([("next", wanted)]).unwrap_or_default();
            Redirect::to(&format!("/ui/login?{next_page}")).into_response()
        } else {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign in at /ui/login first",
            )
            .into_response()
        }
    } else if !open && !viewer.allows(Scope::Read) {
        view::problem(
            &viewer,
            StatusCode::FORBIDDEN,
            "Not allowed",
            "This token cannot read tasks (it lacks the tasks.read scope). Sign out and use another.",
        )
    } else {
        ui.history.viewed(now_ms());
        request.extensions_mut().insert(viewer);
        next.run(request).await
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /ui/login` `{"token": …}`: checks the token and keeps it in the session cookie.
async fn sign_in(
    Extension(ui): Extension<Arc<Ui>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SignIn>,
) -> Response {
    let Some(verifier) = &ui.guard.auth else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "auth_off",
            "this taskd runs without auth: there is nothing to sign in to",
        )
        .into_response();
    };
    let token = body.token.trim();
    let principal = match verifier.verify(token) {
        Ok(principal) => principal,
        Err(error) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string())
                .into_response();
        }
    };
    if !principal.allows(Scope::Read) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token lacks the tasks.read scope the dashboard needs",
        )
        .into_response();
    }
    // A token is made of base64url parts and dots; anything else cannot be a cookie value.
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
    {
        return ApiError::bad_request("invalid_token", "the token has characters a JWT cannot")
            .into_response();
    }
    session_cookie(&headers, token)
}

/// `POST /ui/logout`: forgets the session cookie.
async fn sign_out(headers: HeaderMap) -> Response {
    session_cookie(&headers, "")
}

/// A 204 that sets the session cookie to `token` (no `Max-Age`: it ends with the browser
/// session), or clears it when `token` is empty. Over HTTPS (a proxy that says so, or an
/// HTTPS origin) it is the `Secure` `__Host-` cookie. `SameSite=Lax`, so a link to a page
/// from chat or mail opens signed in; writes need more than the cookie (see
/// `guard::authenticate`).
fn session_cookie(headers: &HeaderMap, token: &str) -> Response {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
        || headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("https://"));
    let mut response = StatusCode::NO_CONTENT.into_response();
    let set = |name: &str, secure: bool, value: &str| {
        let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if value.is_empty() {
            cookie.push_str("; Max-Age=0");
        }
        if secure {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).ok()
    };
    let cookies = if token.is_empty() {
        // Signing out forgets both names.
        vec![set(COOKIE, https, ""), set(HTTPS_COOKIE, true, "")]
    } else if https {
        vec![set(HTTPS_COOKIE, true, token)]
    } else {
        vec![set(COOKIE, false, token)]
    };
    for cookie in cookies.into_iter().flatten() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Samples queue depths for the sparklines while pages are being looked at; ends with the
/// dashboard.
async fn sample_depths(ui: std::sync::Weak<Ui>, state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        u64::try_from(history::SAMPLE_EVERY_MS).unwrap_or(15_000),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(ui) = ui.upgrade() else {
            return;
        };
        let now = now_ms();
        if !ui
            .history
            .looked_at_since(now - history::LOOKED_AT_WITHIN_MS)
        {
            continue;
        }
        // A read records its depths (and pages within 100 ms share it).
        let _ = ui.fleet(&state).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::COOKIE, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_token_is_read_from_one_session_cookie_only() {
        let plain = cookies(&["other=1; taskplane_token=abc.def.ghi"]);
        assert_eq!(token_cookie(&plain), Some("abc.def.ghi"));
        let https = cookies(&["__Host-taskplane_token=t"]);
        assert_eq!(token_cookie(&https), Some("t"));
        let other = cookies(&["xtaskplane_token=a", "taskplane_token="]);
        assert_eq!(token_cookie(&other), None);
        let two = cookies(&["taskplane_token=a; taskplane_token=b"]);
        assert_eq!(token_cookie(&two), None, "a shadowing cookie voids both");
    }

    fn set_cookies(response: &Response) -> Vec<String> {
        response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    }

    #[test]
    fn the_session_cookie_is_http_only_lax_and_ends_with_the_session() {
        let plain = session_cookie(&HeaderMap::new(), "a.b.c");
        assert_eq!(
            set_cookies(&plain),
            ["taskplane_token=a.b.c; Path=/; HttpOnly; SameSite=Lax"]
        );
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(
            set_cookies(&session_cookie(&https, "a.b.c")),
            ["__Host-taskplane_token=a.b.c; Path=/; HttpOnly; SameSite=Lax; Secure"]
        );
        let cleared = set_cookies(&session_cookie(&https, ""));
        assert_eq!(cleared.len(), 2, "both names forgotten");
        assert!(
            cleared
                .iter()
                .all(|c| c.contains("Max-Age=0") && c.ends_with("; Secure")),
            "{cleared:?}"
        );
    }
}
