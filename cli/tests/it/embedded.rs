//! End to end on the embedded platform: the real `taskd` on SQLite and the real `taskctl`.

use crate::common;

use std::time::Duration;

use common::{Daemon, wait_child, wait_until};
use serde_json::{Value, json};

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn echo_wait_prints_the_payload_and_exits_0() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let run = taskd.taskctl(&[
        "submit",
        "echo",
        "-p",
        "msg=hello",
        "-p",
        "n:=3",
        "--wait",
        "-o",
        "table",
    ]);
    let out = run.ok();
    let result: Value = serde_json::from_str(&out).expect("the result is JSON");
    assert_eq!(result, json!({"msg": "hello", "n": 3}));

    let task = taskd
        .taskctl(&[
            "submit",
            "echo",
            "--payload",
            r#"{"x":[1]}"#,
            "--wait",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["result"], json!({"x": [1]}));
    assert_eq!(task["attempts"], 1);
}

#[test]
fn quiet_submit_prints_only_the_id_and_watch_follows_it() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let id = taskd.taskctl(&["submit", "noop", "-q"]).ok();
    assert_eq!(id.len(), 36, "{id}");
    let run = taskd.taskctl(&["watch", &id, "-o", "table"]);
    let out = run.ok();
    assert!(
        out.lines().last().unwrap_or("").contains("succeeded"),
        "{out}"
    );
    let status = taskd.taskctl(&["status", &id, "-o", "json"]).json();
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["status"], "succeeded");
}

#[test]
fn a_failing_shell_task_exits_3_with_its_error_and_keeps_its_output() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let run = taskd.shell_wait("echo to-stdout; echo to-stderr >&2; exit 7");
    let line = run.fails_with(3);
    assert!(line.contains("exited with status 7"), "{line}");
    assert!(line.contains("to-stderr"), "{line}");
    let task = run.json();
    assert_eq!(task["status"], "failed");
    assert_eq!(task["last_error"], "exited with status 7: to-stderr");

    let id = task["id"].as_str().expect("id");
    // The two pipes are read side by side, so their relative order is not fixed.
    let logs = taskd.taskctl(&["logs", id, "-o", "table"]).ok();
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["to-stderr", "to-stdout"]);
    // -o json streams one object per line.
    let json_logs = taskd.taskctl(&["logs", id, "-o", "json"]).ok();
    let streams: Vec<String> = json_logs
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")["stream"].to_string())
        .collect();
    let mut streams = streams;
    streams.sort_unstable();
    assert_eq!(streams, vec!["\"stderr\"", "\"stdout\""]);
}

#[test]
fn failed_attempts_retry_then_land_in_failed_and_can_be_retried() {
    let dir = temp();
    let taskd = Daemon::start(
        dir.path(),
        &[
            "--enable-shell",
            "--retry-base",
            "50ms",
            "--retry-max",
            "100ms",
        ],
    );
    let run = taskd.taskctl(&[
        "submit",
        "shell",
        "--max-attempts",
        "3",
        "--wait",
        "-o",
        "json",
        "--",
        "false",
    ]);
    run.fails_with(3);
    let task = run.json();
    assert_eq!(task["attempts"], 3);
    assert_eq!(task["status"], "failed");
    let id = task["id"].as_str().expect("id").to_owned();

    let retried = taskd.taskctl(&["retry", &id, "-o", "json"]).json();
    assert_eq!(retried[0]["status"], "queued");
    assert_eq!(retried[0]["attempts"], 0);
    let run = taskd.taskctl(&["watch", &id, "-o", "json"]);
    run.fails_with(3);
    assert_eq!(
        run.json()[0]["attempts"],
        3,
        "a retry gets a fresh set of attempts"
    );

    // Retrying something that has not failed is refused.
    let ok = taskd.taskctl(&["submit", "noop", "--wait", "-q"]).ok();
    let line = taskd.taskctl(&["retry", &ok]).fails_with(1);
    assert!(line.contains("only failed or cancelled"), "{line}");
}

