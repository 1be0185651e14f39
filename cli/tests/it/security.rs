//! Security end to end: JWT auth on every route (bad tokens of every sort answer 401/403
//! with a JSON error), `taskd token issue`, EdDSA keys and algorithm pinning, the refusal to
//! listen openly without auth, the write rate limit, the body limit, CORS, and taskctl
//! against an auth-enabled daemon.

use crate::common;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Backend, Daemon, Platform, raw_http_full, taskctl_env};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789abcdef0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A token signed with `SECRET`, with these claims over sensible defaults (null removes one).
fn token(claims: Value) -> String {
    let mut all = json!({"sub": "test", "scope": "tasks.read", "exp": now() + 600,
        "iss": "taskplane", "aud": "prod"});
    if let (Some(all), Some(extra)) = (all.as_object_mut(), claims.as_object()) {
        // A null drops the claim.
        for (k, v) in extra {
            if v.is_null() {
                all.remove(k);
            } else {
                all.insert(k.clone(), v.clone());
            }
        }
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &all,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token (`alg: none`) with admin claims: must never pass.
fn alg_none() -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64url(
        json!({"sub": "x", "scope": "admin", "exp": now() + 600, "iss": "taskplane", "aud": "prod"})
            .to_string()
            .as_bytes(),
    );
    format!("{header}.{claims}.")
}

/// A valid admin token with one character of its signature changed.
fn tampered() -> String {
    let good = token(json!({"scope": "admin"}));
    let (head, sig) = good.rsplit_once('.').expect("three parts");
    let mut sig: Vec<char> = sig.chars().collect();
    sig[5] = if sig[5] == 'A' { 'B' } else { 'A' };
    format!("{head}.{}", sig.into_iter().collect::<String>())
}

fn start_with_auth(dir: &Path, extra: &[&str]) -> Daemon {
    let secret = dir.join("jwt.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("write secret");
    let secret = secret.display().to_string();
    let mut args = vec![
        "--jwt-secret-file",
        &secret,
        "--jwt-issuer",
        "taskplane",
        "--jwt-audience",
        "prod",
    ];
    args.extend_from_slice(extra);
    Daemon::start(dir, &args)
}

/// `POST /api/v1/dlq/purge` of everything failed, answering the status.
fn purge(daemon: &Daemon, token: &str) -> u16 {
    call(
        daemon,
        "POST",
        "/api/v1/dlq/purge",
        r#"{"older_than_secs":0}"#,
        Some(token),
    )
    .0
}

fn call(
    daemon: &Daemon,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    raw_http_full(&daemon.addr, method, path, body.as_bytes(), &headers)
}

#[test]
fn every_route_refuses_missing_expired_premature_foreign_unsigned_and_tampered_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start_with_auth(dir.path(), &["--enable-shell", "--kinds", "resize"]);
    let admin = token(json!({"scope": "admin"}));
    let (status, _, task) = call(
        &daemon,
        "POST",
        "/api/v1/tasks",
        r#"{"kind":"noop"}"#,
        Some(&admin),
    );
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().expect("id").to_owned();

    // Every /api/v1 route, the scope it needs, and a token with every scope but that one.
    let reader = token(json!({"scope": "tasks.read"}));
    let writer = token(json!({"scope": "tasks.write"}));
    let routes: Vec<(&str, String, &str, &String)> = vec![
        ("GET", "/api/v1/tasks".into(), "", &writer),
        ("GET", format!("/api/v1/tasks/{id}"), "", &writer),
        ("GET", format!("/api/v1/tasks/{id}/logs"), "", &writer),
        ("GET", "/api/v1/events".into(), "", &writer),
        ("GET", "/api/v1/queues".into(), "", &writer),
        ("GET", "/api/v1/workers".into(), "", &writer),
        (
            "POST",
            "/api/v1/tasks".into(),
            r#"{"kind":"noop"}"#,
            &reader,
        ),
        (
            "POST",
            "/api/v1/tasks/batch".into(),
            r#"{"tasks":[{"kind":"noop"}]}"#,
            &reader,
        ),
        ("POST", format!("/api/v1/tasks/{id}/cancel"), "", &reader),
        ("POST", format!("/api/v1/tasks/{id}/retry"), "", &reader),
        ("POST", "/api/v1/dlq/retry".into(), "{}", &reader),
        (
            "POST",
            "/api/v1/dlq/purge".into(),
            r#"{"older_than_secs":0}"#,
            &writer,
        ),
        ("GET", "/api/v1/kinds".into(), "", &writer),
        ("POST", "/api/v1/queues/q1/pause".into(), "", &writer),
        ("POST", "/api/v1/queues/q1/resume".into(), "", &writer),
        (
            "PATCH",
            "/api/v1/queues/q1".into(),
            r#"{"max_running":2}"#,
            &writer,
        ),
        ("GET", "/api/v1/audit".into(), "", &writer),
        (
            "POST",
            "/api/v1/leases".into(),
            r#"{"worker":"w","kinds":["resize"]}"#,
            &writer,
        ),
        (
            "POST",
            format!("/api/v1/tasks/{id}/heartbeat"),
            r#"{"lease":"1.w"}"#,
            &writer,
        ),
        (
            "POST",
            format!("/api/v1/tasks/{id}/complete"),
            r#"{"lease":"1.w"}"#,
            &writer,
        ),
        (
            "POST",
            format!("/api/v1/tasks/{id}/fail"),
            r#"{"lease":"1.w","error":"x"}"#,
            &writer,
        ),
        (
            "POST",
            format!("/api/v1/tasks/{id}/logs"),
            r#"{"lease":"1.w","lines":[]}"#,
            &writer,
        ),
    ];
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        (
            "expired",
            Some(token(json!({"scope": "admin", "exp": now() - 3600}))),
        ),
        (
            "not yet valid",
            Some(token(json!({"scope": "admin", "nbf": now() + 3600}))),
        ),
        (
            "wrong audience",
            Some(token(json!({"scope": "admin", "aud": "staging"}))),
        ),
        (
            "wrong issuer",
            Some(token(json!({"scope": "admin", "iss": "someone"}))),
        ),
        ("alg none", Some(alg_none())),
        ("tampered signature", Some(tampered())),
        ("not a JWT", Some("hello".to_owned())),
        (
            "no issuer",
            Some(token(json!({"scope": "admin", "iss": null}))),
        ),
        (
            "no audience",
            Some(token(json!({"scope": "admin", "aud": null}))),
        ),
        (
            "no expiry",
            Some(token(json!({"scope": "admin", "exp": null}))),
        ),
    ];
    for (method, path, body, wrong_scope) in &routes {
        for (what, bad_token) in &bad {
            let (status, head, error) = call(&daemon, method, path, body, bad_token.as_deref());
            assert_eq!(status, 401, "{method} {path} with {what}: {error}");
            assert_eq!(
                error["error"]["code"], "unauthorized",
                "{method} {path} {what}"
            );
            assert!(head.contains("www-authenticate: bearer"), "{head}");
        }
        let (status, _, error) = call(&daemon, method, path, body, Some(wrong_scope));
        assert_eq!(status, 403, "{method} {path} with the wrong scope: {error}");
        assert_eq!(error["error"]["code"], "forbidden");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("scope")),
            "{error}"
        );
    }
    // Messages say what was wrong.
    let (_, _, error) = call(&daemon, "GET", "/api/v1/tasks", "", bad[1].1.as_deref());
    assert_eq!(error["error"]["message"], "the token has expired");
    let (_, _, error) = call(&daemon, "GET", "/api/v1/tasks", "", bad[2].1.as_deref());
    assert_eq!(
        error["error"]["message"],
        "the token is not valid yet (nbf)"
    );

    // The right scopes pass; the privileged kinds and dlq purge need admin.
    assert_eq!(
        call(&daemon, "GET", "/api/v1/tasks", "", Some(&reader)).0,
        200
    );
    assert_eq!(
        call(
            &daemon,
            "POST",
            "/api/v1/tasks",
            r#"{"kind":"echo"}"#,
            Some(&writer)
        )
        .0,
        201
    );
    let shell = r#"{"kind":"shell","payload":{"argv":["true"]}}"#;
    let (status, _, error) = call(&daemon, "POST", "/api/v1/tasks", shell, Some(&writer));
    assert_eq!(status, 403, "{error}");
    assert_eq!(
        error["error"]["message"],
        "the shell kind needs the admin scope, which this token lacks"
    );
    let batch = r#"{"tasks":[{"kind":"noop"},{"kind":"shell","payload":{"argv":["true"]}}]}"#;
    assert_eq!(
        call(&daemon, "POST", "/api/v1/tasks/batch", batch, Some(&writer)).0,
        403
    );
    assert_eq!(
        call(&daemon, "POST", "/api/v1/tasks", shell, Some(&admin)).0,
        201
    );
    assert_eq!(purge(&daemon, &admin), 200);

    // Running a privileged task again is running it: retry needs admin too.
    let failing = r#"{"kind":"shell","max_attempts":1,"payload":{"argv":["false"]}}"#;
    let (_, _, task) = call(&daemon, "POST", "/api/v1/tasks", failing, Some(&admin));
    let shell_id = task["id"].as_str().expect("id").to_owned();
    common::wait_until(
        "the shell task fails",
        std::time::Duration::from_secs(30),
        || {
            call(
                &daemon,
                "GET",
                &format!("/api/v1/tasks/{shell_id}"),
                "",
                Some(&reader),
            )
            .2["status"]
                == "failed"
        },
    );
    let retry = format!("/api/v1/tasks/{shell_id}/retry");
    let (status, _, error) = call(&daemon, "POST", &retry, "", Some(&writer));
    assert_eq!(status, 403, "{error}");
    let (status, _, error) = call(
        &daemon,
        "POST",
        "/api/v1/dlq/retry",
        r#"{"kind":"shell"}"#,
        Some(&writer),
    );
    assert_eq!(status, 403, "{error}");
    let (status, _, done) = call(&daemon, "POST", "/api/v1/dlq/retry", "{}", Some(&writer));
    assert_eq!(
        (status, done["count"].as_u64()),
        (200, Some(0)),
        "shell tasks stay put"
    );
    let (_, _, task) = call(
        &daemon,
        "GET",
        &format!("/api/v1/tasks/{shell_id}"),
        "",
        Some(&reader),
    );
    assert_eq!(task["status"], "failed");
    assert_eq!(call(&daemon, "POST", &retry, "", Some(&admin)).0, 200);

    // A token naming critical header parameters is refused.
    let crit = {
        let header = b64url(br#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#);
        let claims = b64url(
            json!({"sub": "x", "scope": "admin", "exp": now() + 600, "iss": "taskplane", "aud": "prod"})
                .to_string()
                .as_bytes(),
        );
        let signing_input = format!("{header}.{claims}");
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{signing_input}.{signature}")
    };
    let (status, _, error) = call(&daemon, "GET", "/api/v1/tasks", "", Some(&crit));
    assert_eq!(status, 401, "{error}");
    // An audience list (RFC 7519) that holds ours is accepted.
    let listed = token(json!({"aud": ["other", "prod"]}));
    assert_eq!(
        call(&daemon, "GET", "/api/v1/tasks", "", Some(&listed)).0,
        200
    );

    // The probes and the API document stay open.
    for path in ["/health", "/ready", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(call(&daemon, "GET", path, "", None).0, 200, "{path}");
    }
}

