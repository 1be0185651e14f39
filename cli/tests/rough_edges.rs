//! The CLI's rough edges a new user met first (issue "What a new user meets first"): each
//! fixed one is kept here as a test.

mod common;

use std::time::Duration;

use common::{Daemon, wait_until};

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn a_future_time_reads_in_not_ago() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let id = taskd
        .taskctl(&["submit", "noop", "--delay", "3d", "-q"])
        .ok();
    let sheet = taskd.taskctl(&["status", &id, "-o", "table"]).ok();
    let run_at = sheet
        .lines()
        .find(|l| l.starts_with("run at:"))
        .unwrap_or_else(|| panic!("no run_at row:\n{sheet}"));
    assert!(
        run_at.contains("(in 2d)") || run_at.contains("(in 3d)"),
        "{run_at}"
    );
    assert!(!run_at.contains("ago"), "{run_at}");
    let created = sheet
        .lines()
        .find(|l| l.contains("created"))
        .expect("created row");
    assert!(created.contains("s ago)"), "{created}");
}

#[test]
fn retry_and_its_refusal_read_as_english() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let id = taskd
        .taskctl(&["submit", "noop", "--max-attempts", "1", "--wait", "-q"])
        .ok();
    let id = id.lines().next().unwrap_or_default().to_owned();
    let line = taskd.taskctl(&["retry", &id]).fails_with(1);
    assert!(
        line.contains(&format!("task {id} has succeeded;")),
        "{line}"
    );
    let failed = taskd
        .taskctl(&[
            "submit",
            "sleep",
            "-p",
            "ms:=60000",
            "--timeout",
            "1s",
            "--max-attempts",
            "1",
            "-q",
        ])
        .ok();
    wait_until("the task to fail", Duration::from_secs(30), || {
        taskd.task(&failed)["status"] == "failed"
    });
    let out = taskd.taskctl(&["retry", &failed]).ok();
    assert_eq!(out, format!("{failed}: queued again (up to 1 attempt)"));
}

#[test]
fn workers_print_their_ids() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let mut ids = String::new();
    wait_until("the worker to show", Duration::from_secs(20), || {
        ids = taskd.taskctl(&["workers", "-o", "id"]).ok();
        !ids.is_empty()
    });
    let json = taskd.taskctl(&["workers", "-o", "json"]).json();
    let expected: Vec<String> = json["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_missing_argument_is_named() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let line = taskd.taskctl(&["retry"]).fails_with(2);
    assert!(line.contains("were not provided: <ID>"), "{line}");
    let line = taskd.taskctl(&["cancel"]).fails_with(2);
    assert!(line.contains("<ID>"), "{line}");
}

#[test]
fn bench_takes_payloads_like_submit() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    for args in [
        vec![
            "bench", "--kind", "sleep", "-p", "ms:=5", "--tasks", "20", "-o", "json",
        ],
        vec![
            "bench",
            "--kind",
            "echo",
            "--payload",
            r#"{"a":1}"#,
            "--payload-bytes",
            "64",
            "--tasks",
            "20",
            "-o",
            "json",
        ],
    ] {
        let report = taskd.taskctl(&args).json();
        assert_eq!(report["succeeded"], 20, "{args:?}: {report}");
    }
    let tasks = taskd.all_tasks();
    let echo = tasks
        .iter()
        .find(|t| t["kind"] == "echo")
        .expect("an echo task");
    assert_eq!(echo["payload"]["a"], 1);
    assert_eq!(echo["payload"]["pad"].as_str().map(str::len), Some(64));
    let sleep = tasks
        .iter()
        .find(|t| t["kind"] == "sleep")
        .expect("a sleep task");
    assert_eq!(
        sleep["payload"],
        serde_json::json!({"ms": 5}),
        "no pad without --payload-bytes"
    );
}

#[test]
fn a_bad_field_is_named() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let (status, body) = taskd.http(
        "POST",
        "/api/v1/tasks",
        br#"{"kind":"noop","run_at":"tomorrow"}"#,
    );
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("invalid JSON body: run_at: "),
        "{message}"
    );
    let (status, body) = taskd.http(
        "POST",
        "/api/v1/tasks/batch",
        br#"{"tasks":[{"kind":"noop"},{"kind":"noop","priority":"high"}]}"#,
    );
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("tasks[1].priority: "), "{message}");
}

#[test]
fn a_waited_shell_task_shows_its_output() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let run = taskd.taskctl(&[
        "submit",
        "shell",
        "--wait",
        "--",
        "sh",
        "-c",
        "echo hello; echo world >&2",
    ]);
    let out = run.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"hello") && lines.contains(&"world"),
        "{out}"
    );
    assert!(out.contains("\"exit_code\": 0"), "{out}");
}

#[test]
fn waiting_on_a_queue_no_worker_consumes_says_so() {
    use std::io::BufRead;
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let mut child = taskd.taskctl_spawn(&["submit", "noop", "--queue", "nobody", "--wait"]);
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a line on stderr");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains("no live worker consumes queue 'nobody'"),
        "{line}"
    );
    // A queue that has a worker gets no such line.
    wait_until(
        "the worker's first heartbeat",
        Duration::from_secs(20),
        || !taskd.taskctl(&["workers", "-o", "id"]).ok().is_empty(),
    );
    let run = taskd.taskctl(&["submit", "noop", "--wait"]);
    run.ok();
    assert!(!run.stderr.contains("no live worker"), "{}", run.stderr);
}

#[test]
fn a_batch_answers_one_status() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let keyed = br#"{"tasks":[{"kind":"noop","idempotency_key":"k1"}]}"#;
    for body in [&br#"{"tasks":[]}"#[..], keyed, keyed] {
        let (status, answer) = taskd.http("POST", "/api/v1/tasks/batch", body);
        assert_eq!(status, 201, "{answer}");
    }
    assert_eq!(taskd.all_tasks().len(), 1, "the replay created nothing");
}
