//! taskctl against hostile input (project issue 15): task data and server messages cannot
//! drive the terminal, a server that never answers is given up on with one clear line, and
//! Ctrl-C leaves a clean terminal.
//!
//! Task data comes from a real taskd where taskd lets it through (an `echo` task's result,
//! a `shell` task's output and its error). The fields taskd itself checks (kinds, queue
//! names, worker ids) and the server's own error messages come from `Hostile`, a server in
//! this file that answers every route with such text: it plays the attacker, a taskd (or
//! something posing as one) that is not to be trusted.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::tmux::Tmux;
use common::{Daemon, Run, taskctl, wait_child};
use serde_json::{Value, json};

/// Every kind of thing a terminal obeys: OSC 52 (write the clipboard), a title change, CSI
/// clear screen and home, BEL, a C1 CSI (U+009B) and bidi overrides and isolates.
const EVIL: &str = "osc52:\x1b]52;c;aGFja2Vk\x07 title:\x1b]0;owned\x1b\\ clear:\x1b[2J\x1b[H \
                    bel:\x07 c1:\u{9b}31m bidi:\u{202e}dlrow\u{2066}x\u{2069} del:\x7f";

/// True for what must never reach a terminal raw (the tab and the newline may).
fn dangerous(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Asserts that neither stdout nor stderr of `run` holds a raw control character.
#[track_caller]
fn assert_inert(what: &str, run: &Run) {
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        if let Some(c) = text.chars().find(|c| dangerous(*c)) {
            panic!("{what}: {name} holds a raw {c:?}:\n{text:?}");
        }
    }
}

/// Asserts that the escapes were shown (not dropped): the visible forms of EVIL's parts.
#[track_caller]
fn assert_shown(what: &str, text: &str) {
    for visible in [
        "^[]52;c;aGFja2Vk^G",
        "^[[2J^[[H",
        "<U+009B>31m",
        "<U+202E>dlrow",
    ] {
        assert!(
            text.contains(visible),
            "{what}: {visible} is missing:\n{text}"
        );
    }
}