/// The `worker` scope leases and reports on its tasks, and nothing else: no submit, no
/// reading tasks, logs, events or workers; `tasks.write` cannot lease.
#[test]
fn the_worker_scope_leases_and_reports_but_cannot_submit_or_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start_with_auth(dir.path(), &["--kinds", "resize"]);
    let worker = token(json!({"scope": "worker", "sub": "gpu-box"}));
    let writer = token(json!({"scope": "tasks.write"}));
    let (status, _, task) = call(
        &daemon,
        "POST",
        "/api/v1/tasks",
        r#"{"kind":"resize","payload":{"w":1}}"#,
        Some(&writer),
    );
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().expect("id").to_owned();
    for (method, path, body) in [
        ("POST", "/api/v1/tasks".to_owned(), r#"{"kind":"resize"}"#),
        ("GET", "/api/v1/tasks".to_owned(), ""),
        ("GET", format!("/api/v1/tasks/{id}"), ""),
        ("GET", format!("/api/v1/tasks/{id}/logs"), ""),
        ("GET", "/api/v1/events".to_owned(), ""),
        ("GET", "/api/v1/workers".to_owned(), ""),
        ("POST", format!("/api/v1/tasks/{id}/cancel"), ""),
    ] {
        let (status, _, error) = call(&daemon, method, &path, body, Some(&worker));
        assert_eq!(status, 403, "{method} {path}: {error}");
    }
    let lease = r#"{"worker":"gpu-box-1","kinds":["resize"],"wait_ms":5000}"#;
    let (status, _, refused) = call(&daemon, "POST", "/api/v1/leases", lease, Some(&writer));
    assert_eq!(status, 403, "tasks.write cannot lease: {refused}");
    let (status, _, leased) = call(&daemon, "POST", "/api/v1/leases", lease, Some(&worker));
    assert_eq!(status, 200, "{leased}");
    assert_eq!(leased["tasks"][0]["id"], id.as_str(), "{leased}");
    let body = json!({"lease": leased["tasks"][0]["lease"], "result": {"w": 2}}).to_string();
    let (status, _, done) = call(
        &daemon,
        "POST",
        &format!("/api/v1/tasks/{id}/complete"),
        &body,
        Some(&worker),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "succeeded");
}