#[test]
fn cancelling_a_running_sleep_makes_watch_exit_4_within_2s() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let id = taskd
        .taskctl(&["submit", "sleep", "-p", "ms:=60000", "-q"])
        .ok();
    wait_until("the sleep to run", Duration::from_secs(10), || {
        taskd.task(&id)["status"] == "running"
    });
    let watch = taskd.taskctl_spawn(&["watch", &id, "-o", "table"]);
    let cancel = taskd.taskctl(&["cancel", &id, "-o", "table"]).ok();
    assert!(cancel.contains("cancel requested"), "{cancel}");
    let run = wait_child(watch, Duration::from_secs(2));
    let line = run.fails_with(4);
    assert!(line.contains("was cancelled"), "{line}");
    let task = taskd.task(&id);
    assert_eq!(task["status"], "cancelled");
    assert!(task["finished_at"].is_string());

    // Cancelling a finished task is a conflict, reported on one line.
    let line = taskd.taskctl(&["cancel", &id]).fails_with(1);
    assert!(line.contains("already finished"), "{line}");
}

#[test]
fn cancelling_waiting_tasks_is_immediate() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let a = taskd
        .taskctl(&["submit", "noop", "--delay", "1h", "-q"])
        .ok();
    let b = taskd
        .taskctl(&["submit", "noop", "--at", "2099-01-01T00:00:00Z", "-q"])
        .ok();
    assert_eq!(taskd.task(&a)["status"], "scheduled");
    let out = taskd.taskctl(&["cancel", &a, &b, "-o", "table"]).ok();
    assert_eq!(
        out.lines().filter(|l| l.ends_with("cancelled")).count(),
        2,
        "{out}"
    );
    assert_eq!(taskd.taskctl(&["watch", &a, &b]).code, 4);
}

#[test]
fn timeouts_fail_the_attempt() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let run = taskd.taskctl(&[
        "submit",
        "sleep",
        "-p",
        "ms:=30000",
        "--timeout",
        "1s",
        "--max-attempts",
        "1",
        "--wait",
    ]);
    let line = run.fails_with(3);
    assert!(line.contains("timed out after 1s"), "{line}");
}

#[test]
fn a_thousand_batched_noops_all_succeed_once() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let tasks: Vec<Value> = (0..1000)
        .map(|i| json!({"kind": "noop", "labels": {"n": i.to_string()}}))
        .collect();
    let body = serde_json::to_vec(&json!({ "tasks": tasks })).expect("encode");
    let (status, answer) = taskd.http("POST", "/api/v1/tasks/batch", &body);
    assert_eq!(status, 201, "{answer}");
    let created = answer["tasks"].as_array().expect("tasks");
    assert_eq!(created.len(), 1000);
    assert_eq!(
        created[999]["labels"]["n"], "999",
        "answers keep request order"
    );

    wait_until("1000 tasks to succeed", Duration::from_secs(120), || {
        let list = taskd
            .taskctl(&[
                "list",
                "--status",
                "succeeded",
                "--limit",
                "5000",
                "-o",
                "json",
            ])
            .json();
        list["tasks"].as_array().map_or(0, Vec::len) == 1000
    });
    let list = taskd
        .taskctl(&["list", "--limit", "5000", "-o", "json"])
        .json();
    let all = list["tasks"].as_array().expect("tasks");
    assert_eq!(all.len(), 1000, "nothing extra was created");
    assert!(
        all.iter()
            .all(|t| t["attempts"] == 1 && t["status"] == "succeeded")
    );
}