#[test]
fn task_output_errors_and_results_are_shown_not_obeyed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);

    // An echo task's result is its payload.
    let run = taskd.taskctl(&["submit", "echo", "-p", &format!("msg={EVIL}"), "--wait"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_inert("submit echo --wait", &run);
    // The result is printed as JSON, which escapes C0 controls itself; the rest is ours.
    for visible in [
        "\\u001b]52;c;",
        "<U+009B>31m",
        "<U+202E>dlrow",
        "<U+2066>x<U+2069>",
    ] {
        assert!(run.stdout.contains(visible), "{visible}:\n{}", run.stdout);
    }
    let id = taskd.taskctl(&["list", "--kind", "echo", "-o", "id"]).ok();
    let run = taskd.taskctl(&["status", &id]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_inert("status of the echo task", &run);
    let exact = taskd.taskctl(&["status", &id, "-o", "json"]).json();
    assert_eq!(
        exact["result"]["msg"], EVIL,
        "-o json carries the exact text"
    );

    // A shell task prints it on stdout and stderr, then fails with it as its last error.
    let script = r#"printf '%s\n' "$1"; printf '%s\n' "$1" >&2; exit 3"#;
    let id = taskd
        .taskctl(&[
            "submit",
            "shell",
            "--max-attempts",
            "1",
            "-q",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            EVIL,
        ])
        .ok();
    let run = taskd.taskctl(&["watch", &id]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_inert("watch", &run);
    let line = run.fails_with(3);
    assert!(line.contains("exited with status 3"), "{line}");
    assert_shown("watch's error line", &line);

    for args in [
        vec!["status", id.as_str()],
        vec!["list"],
        vec!["list", "-o", "wide"],
        vec!["dlq", "list"],
        vec!["logs", id.as_str()],
        vec!["logs", id.as_str(), "--timestamps"],
        vec!["logs", id.as_str(), "-f"],
    ] {
        let run = taskd.taskctl(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert_inert(&format!("{args:?}"), &run);
    }
    let status = taskd.taskctl(&["status", &id]).ok();
    assert_shown("status's last error", &status);
    let logs = taskd.taskctl(&["logs", &id]).ok();
    assert_shown("logs", &logs);
    assert_eq!(
        logs.lines().filter(|l| l.contains("osc52:")).count(),
        2,
        "the stdout and the stderr line:\n{logs}"
    );

    // Machine output stays exact, and --raw gives the bytes the command wrote.
    let exact = taskd.taskctl(&["status", &id, "-o", "json"]).json();
    assert!(
        exact["last_error"]
            .as_str()
            .is_some_and(|e| e.ends_with(EVIL)),
        "{exact}"
    );
    let lines = taskd.taskctl(&["logs", &id, "-o", "jsonl"]).ok();
    let texts: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")["line"].clone())
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    assert_eq!(texts.iter().filter(|t| *t == EVIL).count(), 2, "{lines}");
    let raw = taskd.taskctl(&["logs", &id, "--raw"]).ok();
    assert!(
        raw.contains(EVIL),
        "--raw prints the line as it was:\n{raw:?}"
    );
}

#[test]
fn a_hostile_server_cannot_drive_the_terminal_either() {
    let hostile = Hostile::start();
    let url = hostile.url.as_str();
    let id = TASK_ID;
    for (args, code) in [
        (vec!["list"], 0),
        (vec!["list", "-o", "wide"], 0),
        (vec!["status", id], 0),
        (vec!["dlq", "list"], 0),
        (vec!["logs", id], 0),
        (vec!["logs", id, "--timestamps"], 0),
        (vec!["logs", id, "-f"], 0),
        (vec!["events", "-n", "2"], 0),
        (vec!["queues"], 0),
        (vec!["queues", "-o", "wide"], 0),
        (vec!["queues", "-o", "id"], 0),
        (vec!["workers"], 0),
        (vec!["watch", id], 3),
        (vec!["submit", "echo", "--wait"], 3),
        (vec!["submit", "echo"], 0),
        (vec!["cancel", id], 1),
        (vec!["retry", id], 1),
        (vec!["status", BAD_ID], 1),
        (vec!["dlq", "retry", "--all"], 1),
    ] {
        let run = taskctl(url, &args);
        assert_eq!(
            run.code, code,
            "{args:?}:\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        assert_inert(&format!("{args:?}"), &run);
        if code == 1 {
            // A server's error message is one line too, escapes shown.
            let line = run.fails_with(1);
            assert_shown(&format!("{args:?}"), &line);
        }
    }
    let events = taskctl(url, &["events", "-n", "2"]).ok();
    assert_shown("events", &events);
    let status = taskctl(url, &["status", id]).ok();
    assert_shown("status", &status);

    // The machine formats carry the server's text exactly.
    let task = taskctl(url, &["status", id, "-o", "json"]).json();
    assert_eq!(task["kind"], EVIL);
    assert_eq!(task["labels"]["k"], EVIL);
    let event = taskctl(url, &["events", "-n", "1", "-o", "jsonl"]).ok();
    let event: Value = serde_json::from_str(&event).expect("one JSON line");
    assert_eq!(event["task"]["queue"], EVIL);
    let queues = taskctl(url, &["queues", "-o", "json"]).json();
    assert_eq!(queues["queues"][0]["queue"], EVIL);
}

#[test]
fn a_server_that_never_answers_is_given_up_on_with_one_line() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accept and hold every connection, and never say a word.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let server = format!("http://127.0.0.1:{port}");
    let child = common::taskctl_command(&server, &["--request-timeout", "1s", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start taskctl");
    let run = wait_child(child, Duration::from_secs(60));
    let line = run.fails_with(1);
    assert!(line.contains(&server), "names the server: {line}");
    assert!(line.contains("1s"), "names the timeout: {line}");
    assert!(
        line.contains("--request-timeout"),
        "says what to change: {line}"
    );

    // The same from the environment; 0 turns the limit off (then the stream of a hung
    // server would wait forever, so only the parsing is checked here).
    let run = common::taskctl_env(
        &server,
        &["list"],
        std::path::Path::new("."),
        &[("TASKCTL_REQUEST_TIMEOUT", "1s".into())],
    );
    assert!(run.fails_with(1).contains("1s"), "{}", run.stderr);
    let run = taskctl(&server, &["--request-timeout", "soon", "list"]);
    assert!(
        run.fails_with(2).contains("--request-timeout"),
        "{}",
        run.stderr
    );
}

#[test]
fn streams_outlive_the_request_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    // Both take longer than the request timeout, and are ordinary streams all the same.
    let run = taskd.taskctl(&[
        "--request-timeout",
        "1s",
        "submit",
        "sleep",
        "-p",
        "ms:=2500",
        "--wait",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id = taskd
        .taskctl(&[
            "submit",
            "shell",
            "-q",
            "--",
            "sh",
            "-c",
            "sleep 2.5; echo done",
        ])
        .ok();
    let run = taskd.taskctl(&["--request-timeout", "1s", "logs", "-f", &id]);
    assert_eq!(run.stdout.trim(), "done", "{}", run.stderr);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn ctrl_c_clears_the_spinner_and_exits_130() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    let Some(tmux) = Tmux::start("ctrl_c_clears_the_spinner", 120, 30) else {
        return;
    };
    tmux.wait_for("the shell prompt", |s| s.contains('$'));
    let taskctl = format!(
        "TASKCTL_SERVER={} {}",
        taskd.url,
        env!("CARGO_BIN_EXE_taskctl")
    );
    for (n, command) in [
        "submit sleep -p ms:=60000 --wait",
        "events",
        "queues --watch --interval 1",
    ]
    .iter()
    .enumerate()
    {
        tmux.type_line("clear");
        tmux.wait_for("a clear screen", |s| s.trim() == "$");
        // The marker is spelt differently on the command line than in its output.
        tmux.type_line(&format!("{taskctl} {command}; echo rc-{n}\"=$?\""));
        match n {
            0 => {
                tmux.wait_for("the spinner", |s| s.contains("running (attempt 1/"));
            }
            1 => {
                // The stream is open once a new task's event shows; a task submitted before
                // it subscribed shows nothing, so submit again until one does.
                common::wait_until("an event on screen", Duration::from_secs(20), || {
                    taskd.taskctl(&["submit", "noop", "-q"]).ok();
                    let shown = |s: &str| s.contains("created ");
                    let deadline = std::time::Instant::now() + Duration::from_millis(500);
                    while std::time::Instant::now() < deadline {
                        if shown(&tmux.screen()) {
                            return true;
                        }
                        std::thread::sleep(Duration::from_millis(25));
                    }
                    false
                });
            }
            _ => {
                tmux.wait_for("the queue table", |s| s.contains("QUEUE"));
            }
        }
        tmux.keys(&["C-c"]);
        let screen = tmux.wait_for("taskctl to exit", |s| s.contains(&format!("rc-{n}=")));
        assert!(
            screen.contains(&format!("rc-{n}=130")),
            "{command}: exit status:\n{screen}"
        );
        assert!(
            screen.lines().any(|l| l.trim() == "taskctl: interrupted"),
            "{command}: the interrupted line:\n{screen}"
        );
        if n == 0 {
            assert!(
                !screen.contains("(attempt 1/") && !screen.contains("running"),
                "the spinner line was left behind:\n{screen}"
            );
        }
    }
}

const TASK_ID: &str = "01a20671-0581-71d8-84a1-000000000001";
const BAD_ID: &str = "01a20671-0581-71d8-84a1-000000000bad";

/// An HTTP server that answers each route of the API with EVIL in every text field and
/// every error message.
struct Hostile {
    url: String,
}

impl Hostile {
    fn start() -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer(stream));
            }
        });
        Hostile { url }
    }
}

fn task() -> Value {
    json!({
        "id": TASK_ID, "kind": EVIL, "queue": EVIL, "priority": 0,
        "payload": {"m": EVIL}, "status": "failed", "attempts": 1, "max_attempts": 1,
        "timeout_secs": 300, "run_at": "2026-11-23T11:59:00Z",
        "created_at": "2026-11-23T11:59:00Z", "updated_at": "2026-11-23T11:59:30Z",
        "started_at": "2026-11-23T11:59:30Z", "finished_at": "2026-11-23T11:59:31Z",
        "result": {"m": EVIL}, "last_error": EVIL, "idempotency_key": EVIL,
        "labels": {"k": EVIL}, "worker": EVIL, "cancel_requested": false
    })
}

fn event(seq: i64) -> Value {
    json!({
        "seq": seq, "type": "failed", "at": "2026-11-23T11:59:31Z",
        "task": {"id": TASK_ID, "kind": EVIL, "queue": EVIL, "priority": 0,
                 "status": "failed", "attempts": 1, "max_attempts": 1,
                 "created_at": "2026-11-23T11:59:00Z", "worker": EVIL}
    })
}

fn log_lines() -> Vec<Value> {
    ["stdout", "stderr", "system"]
        .iter()
        .enumerate()
        .map(|(n, stream)| {
            json!({"seq": n + 1, "attempt": 1, "stream": stream,
                   "ts": "2026-11-23T11:59:30Z", "line": EVIL})
        })
        .collect()
}

fn answer(mut stream: TcpStream) {
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let task_path = format!("/api/v1/tasks/{TASK_ID}");
    let error = |status: u16| {
        (
            status,
            "application/json",
            json!({"error": {"code": "conflict", "message": EVIL}}).to_string(),
        )
    };
    let (status, content_type, text) = match (method, path) {
        ("GET", "/api/v1/tasks") => (
            200,
            "application/json",
            json!({"tasks": [task()], "next_cursor": null}).to_string(),
        ),
        ("POST", "/api/v1/tasks") => (201, "application/json", task().to_string()),
        ("GET", p) if p == task_path => (200, "application/json", task().to_string()),
        ("GET", p) if p == format!("{task_path}/logs") && query.contains("follow=true") => {
            let lines: Vec<String> = log_lines().iter().map(Value::to_string).collect();
            (200, "application/x-ndjson", lines.join("\n") + "\n")
        }
        ("GET", p) if p == format!("{task_path}/logs") => (
            200,
            "application/json",
            json!({"task_id": TASK_ID, "task_status": "failed", "lines": log_lines(),
                   "next_after": 3})
            .to_string(),
        ),
        ("GET", "/api/v1/events") => {
            let text: String = (1..=2)
                .map(|seq| format!("id: {seq}\nevent: failed\ndata: {}\n\n", event(seq)))
                .collect();
            (200, "text/event-stream", text)
        }
        ("GET", "/api/v1/queues") => (
            200,
            "application/json",
            json!({"queues": [{"queue": EVIL, "counts": {"queued": 1}, "depth": 1,
                "oldest_ready_secs": 1.0, "finished_last_minute": 0, "failed_last_minute": 0,
                "throughput_per_sec": 0.0}]})
            .to_string(),
        ),
        ("GET", "/api/v1/workers") => (
            200,
            "application/json",
            json!({"workers": [{"id": EVIL, "host": EVIL, "pid": 1, "queues": [EVIL],
                "concurrency": 1, "busy": 0, "started_at": "2026-11-23T11:59:00Z",
                "last_heartbeat": "2026-11-23T11:59:30Z"}]})
            .to_string(),
        ),
        ("GET", p) if p.starts_with("/api/v1/tasks/") => error(404),
        _ => error(409),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}