#[test]
fn private_probes_need_a_token_but_health_never_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start_with_auth(dir.path(), &["--private-probes"]);
    for path in ["/ready", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(call(&daemon, "GET", path, "", None).0, 401, "{path}");
        let reader = token(json!({"scope": "tasks.read"}));
        assert_eq!(
            call(&daemon, "GET", path, "", Some(&reader)).0,
            200,
            "{path}"
        );
    }
    assert_eq!(call(&daemon, "GET", "/health", "", None).0, 200);
}

#[test]
fn taskd_token_issue_mints_what_the_daemon_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start_with_auth(dir.path(), &[]);
    let issue = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(common::taskd_bin())
            .args(["token", "issue"])
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("run taskd token issue")
    };
    let secret_file = dir.path().join("jwt.secret").display().to_string();
    let out = issue(
        &[
            "--scope",
            "tasks.read,tasks.write",
            "--ttl",
            "10m",
            "--subject",
            "ci",
            "--jwt-secret-file",
            &secret_file,
            "--jwt-issuer",
            "taskplane",
            "--jwt-audience",
            "prod",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "only the token: {stdout}");
    let minted = stdout.trim();
    assert_eq!(minted.split('.').count(), 3, "{minted}");
    assert_eq!(
        call(
            &daemon,
            "POST",
            "/api/v1/tasks",
            r#"{"kind":"noop"}"#,
            Some(minted)
        )
        .0,
        201
    );
    // The secret can come from the environment too.
    let out = issue(
        &[
            "--scope",
            "admin",
            "--jwt-issuer",
            "taskplane",
            "--jwt-audience",
            "prod",
        ],
        &[("TASKD_JWT_SECRET", SECRET)],
    );
    assert!(out.status.success());
    let admin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(purge(&daemon, &admin), 200);
    // A token that would die at once is a mistake, said in one line.
    let out = issue(
        &[
            "--scope",
            "admin",
            "--ttl",
            "0s",
            "--jwt-secret-file",
            &secret_file,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "taskd: --ttl: at least 1 minute"
    );
    // No key: one clear line, exit 1.
    let out = issue(&["--scope", "admin"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("taskd: no signing key"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
}

#[test]
fn eddsa_keys_pin_the_algorithm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = dir.path().join("ed25519.pem");
    let public = dir.path().join("ed25519.pub.pem");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let private_s = private.display().to_string();
    let public_s = public.display().to_string();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &private_s]);
    openssl(&["pkey", "-in", &private_s, "-pubout", "-out", &public_s]);
    let daemon = Daemon::start(dir.path(), &["--jwt-public-key-file", &public_s]);
    let out = std::process::Command::new(common::taskd_bin())
        .args([
            "token",
            "issue",
            "--scope",
            "tasks.read",
            "--jwt-private-key-file",
            &private_s,
        ])
        .env_clear()
        .output()
        .expect("issue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        call(&daemon, "GET", "/api/v1/tasks", "", Some(&good)).0,
        200
    );

    // HS256 signed with the public key as the "secret": the classic confusion attack.
    let pem = std::fs::read(&public).expect("read public key");
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "scope": "admin", "exp": now() + 600}),
        &EncodingKey::from_secret(&pem),
    )
    .expect("sign");
    let (status, _, error) = call(&daemon, "GET", "/api/v1/tasks", "", Some(&confused));
    assert_eq!(status, 401, "{error}");
    assert_eq!(
        error["error"]["message"],
        "the token's algorithm is not the one this taskd accepts (EdDSA)"
    );
    assert_eq!(
        call(&daemon, "GET", "/api/v1/tasks", "", Some(&alg_none())).0,
        401
    );
}

