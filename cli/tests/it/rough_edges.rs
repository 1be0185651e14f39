//! The CLI's rough edges a new user met first (issue "What a new user meets first"): each
//! fixed one is kept here as a test.

use crate::common;

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

#[test]
fn tasks_are_listed_by_label_selectors() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let submit = |labels: &[&str]| {
        let mut args = vec!["submit", "noop", "-q"];
        for label in labels {
            args.extend(["--label", label]);
        }
        taskd.taskctl(&args).ok()
    };
    let ops_prod = submit(&["team=ops", "env=prod"]);
    let ops_dev = submit(&["team=ops", "env=dev"]);
    let web = submit(&["team=web"]);
    let bare = submit(&[]);

    let ids = |args: &[&str]| {
        let mut all = vec!["list", "-o", "id"];
        all.extend(args);
        taskd.taskctl(&all).ok()
    };
    assert_eq!(ids(&["-l", "team=ops"]), format!("{ops_dev}\n{ops_prod}"));
    assert_eq!(ids(&["-l", "team=ops,env=prod"]), ops_prod);
    assert_eq!(ids(&["-l", "team=ops", "-l", "env!=prod"]), ops_dev);
    assert_eq!(ids(&["--selector", "!team"]), bare);
    assert_eq!(ids(&["-l", "team,!env"]), web);
    assert_eq!(ids(&["-l", "team=nobody"]), "");

    // The API: repeated `label`, all must match; JSON for scripts.
    let (status, page) = taskd.http("GET", "/api/v1/tasks?label=team=ops&label=env", b"");
    assert_eq!(status, 200, "{page}");
    let found: Vec<&str> = page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(found, [ops_dev.as_str(), ops_prod.as_str()]);

    // A bad selector: one line naming it, and a 400 from the API.
    let line = taskd.taskctl(&["list", "-l", "bad key=x"]).fails_with(1);
    assert!(line.contains("label selector 'bad key=x'"), "{line}");
    let (status, answer) = taskd.http("GET", "/api/v1/tasks?label=%21", b"");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_query", "{answer}");
}

#[test]
fn events_replay_the_last_ones_or_a_recent_window() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let mut tasks = Vec::new();
    for kind in ["noop", "echo", "noop"] {
        let out = taskd.taskctl(&["submit", kind, "--wait", "-q"]).ok();
        tasks.push(out.lines().next().unwrap_or_default().to_owned());
    }
    let events = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["events", "-o", "jsonl"];
        all.extend(args);
        taskd
            .taskctl(&all)
            .ok()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON event"))
            .collect()
    };
    // Each task was created (queued), started and succeeded: nine events, in order.
    let window = events(&["--since", "10m", "-n", "9"]);
    let seqs: Vec<i64> = window
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let ids: std::collections::BTreeSet<&str> = window
        .iter()
        .map(|e| e["task"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, tasks.iter().map(String::as_str).collect());
    assert_eq!(window.last().expect("an event")["type"], "succeeded");

    // --last N: the newest N, oldest first; with a filter, the newest N that match.
    let last = events(&["--last", "2", "-n", "2"]);
    assert_eq!(last, window[7..]);
    let echo = events(&["--last", "3", "--kind", "echo", "-n", "3"]);
    assert!(
        echo.iter().all(|e| e["task"]["id"] == tasks[1].as_str()),
        "{echo:?}"
    );
    let kinds: Vec<&str> = echo
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["created", "started", "succeeded"]);

    let line = taskd.taskctl(&["events", "--last", "20000"]).fails_with(2);
    assert!(line.contains("--last"), "{line}");
}