#[test]
fn api_and_worker_run_as_two_processes_on_one_file() {
    let dir = temp();
    let db = format!("sqlite://{}", dir.path().join("shared.db").display());
    let api = Daemon::start_with(
        dir.path(),
        &[
            "--role",
            "api",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
        ],
    );
    let worker = Daemon::start_with(
        dir.path(),
        &[
            "--role",
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
            "--concurrency",
            "4",
        ],
    );
    // The worker serves only the probes.
    let (status, health) = worker.http("GET", "/health", b"");
    assert_eq!((status, health["role"].as_str()), (200, Some("worker")));
    assert_eq!(worker.http("GET", "/api/v1/tasks", b"").0, 404);
    assert_eq!(api.http("GET", "/ready", b"").0, 200);

    let ids: Vec<String> = (0..20)
        .map(|i| {
            api.taskctl(&["submit", "echo", "-p", &format!("i:={i}"), "-q"])
                .ok()
        })
        .collect();
    let mut args = vec!["watch", "-o", "json"];
    args.extend(ids.iter().map(String::as_str));
    let done = api.taskctl(&args).json();
    for (i, task) in done.as_array().expect("tasks").iter().enumerate() {
        assert_eq!(task["result"], json!({ "i": i }));
        assert!(
            task["worker"]
                .as_str()
                .is_some_and(|w| w.contains(&format!("-{}-", worker.pid()))),
            "{task}"
        );
    }
}

#[test]
fn kill_9_mid_run_then_restart_every_task_succeeds() {
    let dir = temp();
    let flags = ["--lease", "2s", "--concurrency", "4"];
    let mut first = Daemon::start(dir.path(), &flags);
    let tasks: Vec<Value> = (0..8)
        .map(|_| json!({"kind": "sleep", "payload": {"ms": 1500}}))
        .collect();
    let (status, answer) = first.http(
        "POST",
        "/api/v1/tasks/batch",
        &serde_json::to_vec(&json!({"tasks": tasks})).expect("encode"),
    );
    assert_eq!(status, 201);
    let ids: Vec<String> = answer["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    wait_until("four tasks to run", Duration::from_secs(10), || {
        ids.iter()
            .filter(|id| first.task(id)["status"] == "running")
            .count()
            == 4
    });
    first.kill9();

    let second = Daemon::start(dir.path(), &flags);
    let mut args = vec!["watch", "-o", "json"];
    args.extend(ids.iter().map(String::as_str));
    let run = second.taskctl(&args);
    let done = run.json();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let attempts: Vec<u64> = done
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["attempts"].as_u64().expect("attempts"))
        .collect();
    assert_eq!(
        attempts.iter().filter(|&&a| a == 2).count(),
        4,
        "{attempts:?}: the interrupted four ran again"
    );
    assert!(
        second.log().contains("stopped renewing its lease"),
        "{}",
        second.log()
    );
}

#[test]
fn sigterm_lets_the_running_task_finish_and_exits_0() {
    let dir = temp();
    let mut taskd = Daemon::start(dir.path(), &[]);
    let id = taskd
        .taskctl(&["submit", "sleep", "-p", "ms:=1000", "-q"])
        .ok();
    wait_until("the task to run", Duration::from_secs(10), || {
        taskd.task(&id)["status"] == "running"
    });
    taskd.signal("TERM");
    let status = taskd.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", taskd.log());

    let again = Daemon::start(dir.path(), &[]);
    assert_eq!(again.task(&id)["status"], "succeeded");
}

#[test]
fn idempotency_keys_return_the_first_task() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    let first = taskd
        .taskctl(&["submit", "noop", "--idempotency-key", "deploy-42", "-q"])
        .ok();
    let second = taskd
        .taskctl(&[
            "submit",
            "noop",
            "--idempotency-key",
            "deploy-42",
            "-o",
            "table",
        ])
        .ok();
    assert!(second.starts_with(&first), "{second}");
    assert!(second.contains("already exists"), "{second}");
    // The same key for different work is a conflict, not a quiet replay.
    let run = taskd.taskctl(&[
        "submit",
        "echo",
        "-p",
        "x=1",
        "--idempotency-key",
        "deploy-42",
    ]);
    assert_eq!(
        run.fails_with(1),
        "error: this idempotency key belongs to a different task; use a new key"
    );
    let list = taskd.taskctl(&["list", "-o", "json"]).json();
    assert_eq!(list["tasks"].as_array().map(Vec::len), Some(1));
}

