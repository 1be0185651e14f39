//! Bad input gets a clear error and loses nothing: the API answers the contract's JSON error
//! with the right status, and taskctl prints one line and exits with the contract's code.

use crate::common;

use common::{Daemon, taskctl};
use serde_json::{Value, json};

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

fn task_count(taskd: &Daemon) -> usize {
    let (status, list) = taskd.http("GET", "/api/v1/tasks?limit=1000", b"");
    assert_eq!(status, 200);
    list["tasks"].as_array().map_or(0, Vec::len)
}

#[test]
fn the_api_answers_json_errors_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    let big = "x".repeat(1024 * 1024 + 10);
    let huge = "y".repeat(3 * 1024 * 1024);
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/tasks".into(),
            b"{\"kind\": ".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            b"".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            b"[1,2]".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"kind":"noop","paylod":{}}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"kind":"teleport"}"#.to_vec(),
            400,
            "unknown_kind",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"kind":"shell","payload":{"argv":["id"]}}"#.to_vec(),
            400,
            "kind_disabled",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"kind":"sleep","payload":{"ms":"x"}}"#.to_vec(),
            400,
            "invalid_payload",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"kind":"noop","max_attempts":0}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            format!(r#"{{"kind":"echo","payload":"{big}"}}"#).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            format!(r#"{{"kind":"echo","payload":"{huge}"}}"#).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/tasks/batch".into(),
            br#"{"tasks":[{"kind":"noop"},{"kind":"nope"}]}"#.to_vec(),
            400,
            "unknown_kind",
        ),
        (
            "GET",
            "/api/v1/tasks/not-a-uuid".into(),
            vec![],
            400,
            "invalid_id",
        ),
        (
            "GET",
            "/api/v1/tasks/01a20647-bf75-70fe-96c0-51919eb69e7c".into(),
            vec![],
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/tasks/01a20647-bf75-70fe-96c0-51919eb69e7c/cancel".into(),
            vec![],
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/tasks/42/retry".into(),
            vec![],
            400,
            "invalid_id",
        ),
        (
            "GET",
            "/api/v1/tasks/01a20647-bf75-70fe-96c0-51919eb69e7c/logs".into(),
            vec![],
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/tasks?status=done".into(),
            vec![],
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/v1/tasks?limit=0".into(),
            vec![],
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/v1/tasks?cursor=zzz".into(),
            vec![],
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "/api/v2/anything".into(),
            vec![],
            404,
            "route_not_found",
        ),
        (
            "DELETE",
            "/api/v1/tasks".into(),
            vec![],
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let (status, answer) = taskd.http(method, &path, &body);
        assert_eq!(status, want_status, "{method} {path}: {answer}");
        assert_eq!(error_code(&answer), want_code, "{method} {path}: {answer}");
        assert!(!answer["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    assert_eq!(task_count(&taskd), 0, "no bad request stored anything");

    // The daemon is still healthy and takes good work.
    let (status, _) = taskd.http("POST", "/api/v1/tasks", br#"{"kind":"noop"}"#);
    assert_eq!(status, 201);
    assert_eq!(task_count(&taskd), 1);
}

#[test]
fn taskctl_prints_one_line_and_the_contract_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    let big = dir.path().join("big.json");
    std::fs::write(
        &big,
        serde_json::to_vec(&json!({"blob": "z".repeat(1_100_000)})).expect("encode"),
    )
    .expect("write");
    let big_arg = format!("@{}", big.display());

    let server_side: Vec<(Vec<&str>, &str)> = vec![
        (vec!["submit", "teleport"], "unknown kind 'teleport'"),
        (vec!["submit", "shell", "--", "id"], "--enable-shell"),
        (vec!["submit", "sleep", "-p", "ms=soon"], "sleep:"),
        (vec!["submit", "echo", "--payload", &big_arg], "limit"),
        (
            vec!["status", "01a20647-bf75-70fe-96c0-51919eb69e7c"],
            "no task with id",
        ),
        (
            vec!["logs", "01a20647-bf75-70fe-96c0-51919eb69e7c"],
            "no task with id",
        ),
        (vec!["submit", "noop", "--queue", "no spaces"], "queue"),
    ];
    for (args, needle) in server_side {
        let line = taskd.taskctl(&args).fails_with(1);
        assert!(line.starts_with("error: "), "{args:?}: {line}");
        assert!(line.contains(needle), "{args:?}: {line}");
    }

    let usage: Vec<(Vec<&str>, &str)> = vec![
        (vec!["status", "not-a-uuid"], "is not a task id"),
        (vec!["cancel", "123"], "is not a task id"),
        (
            vec!["submit", "echo", "--payload", "{oops"],
            "not valid JSON",
        ),
        (
            vec!["submit", "echo", "--timeout", "whenever"],
            "not a duration",
        ),
        (vec!["submit", "echo", "-p", "novalue"], "key=value"),
        (vec!["list", "--status", "done"], "unknown status"),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in usage {
        let line = taskd.taskctl(&args).fails_with(2);
        assert!(line.starts_with("error: "), "{args:?}: {line}");
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    assert_eq!(task_count(&taskd), 0, "nothing was stored");
}

#[test]
fn an_unreachable_taskd_is_one_clear_line() {
    // A port nothing listens on: bind one, note it, and let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["list"][..],
        &["submit", "noop"][..],
        &["status", "01a20647-bf75-70fe-96c0-51919eb69e7c"][..],
    ] {
        let run = taskctl(&url, args);
        let line = run.fails_with(1);
        assert!(
            line.starts_with(&format!("error: cannot reach taskd at {url}")),
            "{line}"
        );
    }
    let run = taskctl("ftp://nowhere", &["list"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--server"), "{}", run.stderr);
}