#[test]
fn taskctl_without_a_token_says_so_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start_with_auth(dir.path(), &[]);
    let run = taskctl_env(&daemon.url, &["list"], dir.path(), &[]);
    let line = run.fails_with(1);
    assert!(
        line.starts_with("error: this taskd requires a bearer token"),
        "{line}"
    );
    assert!(line.contains("--token"), "the hint says how: {line}");

    let reader = token(json!({"scope": "tasks.read"}));
    let run = taskctl_env(
        &daemon.url,
        &["list"],
        dir.path(),
        &[("TASKCTL_TOKEN", reader.clone().into())],
    );
    run.ok();
    let run = taskctl_env(
        &daemon.url,
        &["submit", "noop", "--token", &reader],
        dir.path(),
        &[],
    );
    let line = run.fails_with(1);
    assert!(line.contains("needs the tasks.write scope"), "{line}");
    assert!(line.contains("taskd token issue --scope"), "{line}");
    // A write-only token can submit but not follow: the error names the task it made.
    let writer = token(json!({"scope": "tasks.write"}));
    let run = taskctl_env(
        &daemon.url,
        &["submit", "noop", "--wait", "--token", &writer],
        dir.path(),
        &[],
    );
    let line = run.fails_with(1);
    assert!(
        line.starts_with("error: task ") && line.contains("was submitted, but following it failed"),
        "{line}"
    );
    // A token in a context's token file (never printed).
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{reader}\n")).expect("write token");
    let config = dir.path().join("taskctl.toml").into_os_string();
    let env = [("TASKCTL_CONFIG", config)];
    taskctl_env(
        &daemon.url,
        &[
            "config",
            "set-context",
            "prod",
            "--server",
            &daemon.url,
            "--token-file",
            file.to_str().expect("utf-8"),
        ],
        dir.path(),
        &env,
    )
    .ok();
    taskctl_env(
        &daemon.url,
        &["config", "use-context", "prod"],
        dir.path(),
        &env,
    )
    .ok();
    let run = common::wait_child(
        {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_taskctl"));
            cmd.args(["list", "-o", "json"])
                .env_clear()
                .env("TASKCTL_CONFIG", dir.path().join("taskctl.toml"))
                .env("HOME", dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("taskctl")
        },
        std::time::Duration::from_secs(60),
    );
    run.ok();
    assert!(!run.stdout.contains(&reader) && !run.stderr.contains(&reader));
}

