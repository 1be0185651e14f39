//! The HTTP router in process: `api_router` over a temporary SQLite store, driven request by
//! request (no socket, no taskd process), for what the guard and the error mapping decide.
//! Signals, kill -9 and real connections stay with the process tests in `cli/tests`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use taskd::auth::{AuthConfig, Scope, TokenRequest, Verifier};
use taskd::broker::Broker;
use taskd::domain::validate::Kinds;
use taskd::events::EventHub;
use taskd::http::guard::{Guard, HostPolicy};
use taskd::http::{AppState, Dashboard, api_router};
use taskd::metrics::Metrics;
use taskd::scheduler::Scheduler;
use taskd::store::{self, GroupCommit};
use tower_service::Service;

const SECRET: &str = "an in-process test secret of 32+ bytes";

struct Api {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl Api {
    /// The API on a fresh SQLite file, with auth on (HS256) when `auth`.
    async fn start(auth: bool) -> Api {
        Api::start_with(auth, Dashboard::On { readonly: false }).await
    }

    async fn start_with(auth: bool, dashboard: Dashboard) -> Api {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("taskd.db").display());
        let store = store::open(&url).await.expect("open");
        store.migrate().await.expect("migrate");
        let listen: SocketAddr = "127.0.0.1:7070".parse().expect("address");
        let verifier = auth.then(|| {
            Verifier::from_config(&config())
                .expect("auth config")
                .expect("auth on")
        });
        let guard = Arc::new(Guard {
            auth: verifier,
            private_probes: false,
            limiter: None,
            timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
            hosts: HostPolicy::new(&listen, auth, &[]),
            dashboard,
        });
        let kinds = Arc::new(Kinds::new(false, false, Vec::new()));
        let events = EventHub::new(store.clone());
        let metrics = Arc::new(Metrics::default());
        let broker = Arc::new(Broker::db());
        let scheduler = Scheduler::new(
            store.clone(),
            broker.clone(),
            metrics.clone(),
            events.clone(),
            kinds.clone(),
        );
        let state = AppState {
            events,
            metrics,
            submits: GroupCommit::start(store.clone()),
            store,
            kinds,
            broker,
            role: "all",
            scheduler,
            leases: std::sync::Arc::new(taskd::http::LeaseSettings {
                lease: std::time::Duration::from_secs(30),
                backoff: taskd::domain::backoff::Backoff {
                    base: std::time::Duration::from_secs(1),
                    max: std::time::Duration::from_secs(60),
                },
            }),
        };
        Api {
            router: api_router(state, guard, 1024 * 1024),
            _dir: dir,
        }
    }

    /// Sends one request (from 127.0.0.1, `Host: 127.0.0.1:7070` unless `headers` says
    /// otherwise) and answers its status and JSON body (Null when it has none).
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let (status, _, text) = self.fetch(method, path, body, headers).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Like [`Api::send`], answering the headers and the body as text.
    async fn fetch(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(path);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            request = request.header(header::HOST, "127.0.0.1:7070");
        }
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Body::from(body.to_owned())).expect("request");
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self.router.call(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
            .await
            .expect("body");
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }
}

fn config() -> AuthConfig {
    AuthConfig {
        jwt_secret: Some(SECRET.into()),
        ..AuthConfig::default()
    }
}

fn token(scopes: &[Scope]) -> String {
    let request = TokenRequest {
        scopes: scopes.to_vec(),
        ttl: Duration::from_secs(600),
        subject: "router-test".into(),
    };
    format!(
        "Bearer {}",
        taskd::auth::issue(&config(), &request).expect("token")
    )
}

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

