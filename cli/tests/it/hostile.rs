//! The hostile-input suite: schemathesis (from the venv `scripts/install-test-tools.sh`
//! makes) generates requests from the OpenAPI document a running taskd serves, valid and
//! invalid, with a fixed seed and number of examples, and checks every answer: no 5xx, every
//! status documented, every body and content type as the document says.
//!
//! The streaming endpoints are left out of the fuzzing (`/api/v1/events` and `logs` with
//! `follow=true` stay open until a task ends, which would stall the run); `live.rs` tests them.
//! taskd runs the API role only, so no generated task is executed.
//!
//! A client that openapi-python-client generates from `api/openapi.json` drives a whole taskd
//! (list, logs, events and their query parameters): a document that declares a parameter in
//! the wrong place gives a client without those functions, or one that builds wrong URLs.

use crate::common;

use common::{Daemon, raw_http_full};
use serde_json::Value;

/// A taskd with auth on and an admin token for it.
fn daemon_with_token(dir: &std::path::Path, extra: &[&str]) -> (Daemon, String) {
    let secret = dir.join("jwt.secret");
    std::fs::write(&secret, "hostile-suite-secret-0123456789abcdef").expect("write");
    let secret = secret.display().to_string();
    let mut args = vec!["--jwt-secret-file", secret.as_str()];
    args.extend(extra);
    let daemon = Daemon::start(dir, &args);
    let token = std::process::Command::new(common::taskd_bin())
        .args([
            "token",
            "issue",
            "--scope",
            "admin",
            "--jwt-secret-file",
            &secret,
        ])
        .output()
        .expect("mint a token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    (daemon, token)
}

#[test]
fn a_generated_python_client_drives_taskd() {
    let Some(bin) = taskplane_testkit::venv_tools(
        "generated-client test",
        &["openapi-python-client", "python"],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, token) = daemon_with_token(dir.path(), &["--enable-shell"]);
    let config = dir.path().join("client.yaml");
    std::fs::write(
        &config,
        "package_name_override: taskplane_client\npost_hooks: []\n",
    )
    .expect("write config");
    let document = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.json");
    let package = dir.path().join("generated");
    let out = std::process::Command::new(bin.join("openapi-python-client"))
        .arg("generate")
        .args(["--path", document, "--meta", "none", "--config"])
        .arg(&config)
        .arg("--output-path")
        .arg(package.join("taskplane_client"))
        .output()
        .expect("run openapi-python-client");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "generation failed:\n{said}");
    // The generator warns about what it cannot turn into functions; nothing may be left out.
    assert!(
        !said.contains("Warning"),
        "the generator left something out:\n{said}"
    );
    for module in ["tasks/list_.py", "tasks/logs.py", "live/events.py"] {
        assert!(
            package.join("taskplane_client/api").join(module).exists(),
            "no {module} in the generated client:\n{said}"
        );
    }

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openapi/drive_client.py"
    );
    let out = std::process::Command::new(bin.join("python"))
        .arg(script)
        .arg(&package)
        .arg(&daemon.url)
        .arg(&token)
        .output()
        .expect("run the generated client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the generated client failed:\n{stdout}\n{}\ntaskd:\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let summary: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a summary");
    assert_eq!(summary["log_lines"], 5, "{summary}");
    assert_eq!(summary["events"], 9, "{summary}");
    // What the client saw is what taskd holds.
    let bearer = format!("Bearer {token}");
    for id in summary["tasks"].as_array().expect("tasks") {
        let path = format!("/api/v1/tasks/{}", id.as_str().expect("id"));
        let (status, task) = daemon.http_with_header("GET", &path, b"", ("Authorization", &bearer));
        assert_eq!(
            (status, &task["status"]),
            (200, &Value::from("succeeded")),
            "{task}"
        );
    }
}

