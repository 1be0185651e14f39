//! Reproductions from the hostile review, kept as tests: a store that refuses writes, cross-
//! site requests, metric labels, idle connections, gone stream clients, large lists and the
//! validation of odd input. The shell and http kinds and taskctl's output have suites of
//! their own (`hardening_shell.rs`, `hardening_http.rs`, `hardening_cli.rs`).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Daemon, wait_until};
use serde_json::{Value, json};

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A tmpfs of a given size, unmounted when dropped. `None` (after saying why) where this
/// test cannot mount one: not root, or no mount permission.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(test: &str, path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("mount point");
        let done = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match done {
            Ok(out) if out.status.success() => Some(Tmpfs {
                path: path.to_owned(),
            }),
            Ok(out) => {
                taskplane_testkit::skip(&format!(
                    "{test}: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                None
            }
            Err(error) => {
                taskplane_testkit::skip(&format!("{test}: cannot run mount: {error}"));
                None
            }
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("remount");
        assert!(status.success(), "remount {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn submit(taskd: &Daemon, payload: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(&json!({"kind": "echo", "payload": payload})).expect("json");
    taskd.http("POST", "/api/v1/tasks", &body)
}

/// Submits until the store has refused `refusals` in a row; answers the ids of every 201.
fn submit_until_refused(taskd: &Daemon, refusals: usize) -> Vec<String> {
    let pad = "x".repeat(6000);
    let mut accepted = Vec::new();
    let mut in_a_row = 0;
    for _ in 0..5000 {
        let (status, body) = submit(taskd, &json!({"pad": pad}));
        match status {
            201 => {
                accepted.push(body["id"].as_str().expect("id").to_owned());
                in_a_row = 0;
            }
            503 => {
                assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
                in_a_row += 1;
                if in_a_row == refusals {
                    return accepted;
                }
            }
            other => panic!("a submit to a full store answered {other}: {body}"),
        }
    }
    panic!("the store never refused a write; log:\n{}", taskd.log());
}

fn assert_all_readable(taskd: &Daemon, ids: &[String]) {
    for id in ids {
        let (status, task) = taskd.http("GET", &format!("/api/v1/tasks/{id}"), b"");
        assert_eq!(
            status,
            200,
            "task {id} was answered 201 but is not readable: {task}; log:\n{}",
            taskd.log()
        );
    }
}

/// Writes come back by themselves once the database takes them again.
fn wait_for_writes(taskd: &Daemon) -> String {
    let mut id = String::new();
    wait_until(
        "a submit to be accepted again",
        Duration::from_secs(30),
        || {
            let (status, body) = submit(taskd, &json!({}));
            if status == 201 {
                id = body["id"].as_str().unwrap_or_default().to_owned();
            }
            status == 201
        },
    );
    wait_until(
        "/ready to answer 200 again",
        Duration::from_secs(10),
        || taskd.ready() == 200,
    );
    id
}

#[test]
fn a_full_disk_never_answers_201_for_a_task_it_did_not_store() {
    let dir = temp();
    let Some(disk) = Tmpfs::mount("full_disk", &dir.path().join("disk"), "2m") else {
        return;
    };
    let db = format!("sqlite://{}", disk.path.join("taskd.db").display());
    let args = ["--listen", "127.0.0.1:0", "--database", db.as_str()];
    let mut taskd = Daemon::start_with(dir.path(), &args);

    let mut accepted = submit_until_refused(&taskd, 20);
    assert!(!accepted.is_empty(), "nothing fit on the disk");
    assert_eq!(taskd.ready(), 503, "/ready while every write is refused");
    assert_all_readable(&taskd, &accepted);

    disk.resize("64m");
    accepted.push(wait_for_writes(&taskd));
    for _ in 0..50 {
        let (status, body) = submit(&taskd, &json!({"n": 1}));
        assert_eq!(status, 201, "{body}");
        accepted.push(body["id"].as_str().expect("id").to_owned());
    }
    assert_all_readable(&taskd, &accepted);
    let log = taskd.log();
    assert!(
        !log.contains("lease expired"),
        "refused outcomes are not lost leases:\n{log}"
    );
    let refusals = log.matches("the database refuses writes").count();
    assert!(
        (1..=2).contains(&refusals),
        "the refusal is logged once a minute, not at every write ({refusals} lines)"
    );

    taskd.signal("TERM");
    assert!(taskd.wait_exit(Duration::from_secs(30)).success());
    let taskd = Daemon::start_with(dir.path(), &args);
    assert_all_readable(&taskd, &accepted);
    let log = taskd.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_read_only_database_file_refuses_with_503_and_recovers() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let mut accepted = Vec::new();
    for _ in 0..3 {
        let (status, body) = submit(&taskd, &json!({}));
        assert_eq!(status, 201, "{body}");
        accepted.push(body["id"].as_str().expect("id").to_owned());
    }
    let files: Vec<PathBuf> = ["taskd.db", "taskd.db-wal"]
        .iter()
        .map(|f| dir.path().join(f))
        .collect();
    let immutable = Command::new("chattr").arg("+i").args(&files).output();
    match immutable {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return taskplane_testkit::skip(&format!(
                "read_only_database: chattr +i failed (needs root and a file system with attributes): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(error) => {
            return taskplane_testkit::skip(&format!(
                "read_only_database: cannot run chattr: {error}"
            ));
        }
    }
    // Undo the attribute whatever happens, or the temp dir cannot be removed.
    struct Mutable(Vec<PathBuf>);
    impl Drop for Mutable {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").args(&self.0).status();
        }
    }
    let guard = Mutable(files);

    for _ in 0..10 {
        let (status, body) = submit(&taskd, &json!({}));
        assert_eq!(status, 503, "a submit to a read-only file: {body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    }
    assert_eq!(taskd.ready(), 503);
    assert_all_readable(&taskd, &accepted);

    drop(guard);
    accepted.push(wait_for_writes(&taskd));
    assert_all_readable(&taskd, &accepted);
}

#[test]
fn retention_gives_the_space_back_to_the_file_system() {
    let dir = temp();
    let mut taskd = Daemon::start(dir.path(), &[]);
    let pad = "y".repeat(20_000);
    let tasks: Vec<Value> = (0..1000)
        .map(|_| json!({"kind": "echo", "payload": {"pad": pad}}))
        .collect();
    for chunk in tasks.chunks(40) {
        taskd.submit_batch(chunk);
    }
    wait_until("every task to succeed", Duration::from_secs(120), || {
        taskd.count("succeeded") == 1000
    });
    taskd.signal("TERM");
    assert!(taskd.wait_exit(Duration::from_secs(30)).success());
    let size = || {
        ["taskd.db", "taskd.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    let full = size();
    assert!(
        full > 20_000_000,
        "the database holds the payloads: {full} bytes"
    );

    let taskd = Daemon::start(dir.path(), &["--retention", "1s"]);
    wait_until(
        "retention to delete the tasks and the file to shrink",
        Duration::from_secs(120),
        || taskd.all_tasks().is_empty() && size() < full / 4,
    );
}

/// One HTTP/1.1 request with exactly these headers (no Host or Content-Type added).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let (status, _, body) = common::raw_request(addr, method, path, headers, body);
    (status, body)
}

#[test]
fn a_web_page_cannot_submit_to_a_local_taskd() {
    let dir = temp();
    let taskd = Daemon::start(
        dir.path(),
        &[
            "--enable-shell",
            "--cors-origin",
            "https://ops.example",
            "--allowed-host",
            "taskd.internal",
        ],
    );
    let own_host = taskd.addr.clone();
    let shell = br#"{"kind":"shell","payload":{"argv":["touch","/tmp/pwned"]}}"#;
    let path = "/api/v1/tasks";

    // The reviewer's request first (a form-like text/plain POST from a foreign page,
    // rebinding), then each rule alone; none may store anything.
    let own = own_host.as_str();
    let evil = "http://evil.example";
    let json_type = ("Content-Type", "application/json");
    // (what, method, headers, body, status, code)
    type Refusal<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a [u8],
        u16,
        &'a str,
    );
    let refused: Vec<Refusal> = vec![
        (
            "the reviewer's request",
            "POST",
            vec![
                ("Host", "evil.example:80"),
                ("Origin", evil),
                ("Content-Type", "text/plain"),
            ],
            shell,
            403,
            "host_not_allowed",
        ),
        (
            "a foreign origin, text",
            "POST",
            vec![
                ("Host", own),
                ("Origin", evil),
                ("Content-Type", "text/plain"),
            ],
            shell,
            403,
            "cross_origin",
        ),
        (
            "a foreign origin, JSON",
            "POST",
            vec![("Host", own), ("Origin", evil), json_type],
            shell,
            403,
            "cross_origin",
        ),
        (
            "an opaque origin (sandboxed frame, file://)",
            "POST",
            vec![("Host", own), ("Origin", "null"), json_type],
            shell,
            403,
            "cross_origin",
        ),
        (
            "a cross-site fetch without Origin",
            "POST",
            vec![("Host", own), ("Sec-Fetch-Site", "cross-site"), json_type],
            shell,
            403,
            "cross_origin",
        ),
        (
            "text/plain",
            "POST",
            vec![("Host", own), ("Content-Type", "text/plain")],
            shell,
            415,
            "unsupported_media_type",
        ),
        (
            "a form",
            "POST",
            vec![
                ("Host", own),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            shell,
            415,
            "unsupported_media_type",
        ),
        (
            "a multipart form",
            "POST",
            vec![
                ("Host", own),
                ("Content-Type", "multipart/form-data; boundary=x"),
            ],
            shell,
            415,
            "unsupported_media_type",
        ),
        (
            "a body without a Content-Type",
            "POST",
            vec![("Host", own)],
            shell,
            415,
            "unsupported_media_type",
        ),
        (
            "a read for a rebound name",
            "GET",
            vec![("Host", "evil.example")],
            b"",
            403,
            "host_not_allowed",
        ),
        (
            "two Host headers",
            "GET",
            vec![("Host", own), ("Host", "evil.example")],
            b"",
            403,
            "host_not_allowed",
        ),
    ];
    for (what, method, headers, body, status, code) in refused {
        let (got, answer) = request(&taskd.addr, method, "/api/v1/tasks", &headers, body);
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {answer}"
        );
    }
    let (status, tasks) = request(&taskd.addr, "GET", "/api/v1/tasks", &[("Host", own)], b"");
    assert_eq!(status, 200);
    assert_eq!(tasks["tasks"], json!([]), "nothing was stored");

    // What stays allowed: the allowed CORS origin, taskd's own origin, a configured host,
    // JSON with a charset, and an empty POST without a type (curl -X POST …/cancel).
    let noop = br#"{"kind":"noop"}"#;
    for headers in [
        vec![
            ("Host", own_host.as_str()),
            ("Origin", "https://ops.example"),
            ("Content-Type", "application/json"),
        ],
        vec![
            ("Host", own_host.as_str()),
            ("Origin", &format!("http://{own_host}")),
            ("Content-Type", "application/json"),
        ],
        vec![
            ("Host", "taskd.internal"),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        vec![
            ("Host", "localhost"),
            ("Content-Type", "application/json"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    ] {
        let (status, body) = request(&taskd.addr, "POST", path, &headers, noop);
        assert_eq!(status, 201, "{headers:?}: {body}");
    }
    let id = taskd
        .taskctl(&["submit", "sleep", "-p", "ms:=60000", "-q"])
        .ok();
    let (status, body) = request(
        &taskd.addr,
        "POST",
        &format!("/api/v1/tasks/{id}/cancel"),
        &[("Host", &own_host)],
        b"",
    );
    assert!(
        status == 200 || status == 202,
        "an empty POST without a type: {status} {body}"
    );
}

#[test]
fn without_auth_even_an_open_address_answers_no_rebound_name() {
    let dir = temp();
    // As in a container published on the host's loopback: 0.0.0.0 inside, no auth.
    let db = format!("sqlite://{}", dir.path().join("taskd.db").display());
    let taskd = Daemon::start_with(
        dir.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--database",
            &db,
            "--insecure-no-auth",
            "--allowed-host",
            "tasks.lan",
        ],
    );
    let port = taskd
        .addr
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .expect("port");
    let addr = format!("127.0.0.1:{port}");
    let noop = br#"{"kind":"noop"}"#;
    let evil = format!("evil.example:{port}");
    let origin = format!("http://{evil}");
    let (status, body) = request(
        &addr,
        "POST",
        "/api/v1/tasks",
        &[
            ("Host", &evil),
            ("Origin", &origin),
            ("Content-Type", "application/json"),
        ],
        noop,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("host_not_allowed")),
        "{body}"
    );
    let (status, body) = request(
        &addr,
        "POST",
        "/api/v1/tasks",
        &[
            ("Host", "evil.example"),
            ("Content-Type", "application/json"),
        ],
        noop,
    );
    assert_eq!(status, 403, "{body}");
    for host in [addr.as_str(), "tasks.lan", "10.1.2.3:7070", "localhost"] {
        let (status, body) = request(
            &addr,
            "POST",
            "/api/v1/tasks",
            &[("Host", host), ("Content-Type", "application/json")],
            noop,
        );
        assert_eq!(status, 201, "{host}: {body}");
    }
}

#[test]
fn metric_labels_stay_bounded_whatever_clients_send() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--concurrency", "1"]);
    let size = || {
        let (status, text) = request(
            &taskd.addr,
            "GET",
            "/metrics",
            &[("Host", "localhost")],
            b"",
        );
        assert_eq!(status, 200);
        text.as_str().map_or(0, str::len)
    };
    let before = size();
    for i in 0..1000 {
        let method = format!("X{i:04}");
        request(
            &taskd.addr,
            &method,
            "/api/v1/tasks",
            &[("Host", "localhost")],
            b"",
        );
    }
    // 2,000 queues in one batch: each name becomes rows in the store, not series.
    let tasks: Vec<Value> = (0..2000)
        .map(
            |i| json!({"kind": "noop", "queue": format!("q{i}"), "run_at": "2035-01-01T00:00:00Z"}),
        )
        .collect();
    taskd.submit_batch(&tasks);
    let after = size();
    assert!(
        after < before + 200_000,
        "/metrics grew from {before} to {after} bytes"
    );
}

/// Whether the server closes `stream` (EOF or reset) before `within`.
fn closed_by_server(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn connections_that_send_nothing_or_go_idle_are_closed() {
    use std::io::Write;
    let dir = temp();
    let taskd = Daemon::start(
        dir.path(),
        &["--header-timeout", "1s", "--idle-timeout", "2s"],
    );
    // Never a byte.
    let mut silent = std::net::TcpStream::connect(&taskd.addr).expect("connect");
    assert!(
        closed_by_server(&mut silent, Duration::from_secs(20)),
        "a silent connection stayed open"
    );
    // h2c: the preface and a SETTINGS frame, then no request.
    let mut h2 = std::net::TcpStream::connect(&taskd.addr).expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("preface");
    assert!(
        closed_by_server(&mut h2, Duration::from_secs(20)),
        "an h2c connection without a request stayed open"
    );
    // A keep-alive connection after its request.
    let mut idle = std::net::TcpStream::connect(&taskd.addr).expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(20)),
        "an idle keep-alive connection stayed open"
    );
    // A stream is not idle: its heartbeats keep it open past the idle timeout.
    let mut events = std::net::TcpStream::connect(&taskd.addr).expect("connect");
    events
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    assert!(
        !closed_by_server(&mut events, Duration::from_secs(4)),
        "an event stream was closed as idle"
    );
}

fn open_streams(taskd: &Daemon) -> u64 {
    let (_, text) = request(
        &taskd.addr,
        "GET",
        "/metrics",
        &[("Host", "localhost")],
        b"",
    );
    text.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("taskplane_http_open_streams "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the open-streams gauge")
}

#[test]
fn streams_end_when_their_clients_go() {
    use std::io::Write;
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let id = taskd
        .taskctl(&["submit", "sleep", "-p", "ms:=600000", "-q"])
        .ok();
    let mut clients = Vec::new();
    for i in 0..60 {
        let mut stream = std::net::TcpStream::connect(&taskd.addr).expect("connect");
        let path = if i % 2 == 0 {
            format!("/api/v1/tasks/{id}/logs?follow=true")
        } else {
            format!("/api/v1/events?tasks={id}")
        };
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        clients.push(stream);
    }
    wait_until("60 open streams", Duration::from_secs(20), || {
        open_streams(&taskd) == 60
    });
    drop(clients);
    wait_until(
        "every stream to end after its client went",
        Duration::from_secs(60),
        || open_streams(&taskd) == 0,
    );
}

#[test]
fn a_list_of_large_tasks_is_paged_by_size() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    // 40 tasks of ~900 KiB: a 1,000-task page of them would be 36 MB.
    let pad = "z".repeat(900 * 1024);
    for _ in 0..40 {
        let body = serde_json::to_vec(
            &json!({"kind": "noop", "payload": {"pad": pad}, "run_at": "2035-01-01T00:00:00Z"}),
        )
        .expect("json");
        let (status, answer) = taskd.http("POST", "/api/v1/tasks", &body);
        assert_eq!(status, 201, "{answer}");
    }
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/tasks?limit=1000&cursor={c}"),
            None => "/api/v1/tasks?limit=1000".to_owned(),
        };
        let (status, page) = taskd.http("GET", &path, b"");
        assert_eq!(status, 200);
        let n = page["tasks"].as_array().map_or(0, Vec::len);
        assert!(n <= 10, "a page held {n} tasks of 900 KiB");
        seen += n;
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(seen, 40, "every task is reached through next_cursor");
    assert_eq!(
        taskd.all_tasks().len(),
        40,
        "taskctl pages through them too"
    );
}

#[test]
fn odd_times_and_label_characters_are_refused_at_submit() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    for (body, field) in [
        (
            json!({"kind": "noop", "run_at": "0001-01-01T00:00:00Z"}),
            "run_at",
        ),
        (
            json!({"kind": "noop", "run_at": "9999-12-31T23:59:59Z"}),
            "run_at",
        ),
        (
            json!({"kind": "noop", "labels": {"k": "a\u{0}b"}}),
            "labels",
        ),
        (
            json!({"kind": "noop", "labels": {"k": "exe\u{202E}txt"}}),
            "labels",
        ),
        (
            json!({"kind": "noop", "labels": {"k": "\u{1b}]52;c;aGk=\u{7}"}}),
            "labels",
        ),
    ] {
        let (status, answer) = taskd.http("POST", "/api/v1/tasks", body.to_string().as_bytes());
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    assert_eq!(taskd.all_tasks().len(), 0);
    let line = taskd
        .taskctl(&["submit", "noop", "--label", "k=a\u{202E}b"])
        .fails_with(1);
    assert!(line.contains("labels"), "{line}");
}

#[test]
fn errors_from_the_http_layer_have_json_bodies() {
    use std::io::{Read, Write};
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect::<String>()
    );
    for (raw, status, code) in [
        (long_uri, 414, "uri_too_long"),
        (many_headers, 431, "headers_too_large"),
        (
            "GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
    ] {
        let mut stream = std::net::TcpStream::connect(&taskd.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(raw.as_bytes()).expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(json["error"]["code"], code, "{text}");
    }
}

#[test]
fn a_read_only_postgres_refuses_with_503_and_recovers() {
    if !taskplane_testkit::services_available("read_only_postgres", true, false) {
        return;
    }
    let dir = temp();
    let db = taskplane_testkit::TempDatabase::create();
    let args = ["--listen", "127.0.0.1:0", "--database", db.url.as_str()];
    let taskd = Daemon::start_with(dir.path(), &args);
    let mut accepted = Vec::new();
    let (status, body) = submit(&taskd, &json!({}));
    assert_eq!(status, 201, "{body}");
    accepted.push(body["id"].as_str().expect("id").to_owned());

    db.set_read_only(true);
    // The pool reconnects after the sessions end; from then on every write is refused.
    wait_until("a submit to be refused", Duration::from_secs(30), || {
        let (status, body) = submit(&taskd, &json!({}));
        if status == 201 {
            accepted.push(body["id"].as_str().unwrap_or_default().to_owned());
        }
        status == 503
    });
    for _ in 0..5 {
        let (status, body) = submit(&taskd, &json!({}));
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("read-only"),
            "{body}"
        );
    }
    assert_eq!(taskd.ready(), 503);
    assert_all_readable(&taskd, &accepted);

    db.set_read_only(false);
    accepted.push(wait_for_writes(&taskd));
    assert_all_readable(&taskd, &accepted);
}

#[test]
fn a_shell_task_cannot_read_taskds_environment() {
    // As an unprivileged user (root reads any process): taskd is not dumpable, so a task
    // running as the same user cannot read /proc/<taskd>/environ.
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        return taskplane_testkit::skip("taskd_environ: setpriv (util-linux) is missing");
    };
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !is_root {
        return taskplane_testkit::skip("taskd_environ: needs root to run taskd as another user");
    }
    let dir = temp();
    let mode = |path: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    mode(dir.path(), 0o777);
    let taskd = dir.path().join("taskd");
    std::fs::copy(common::taskd_bin(), &taskd).expect("copy taskd");
    mode(&taskd, 0o755);
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let taskd_path = taskd.display().to_string();
    let args = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        taskd_path.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--database",
        db.as_str(),
        "--enable-shell",
    ];
    let daemon = Daemon::start_program(
        dir.path(),
        setpriv,
        &args,
        &[("TASKD_TEST_SECRET", "leaked-value".into())],
    );
    let script = r#"gp=$(awk '{print $4}' /proc/$PPID/stat); if tr '\0' '\n' < /proc/$gp/environ 2>/dev/null | grep TASKD_TEST_SECRET; then :; else echo hidden; fi"#;
    let run = daemon.shell_wait(script);
    let out = run.ok();
    assert!(!out.contains("leaked-value"), "{out}");
    assert!(out.contains("hidden"), "{out}");
}

#[test]
fn no_log_line_carries_a_password_from_the_database_url() {
    if !taskplane_testkit::services_available("url_redaction", true, false) {
        return;
    }
    let dir = temp();
    let db = taskplane_testkit::TempDatabase::create();
    let url = format!("{}?sslpassword=S3cr%2Ft&token=T0k", db.url);
    let taskd = Daemon::start_with(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--database",
            url.as_str(),
            "--log-level",
            "trace",
        ],
    );
    assert_eq!(taskd.ready(), 200);
    let log = taskd.log();
    assert!(!log.contains("S3cr") && !log.contains("T0k"), "{log}");
}