#[tokio::test]
async fn bad_input_maps_to_the_contract_errors_and_stores_nothing() {
    let mut api = Api::start(false).await;
    for (method, path, body, status, expected) in [
        ("POST", "/api/v1/tasks", "{\"kind\": ", 400, "invalid_json"),
        ("POST", "/api/v1/tasks", "[1,2]", 400, "invalid_json"),
        (
            "POST",
            "/api/v1/tasks",
            r#"{"kind":"teleport"}"#,
            400,
            "unknown_kind",
        ),
        (
            "POST",
            "/api/v1/tasks",
            r#"{"kind":"shell","payload":{"command":"id"}}"#,
            400,
            "kind_disabled",
        ),
        ("GET", "/api/v1/tasks/not-an-id", "", 400, "invalid_id"),
        ("GET", "/api/v1/tasks?limit=many", "", 400, "invalid_query"),
        (
            "GET",
            "/api/v1/tasks/01a20649-73ff-71a9-a177-5aa009d23a9d",
            "",
            404,
            "not_found",
        ),
        ("DELETE", "/api/v1/tasks", "", 405, "method_not_allowed"),
    ] {
        let (got, answer) = api.send(method, path, body, &[]).await;
        assert_eq!(got.as_u16(), status, "{method} {path} {body}: {answer}");
        assert_eq!(code(&answer), expected, "{method} {path} {body}");
    }
    let (status, list) = api.send("GET", "/api/v1/tasks", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["tasks"].as_array().map(Vec::len), Some(0), "{list}");

    // And good input is stored: 201, then found.
    let (status, task) = api
        .send("POST", "/api/v1/tasks", r#"{"kind":"noop"}"#, &[])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_str().expect("id").to_owned();
    let (status, found) = api
        .send("GET", &format!("/api/v1/tasks/{id}"), "", &[])
        .await;
    assert_eq!(
        (status, found["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
}

#[tokio::test]
async fn the_guard_checks_hosts_origins_tokens_and_scopes() {
    let mut open = Api::start(false).await;
    // DNS rebinding: a name this taskd was not told about.
    let (status, answer) = open
        .send("GET", "/api/v1/tasks", "", &[("host", "evil.example:7070")])
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::FORBIDDEN, "host_not_allowed")
    );
    // A cross-site page may read nothing back and write nothing.
    let (status, answer) = open
        .send(
            "POST",
            "/api/v1/tasks",
            r#"{"kind":"noop"}"#,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::FORBIDDEN, "cross_origin")
    );
    // A form post is not JSON.
    let (status, answer) = open
        .send(
            "POST",
            "/api/v1/tasks",
            "",
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");

    let mut guarded = Api::start(true).await;
    let (status, answer) = guarded.send("GET", "/api/v1/tasks", "", &[]).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, answer) = guarded
        .send(
            "GET",
            "/api/v1/tasks",
            "",
            &[("authorization", "Bearer not.a.token")],
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let read = token(&[Scope::Read]);
    let (status, _) = guarded
        .send("GET", "/api/v1/tasks", "", &[("authorization", &read)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = guarded
        .send(
            "POST",
            "/api/v1/tasks",
            r#"{"kind":"noop"}"#,
            &[("authorization", &read)],
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let write = token(&[Scope::Write]);
    let (status, answer) = guarded
        .send(
            "POST",
            "/api/v1/tasks",
            r#"{"kind":"noop"}"#,
            &[("authorization", &write)],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    // The probes answer without a token.
    let (status, _) = guarded.send("GET", "/health", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn schedules_take_the_scopes_of_what_they_do() {
    let mut api = Api::start(true).await;
    let read = token(&[Scope::Read]);
    let write = token(&[Scope::Write]);
    let admin = token(&[Scope::Admin]);
    let echo = r#"{"name":"hourly","cron":"@hourly","task":{"kind":"echo"}}"#;
    let shell =
        r#"{"name":"backup","cron":"@daily","task":{"kind":"shell","payload":{"argv":["true"]}}}"#;
    let as_token = |t: &str| vec![("authorization", t.to_owned())];
    let send = async |api: &mut Api, method: &str, path: &str, body: &str, token: &str| {
        let headers = as_token(token);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        api.send(method, path, body, &headers).await
    };
    // Reading takes tasks.read, changing tasks.write.
    let (status, _) = send(&mut api, "POST", "/api/v1/schedules", echo, &read).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, created) = send(&mut api, "POST", "/api/v1/schedules", echo, &write).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, list) = send(&mut api, "GET", "/api/v1/schedules", "", &read).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["schedules"][0]["name"], "hourly");
    let (status, _) = send(
        &mut api,
        "POST",
        "/api/v1/schedules/hourly/pause",
        "",
        &read,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A schedule of an admin-only kind takes admin, to make, change, run or delete.
    let (status, refused) = send(&mut api, "POST", "/api/v1/schedules", shell, &write).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("admin")),
        "{refused}"
    );
    // (shell is disabled on this taskd, so with admin it is refused as a kind: 400.)
    let (status, disabled) = send(&mut api, "POST", "/api/v1/schedules", shell, &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{disabled}");
    assert_eq!(code(&disabled), "kind_disabled");
    // Turning an echo schedule into a shell one is refused without admin, and so is
    // PUT with a body naming another schedule.
    let unnamed_shell = r#"{"cron":"@daily","task":{"kind":"shell","payload":{"argv":["true"]}}}"#;
    let (status, _) = send(
        &mut api,
        "PUT",
        "/api/v1/schedules/hourly",
        unnamed_shell,
        &write,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, renamed) = send(&mut api, "PUT", "/api/v1/schedules/other", echo, &write).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{renamed}");
    // Unknown schedules and bad names.
    let (status, missing) = send(&mut api, "GET", "/api/v1/schedules/nope", "", &read).await;
    assert_eq!(
        (status, code(&missing)),
        (StatusCode::NOT_FOUND, "schedule_not_found")
    );
    let (status, bad) = send(&mut api, "GET", "/api/v1/schedules/a%20b", "", &read).await;
    assert_eq!(
        (status, code(&bad)),
        (StatusCode::BAD_REQUEST, "invalid_name")
    );
    let (status, taken) = send(&mut api, "POST", "/api/v1/schedules", echo, &write).await;
    assert_eq!(
        (status, code(&taken)),
        (StatusCode::CONFLICT, "schedule_exists")
    );
    // The same spec again writes nothing; a changed one does, and keeps the fire times
    // when the timing is the same.
    let (status, same) = send(&mut api, "PUT", "/api/v1/schedules/hourly", echo, &write).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["updated_at"], created["updated_at"]);
    let relabelled = r#"{"cron":"@hourly","task":{"kind":"echo","labels":{"team":"ops"}}}"#;
    let (status, changed) = send(
        &mut api,
        "PUT",
        "/api/v1/schedules/hourly",
        relabelled,
        &write,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["task"]["labels"]["team"], "ops");
    assert_eq!(changed["next_run_at"], created["next_run_at"]);
    let (status, deleted) = send(&mut api, "DELETE", "/api/v1/schedules/hourly", "", &write).await;
    assert_eq!(
        (status, deleted["name"].as_str()),
        (StatusCode::OK, Some("hourly"))
    );
    let (status, _) = send(&mut api, "DELETE", "/api/v1/schedules/hourly", "", &write).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_dashboard_signs_in_with_a_session_cookie_that_the_api_takes_under_the_same_rules() {
    let mut api = Api::start(true).await;
    // Pages send a browser without a session to sign in, and carry the strict headers.
    let (status, headers, _) = api.fetch("GET", "/ui/tasks?queue=a", "", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/ui/login?next=%2Fui%2Ftasks%3Fqueue%3Da"
    );
    let csp = headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    let (status, headers, script) = api.fetch("GET", "/ui/assets/app.js", "", &[]).await;
    assert_eq!(status, StatusCode::OK, "assets need no session");
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/javascript")
    );
    assert!(script.contains("EventSource"));
    // The sign-in page sends nobody elsewhere afterwards.
    let (_, _, page) = api
        .fetch("GET", "/ui/login?next=//evil.example/x", "", &[])
        .await;
    assert!(page.contains("data-next=\"/ui/\""), "{page}");

    let bare = |t: String| t.trim_start_matches("Bearer ").to_owned();
    let (status, body) = api
        .send("POST", "/ui/login", r#"{"token": "x.y.z"}"#, &[])
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let worker = format!(r#"{{"token": "{}"}}"#, bare(token(&[Scope::Worker])));
    let (status, _) = api.send("POST", "/ui/login", &worker, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a worker token cannot read");
    let reader = bare(token(&[Scope::Read]));
    let (status, headers, _) = api
        .fetch(
            "POST",
            "/ui/login",
            &format!(r#"{{"token": "{reader}"}}"#),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers[header::SET_COOKIE],
        format!("taskplane_token={reader}; Path=/; HttpOnly; SameSite=Lax").as_str()
    );
    let read_cookie = format!("taskplane_token={reader}");
    let (status, _, page) = api
        .fetch("GET", "/ui/", "", &[("cookie", &read_cookie)])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<h1>Overview</h1>") && page.contains("router-test"));
    assert!(
        !page.contains("data-confirm"),
        "no actions for a read-only token"
    );
    // The API takes the cookie as the token, with the token's scopes.
    let (status, _) = api
        .send("GET", "/api/v1/tasks", "", &[("cookie", &read_cookie)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let submit = r#"{"kind": "noop"}"#;
    let (status, body) = api
        .send("POST", "/api/v1/tasks", submit, &[("cookie", &read_cookie)])
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    // A writer's cookie writes from taskd's own pages only, and only JSON.
    let writer = format!(
        "taskplane_token={}",
        bare(token(&[Scope::Read, Scope::Write]))
    );
    let own = [
        ("cookie", writer.as_str()),
        ("origin", "http://127.0.0.1:7070"),
    ];
    let (status, _) = api.send("POST", "/api/v1/tasks", submit, &own).await;
    assert_eq!(status, StatusCode::CREATED);
    // Without an Origin (not a page of this taskd), the cookie writes nothing.
    let (status, body) = api
        .send("POST", "/api/v1/tasks", submit, &[("cookie", &writer)])
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "cross_origin")
    );
    let cross = [
        ("cookie", writer.as_str()),
        ("origin", "https://evil.example"),
    ];
    let (status, body) = api.send("POST", "/api/v1/tasks", submit, &cross).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "cross_origin")
    );
    let form = [
        ("cookie", writer.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (status, _) = api
        .send("POST", "/api/v1/tasks/x/cancel", "a=b", &form)
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, headers, _) = api
        .fetch("POST", "/ui/logout", "", &[("cookie", &read_cookie)])
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );

    // A read-only dashboard's sessions read only; without the dashboard the cookie is no
    // token at all. A token in the header is unaffected by either.
    let mut readonly = Api::start_with(true, Dashboard::On { readonly: true }).await;
    let (status, _) = readonly.send("POST", "/api/v1/tasks", submit, &own).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = readonly
        .send("GET", "/api/v1/tasks", "", &[("cookie", &writer)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let header_token = token(&[Scope::Read, Scope::Write]);
    let (status, _) = readonly
        .send(
            "POST",
            "/api/v1/tasks",
            submit,
            &[("authorization", &header_token)],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut off = Api::start_with(true, Dashboard::Off).await;
    let (status, body) = off
        .send("GET", "/api/v1/tasks", "", &[("cookie", &writer)])
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
}

#[tokio::test]
async fn without_auth_the_dashboard_is_open_and_no_ui_turns_it_off() {
    let mut api = Api::start(false).await;
    let (status, headers, page) = api.fetch("GET", "/ui/", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(page.contains("<h1>Overview</h1>"));
    let (status, body) = api
        .send("POST", "/ui/login", r#"{"token": "a"}"#, &[])
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "auth_off"));
    let (status, headers, _) = api.fetch("GET", "/ui", "", &[]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[header::LOCATION], "/ui/");
    let (status, _, page) = api.fetch("GET", "/ui/tasks/nope", "", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("is not a task id"));
    let (status, _, page) = api.fetch("GET", "/ui/tasks?status=bogus", "", &[]).await;
    assert_eq!(status, StatusCode::OK, "a bad filter is shown on the page");
    assert!(
        page.contains("unknown status") && page.contains("bogus"),
        "{page}"
    );

    let mut off = Api::start_with(false, Dashboard::Off).await;
    let (status, body) = off.send("GET", "/ui/", "", &[]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "route_not_found")
    );
    let (status, _) = off.send("GET", "/api/v1/tasks", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
}