#[test]
fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    let Some(bin) = taskplane_testkit::venv_tools("hostile-input suite", &["schemathesis"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, token) = daemon_with_token(dir.path(), &["--role", "api"]);

    // The document as served, minus the streams.
    let (status, _, mut schema) =
        raw_http_full(&daemon.addr, "GET", "/api/v1/openapi.json", b"", &[]);
    assert_eq!(status, 200);
    let paths = schema["paths"].as_object_mut().expect("paths");
    assert!(paths.remove("/api/v1/events").is_some());
    let logs = &mut paths["/api/v1/tasks/{id}/logs"]["get"]["parameters"];
    if let Value::Array(params) = logs {
        params.retain(|p| p["name"] != "follow");
    }
    let operations: usize = paths
        .values()
        .map(|path| path.as_object().map_or(0, |methods| methods.len()))
        .sum();
    let schema_path = dir.path().join("openapi.json");
    std::fs::write(&schema_path, schema.to_string()).expect("write schema");

    let out = std::process::Command::new(bin.join("schemathesis"))
        .current_dir(dir.path())
        .arg("run")
        .arg(&schema_path)
        .args(["--url", &daemon.url])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--seed",
            "20261123",
            "--max-examples",
            "50",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--no-color",
            // Not the stateful phase: schemathesis infers links between operations from
            // parameter names, and with the queue and audit routes it inferred one from
            // PUT /api/v1/schedules/{name} to GET /api/v1/workflows/{id} that it then
            // refuses as invalid, failing the run without testing anything.
            "--phases",
            "examples,coverage,fuzzing",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It really exercised the API: every operation, many cases.
    assert!(operations >= 24, "{operations} operations in the document");
    assert!(
        stdout.contains(&format!("Tested: {operations}")),
        "not all {operations} operations were tested:\n{stdout}"
    );
    let generated: u64 = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(generated >= 200, "only {generated} cases:\n{stdout}");
    // And taskd is still well.
    assert_eq!(
        raw_http_full(&daemon.addr, "GET", "/ready", b"", &[]).0,
        200
    );
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// Every parameter the document declares is where it says: a path parameter is in its
/// path's template, and a query parameter, sent with the document's own example, is taken
/// (2xx) by the running taskd, streams included (only their status line is read).
#[test]
fn every_documented_parameter_is_accepted_where_documented() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &["--role", "api"]);
    let (status, task) = daemon.http("POST", "/api/v1/tasks", br#"{"kind":"noop"}"#);
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().expect("id").to_owned();
    let (status, schedule) = daemon.http(
        "POST",
        "/api/v1/schedules",
        br#"{"name":"hourly","cron":"@hourly","task":{"kind":"noop"}}"#,
    );
    assert_eq!(status, 201, "{schedule}");
    let (status, _, schema) = raw_http_full(&daemon.addr, "GET", "/api/v1/openapi.json", b"", &[]);
    assert_eq!(status, 200);

    let status_of = |path: &str| -> u16 {
        let mut stream = std::net::TcpStream::connect(&daemon.addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            daemon.addr
        )
        .expect("write");
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("status line");
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"))
    };
    let mut checked = 0;
    for (template, operations) in schema["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let Some(params) = operation["parameters"].as_array() else {
                continue;
            };
            let mut query = Vec::new();
            for param in params {
                let name = param["name"].as_str().expect("name");
                match param["in"].as_str() {
                    Some("path") => assert!(
                        template.contains(&format!("{{{name}}}")),
                        "{method} {template}: path parameter {name} is not in the path"
                    ),
                    Some("query") => {
                        assert_eq!(param["required"], false, "{template} {name}");
                        let example = &param["example"];
                        let values = match example {
                            Value::Array(items) => items.clone(),
                            Value::Null => panic!("{template}: {name} has no example"),
                            one => vec![one.clone()],
                        };
                        for value in values {
                            let text = match value {
                                Value::String(s) => s,
                                other => other.to_string(),
                            };
                            query.push(format!("{name}={}", text.replace('=', "%3D")));
                        }
                        checked += 1;
                    }
                    _ => {}
                }
            }
            if query.is_empty() || method != "get" {
                continue;
            }
            let path = format!(
                "{}?{}",
                template.replace("{id}", &id).replace("{name}", "hourly"),
                query.join("&")
            );
            let status = status_of(&path);
            assert!((200..300).contains(&status), "GET {path} answered {status}");
        }
    }
    // The list's, the logs' and the events' parameters.
    assert!(checked >= 14, "only {checked} query parameters documented");
}