#[test]
fn listening_openly_without_auth_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("taskd.db").display());
    let out = std::process::Command::new(common::taskd_bin())
        .args(["--listen", "0.0.0.0:0", "--database", &db])
        .env_clear()
        .output()
        .expect("run taskd");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("taskd: refusing to listen on 0.0.0.0:0 without auth")
            && last.contains("--insecure-no-auth"),
        "{stderr}"
    );
    // A worker-only process serves no API, so it may listen anywhere for its probes.
    let worker = Daemon::start_with(
        dir.path(),
        &[
            "--role",
            "worker",
            "--listen",
            "0.0.0.0:0",
            "--database",
            &db,
        ],
    );
    assert!(worker.url.contains(":"));
    drop(worker);
    let open = Daemon::start_with(
        dir.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--database",
            &db,
            "--insecure-no-auth",
        ],
    );
    let port = open.addr.rsplit(':').next().expect("port");
    let (status, _, _) = raw_http_full(&format!("127.0.0.1:{port}"), "GET", "/health", b"", &[]);
    assert_eq!(status, 200);
}

#[test]
fn writes_past_the_rate_limit_get_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &["--write-rate-limit", "2"]);
    let mut limited = None;
    for _ in 0..20 {
        let (status, head, body) =
            call(&daemon, "POST", "/api/v1/tasks", r#"{"kind":"noop"}"#, None);
        if status == 429 {
            limited = Some((head, body));
            break;
        }
        assert_eq!(status, 201, "{body}");
    }
    let (head, body) = limited.expect("20 writes at once exceed 2 per second");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry_after: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {head}"));
    assert!(retry_after >= 1, "{retry_after}");
    // Reads are not limited.
    for _ in 0..10 {
        assert_eq!(call(&daemon, "GET", "/api/v1/tasks", "", None).0, 200);
    }
}