#[test]
fn list_filters_and_tables() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &[]);
    taskd
        .taskctl(&["submit", "echo", "--queue", "mail", "--delay", "1h", "-q"])
        .ok();
    taskd.taskctl(&["submit", "noop", "--wait", "-q"]).ok();
    let table = taskd.taskctl(&["list", "-o", "table"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID "), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    let mail = taskd
        .taskctl(&["list", "--queue", "mail", "-o", "json"])
        .json();
    assert_eq!(mail["tasks"][0]["status"], "scheduled");
    assert_eq!(mail["tasks"].as_array().map(Vec::len), Some(1));
    let none = taskd.taskctl(&["list", "--status", "failed", "-o", "table"]);
    assert_eq!(none.ok(), "");
    assert!(none.stderr.contains("no tasks"));
    // Global flags work before or after the subcommand.
    let before = taskd
        .taskctl(&["-o", "json", "list", "--kind", "noop"])
        .json();
    assert_eq!(before["tasks"].as_array().map(Vec::len), Some(1));
}

#[test]
fn taskd_migrate_and_health_answer_with_their_exit_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    for expected in [
        "applied migrations 0001, 0002",
        "the schema is up to date; nothing to apply",
    ] {
        let out = std::process::Command::new(common::taskd_bin())
            .args(["migrate", "--database", &db])
            .output()
            .expect("taskd migrate");
        assert!(out.status.success(), "migrating (again) succeeds");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains(expected), "{said}");
    }
    let taskd = Daemon::start_with(dir.path(), &["--listen", "127.0.0.1:0", "--database", &db]);
    assert_eq!(
        taskd.taskctl(&["list", "-o", "id"]).ok(),
        "",
        "the migrated file serves"
    );
    let probe = |url: String| {
        std::process::Command::new(common::taskd_bin())
            .args(["health", "--url", &url])
            .output()
            .expect("taskd health")
    };
    assert!(probe(format!("{}/ready", taskd.url)).status.success());
    let missing = probe(format!("{}/nope", taskd.url));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let closed = probe("http://127.0.0.1:1/health".to_owned());
    assert_eq!(closed.status.code(), Some(1));
}

#[test]
fn taskd_outlives_a_log_reader_that_goes_away() {
    use std::io::BufRead;
    let dir = temp();
    let db = format!("sqlite://{}", dir.path().join("taskd.db").display());
    let mut child = std::process::Command::new(common::taskd_bin())
        .args(["--listen", "127.0.0.1:0", "--database", &db])
        // The failing http task below connects to a closed loopback port.
        .args(["--http-allow-cidr", "127.0.0.1/32"])
        .env_clear()
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start taskd");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("taskd logs").expect("a line");
        if let Some(at) = line.find("listening on http://") {
            let rest = &line[at + "listening on http://".len()..];
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // The reader goes away (a log shipper dies): the pipe is closed.
    drop(lines);
    // taskd keeps logging (a failing task logs a line) and keeps serving.
    let body = br#"{"kind":"http","max_attempts":1,"payload":{"url":"http://127.0.0.1:1/"}}"#;
    let (status, task) = common::raw_http(&addr, "POST", "/api/v1/tasks", body, None);
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().expect("id").to_owned();
    common::wait_until(
        "the task fails and is logged",
        Duration::from_secs(30),
        || {
            common::raw_http(&addr, "GET", &format!("/api/v1/tasks/{id}"), b"", None).1["status"]
                == "failed"
        },
    );
    assert_eq!(common::raw_http(&addr, "GET", "/health", b"", None).0, 200);
    // And it still stops cleanly.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "taskd did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