#[test]
fn a_3_mib_body_is_refused_with_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &[]);
    let big = format!(
        r#"{{"kind":"echo","payload":"{}"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let (status, _, body) = call(&daemon, "POST", "/api/v1/tasks", &big, None);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    // Nothing was stored.
    assert_eq!(daemon.all_tasks().len(), 0);
}

#[test]
fn cors_answers_only_the_listed_origins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &["--cors-origin", "https://ops.example.com"]);
    let preflight = [
        ("Origin", "https://ops.example.com"),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization, content-type",
        ),
    ];
    let (status, head, _) =
        raw_http_full(&daemon.addr, "OPTIONS", "/api/v1/tasks", b"", &preflight);
    assert_eq!(status, 204, "{head}");
    assert!(
        head.contains("access-control-allow-origin: https://ops.example.com"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: authorization"),
        "{head}"
    );
    let (status, head, _) = raw_http_full(
        &daemon.addr,
        "GET",
        "/api/v1/tasks",
        b"",
        &[("Origin", "https://ops.example.com")],
    );
    assert_eq!(status, 200);
    assert!(head.contains("access-control-allow-origin: https://ops.example.com"));
    let (_, head, _) = raw_http_full(
        &daemon.addr,
        "GET",
        "/api/v1/tasks",
        b"",
        &[("Origin", "https://evil.example.net")],
    );
    assert!(!head.contains("access-control-allow-origin"), "{head}");

    // Off by default.
    let other = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(other.path(), &[]);
    let (_, head, _) = raw_http_full(
        &daemon.addr,
        "GET",
        "/api/v1/tasks",
        b"",
        &[("Origin", "https://ops.example.com")],
    );
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

#[test]
fn taskctl_trusts_a_private_ca_only_when_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = taskplane_testkit::private_ca(dir.path());
    // A TLS endpoint answering like taskd's list (as a TLS-terminating proxy would).
    let server = r#"
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"tasks": [], "next_cursor": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
httpd = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", server, &cert, &key])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("port");
    let url = format!("https://localhost:{}", line.trim());

    let run = taskctl_env(&url, &["list"], dir.path(), &[]);
    let refused = run.fails_with(1);
    assert!(refused.contains("certificate"), "{refused}");
    assert!(
        refused.contains("--ca-cert FILE"),
        "the hint says how: {refused}"
    );
    let run = taskctl_env(&url, &["list", "--ca-cert", &ca], dir.path(), &[]);
    run.ok();
    let run = taskctl_env(
        &url,
        &["list", "-o", "json"],
        dir.path(),
        &[("TASKCTL_CA_CERT", ca.clone().into())],
    );
    assert_eq!(run.json()["tasks"], json!([]));
    let run = taskctl_env(
        &url,
        &["list", "--ca-cert", &key.replace("server.key", "san.ext")],
        dir.path(),
        &[],
    );
    let line = run.fails_with(2);
    assert!(
        line.starts_with("error: --ca-cert ")
            && line.contains("san.ext")
            && line.ends_with(": no PEM certificate found"),
        "{line}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &["--header-timeout", "1s"]);
    let mut slow = std::net::TcpStream::connect(&daemon.addr).expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: taskd\r\nX-Slow: ")
        .expect("write");
    // The deadline only keeps a broken server from hanging the test.
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    assert!(read.is_ok(), "taskd kept the half-open request: {read:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Everyone else is still served.
    assert_eq!(call(&daemon, "GET", "/health", "", None).0, 200);
}

/// Every operator action is in the audit log under the subject of the token that made it,
/// with a secret's value left out; the log is the admin's to read. On both backends.
fn operator_actions_are_audited_under_the_tokens_subject(backend: Backend) {
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret = secrets.path().join("jwt.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("write secret");
    let secret = secret.display().to_string();
    let auth = [
        "--jwt-secret-file",
        secret.as_str(),
        "--jwt-issuer",
        "taskplane",
        "--jwt-audience",
        "prod",
        "--enable-shell",
    ];
    let Some(platform) = Platform::start(backend, "audit", &auth, &["--enable-shell"]) else {
        return;
    };
    let daemon = platform.api();
    let dir = &platform.dir;
    let alice = token(json!({"sub": "alice", "scope": "admin"}));
    let bob = token(json!({"sub": "bob", "scope": "tasks.write tasks.read"}));
    let ok = |method: &str, path: &str, body: &str, who: &str| -> Value {
        let (status, _, answer) = call(daemon, method, path, body, Some(who));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    };
    let later = ok(
        "POST",
        "/api/v1/tasks",
        r#"{"kind":"noop","delay_ms":600000}"#,
        &bob,
    );
    let id = later["id"].as_str().expect("id").to_owned();
    ok("POST", &format!("/api/v1/tasks/{id}/cancel"), "", &bob);
    ok("POST", &format!("/api/v1/tasks/{id}/retry"), "", &bob);
    let shell = ok(
        "POST",
        "/api/v1/tasks",
        r#"{"kind":"shell","payload":{"argv":["true"],"env":{"DB_PASSWORD":"hunter2"}}}"#,
        &alice,
    );
    ok("POST", "/api/v1/queues/batch/pause", "", &alice);
    ok(
        "PATCH",
        "/api/v1/queues/batch",
        r#"{"max_running":2,"rate_per_sec":null}"#,
        &alice,
    );
    ok("POST", "/api/v1/queues/batch/resume", "", &alice);
    // Actions that change nothing are not recorded: a second resume, a purge and a
    // dead-letter retry with nothing failed.
    ok("POST", "/api/v1/queues/batch/resume", "", &alice);
    ok("POST", "/api/v1/dlq/retry", "{}", &bob);
    ok(
        "POST",
        "/api/v1/dlq/purge",
        r#"{"older_than_secs":0}"#,
        &alice,
    );
    // A failed task: retried from the dead letters, failed again, purged.
    let failing = ok(
        "POST",
        "/api/v1/tasks",
        r#"{"kind":"shell","payload":{"argv":["false"]},"max_attempts":1}"#,
        &alice,
    );
    let failing = failing["id"].as_str().expect("id").to_owned();
    let failed = || {
        let (_, _, task) = call(
            daemon,
            "GET",
            &format!("/api/v1/tasks/{failing}"),
            "",
            Some(&alice),
        );
        task["status"] == "failed"
    };
    common::wait_until(
        "the shell task failed",
        std::time::Duration::from_secs(30),
        failed,
    );
    // (A retry of a shell task takes admin: bob's would leave it in the set.)
    ok("POST", "/api/v1/dlq/retry", "{}", &alice);
    common::wait_until(
        "it failed again",
        std::time::Duration::from_secs(30),
        failed,
    );
    ok(
        "POST",
        "/api/v1/dlq/purge",
        r#"{"older_than_secs":0}"#,
        &alice,
    );
    ok(
        "POST",
        "/api/v1/schedules",
        r#"{"name":"nightly","every_secs":3600,"task":{"kind":"noop"}}"#,
        &bob,
    );
    ok("POST", "/api/v1/schedules/nightly/pause", "", &bob);
    ok("POST", "/api/v1/schedules/nightly/trigger", "", &bob);
    ok("DELETE", "/api/v1/schedules/nightly", "", &bob);

    let (status, _, refused) = call(daemon, "GET", "/api/v1/audit", "", Some(&bob));
    assert_eq!(status, 403, "only an admin reads the audit log: {refused}");
    let (status, body, log) = call(daemon, "GET", "/api/v1/audit?limit=100", "", Some(&alice));
    assert_eq!(status, 200, "{log}");
    assert!(
        !body.contains("hunter2"),
        "a secret never reaches the log: {body}"
    );
    let entries = log["entries"].as_array().expect("entries");
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or("").to_owned(),
                e["action"].as_str().unwrap_or("").to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let shell_id = shell["id"].as_str().expect("id");
    let expected = [
        ("bob", "cancel", id.as_str()),
        ("bob", "retry", id.as_str()),
        ("alice", "submit", shell_id),
        ("alice", "queue.pause", "batch"),
        ("alice", "queue.set", "batch"),
        ("alice", "queue.resume", "batch"),
        ("alice", "submit", failing.as_str()),
        ("alice", "dlq.retry", "dlq"),
        ("alice", "dlq.purge", "dlq"),
        ("bob", "schedule.create", "nightly"),
        ("bob", "schedule.pause", "nightly"),
        ("bob", "schedule.trigger", "nightly"),
        ("bob", "schedule.delete", "nightly"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(seen, expected);
    let submit = entries
        .iter()
        .find(|e| e["action"] == "submit" && e["target"] == shell_id)
        .expect("the shell submit");
    assert_eq!(
        submit["details"]["payload"]["env"]["DB_PASSWORD"],
        "[redacted]"
    );
    assert_eq!(submit["details"]["payload"]["argv"], json!(["true"]));
    let set = entries
        .iter()
        .find(|e| e["action"] == "queue.set")
        .expect("set");
    assert_eq!(
        set["details"],
        json!({"max_running": 2, "rate_per_sec": null})
    );

    // taskctl audit, filtered by a family of actions and by actor.
    let run = taskctl_env(
        &daemon.url,
        &["audit", "--action", "queue", "-o", "json"],
        dir.path(),
        &[("TASKCTL_TOKEN", alice.clone().into())],
    );
    let listed = run.json();
    let actions: Vec<&str> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["queue.resume", "queue.set", "queue.pause"]);
    let run = taskctl_env(
        &daemon.url,
        &["audit", "--actor", "bob", "--since", "1h"],
        dir.path(),
        &[("TASKCTL_TOKEN", alice.into())],
    );
    let table = run.ok();
    assert!(
        table.contains("schedule.trigger") && !table.contains("alice"),
        "{table}"
    );
    let run = taskctl_env(
        &daemon.url,
        &["audit"],
        dir.path(),
        &[("TASKCTL_TOKEN", bob.into())],
    );
    let line = run.fails_with(1);
    assert!(line.starts_with("error:") && !line.contains('\n'), "{line}");
}

on_both_backends!(operator_actions_are_audited_under_the_tokens_subject);
