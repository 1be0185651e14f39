//! Observability end to end: Prometheus metrics after a few tasks (and accepted by
//! `promtool check metrics`), the alert rules under `promtool test rules`, JSON log lines
//! that carry the task's identity, and `taskctl bench` on a small load (its report's shape,
//! not its figures: those belong in the benchmark report).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common;

use common::Daemon;
use serde_json::Value;

/// Prometheus's `promtool` (Debian's `prometheus` package, which
/// scripts/install-test-tools.sh installs), or None when it is missing (skipped, or a failure
/// when services are required).
fn promtool(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        taskplane_testkit::skip(&format!(
            "{test}: promtool is not installed (scripts/install-test-tools.sh installs Debian's prometheus package)"
        ));
    }
    found
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool("alert rules") else {
        return;
    };
    let dir = repo().join("compose/prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        assert!(text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
    // Every alert has a runbook entry in README.
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).expect("alerts.yml");
    for alert in rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
    {
        assert!(
            readme.contains(&format!("**{alert}**")),
            "README has no runbook entry for {alert}"
        );
    }
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let Some(promtool) = promtool("promtool check metrics") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    taskd
        .taskctl(&["submit", "echo", "-p", "a=1", "--wait", "-q"])
        .ok();
    taskd
        .taskctl(&[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "0 3 * * *",
            "noop",
        ])
        .ok();
    let (status, body) = taskd.http("GET", "/metrics", b"");
    assert_eq!(status, 200);
    let text = body.as_str().expect("text").to_owned();
    for expected in [
        r#"taskplane_queue_oldest_ready_seconds{queue="default"} 0"#,
        r#"taskplane_workers_live{kind="local"} 1"#,
        r#"taskplane_workers_live{kind="remote"} 0"#,
        r#"taskplane_schedule_lag_seconds{schedule="nightly"} 0"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write the metrics");
    let out = check.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );
}

#[test]
fn metrics_count_tasks_by_queue_kind_and_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(
        dir.path(),
        &[
            "--retry-base",
            "10ms",
            "--retry-max",
            "20ms",
            "--queues",
            "default,mail",
            // The failing http task below connects to a closed loopback port.
            "--http-allow-cidr",
            "127.0.0.1/32",
        ],
    );
    for _ in 0..3 {
        taskd
            .taskctl(&["submit", "echo", "--queue", "mail", "--wait", "-q"])
            .ok();
    }
    taskd
        .taskctl(&["submit", "sleep", "-p", "ms=nope", "-q"])
        .fails_with(1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("url=http://127.0.0.1:{port}/");
    taskd
        .taskctl(&[
            "submit",
            "http",
            "-p",
            &url,
            "--max-attempts",
            "2",
            "--wait",
            "-q",
        ])
        .fails_with(3);
    let (status, body) = taskd.http("GET", "/metrics", b"");
    assert_eq!(status, 200);
    let text = body.as_str().expect("text");
    for expected in [
        r#"taskplane_tasks_submitted_total{queue="mail",kind="echo"} 3"#,
        r#"taskplane_tasks_finished_total{queue="mail",kind="echo",status="succeeded"} 3"#,
        r#"taskplane_tasks_finished_total{queue="default",kind="http",status="retrying"} 1"#,
        r#"taskplane_tasks_finished_total{queue="default",kind="http",status="failed"} 1"#,
        r#"taskplane_task_duration_seconds_count{queue="mail",kind="echo"} 3"#,
        r#"taskplane_queue_wait_seconds_count{queue="mail",kind="echo"} 3"#,
        r#"taskplane_queue_depth{queue="mail",status="succeeded"} 3"#,
        r#"taskplane_http_request_duration_seconds_count{method="POST",route="/api/v1/tasks",status="201"} 4"#,
        r#"taskplane_http_request_duration_seconds_count{method="POST",route="/api/v1/tasks",status="400"} 1"#,
        "taskplane_worker_busy_slots 0",
        "taskplane_deliveries_dropped_total 0",
        "# TYPE taskplane_task_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
}

#[test]
fn json_logs_carry_the_task_on_every_task_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(
        dir.path(),
        &[
            "--log-format",
            "json",
            "--log-level",
            "debug,sqlx=warn,hyper=warn",
            "--queues",
            "jobs",
        ],
    );
    let id = taskd
        .taskctl(&[
            "submit", "sleep", "-p", "ms:=10", "--queue", "jobs", "--wait", "-q",
        ])
        .ok();
    common::wait_until(
        "the attempt's log lines",
        std::time::Duration::from_secs(10),
        || taskd.log().contains("attempt ended"),
    );
    let mut task_lines = 0;
    let mut started = false;
    for line in taskd.log().lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        // Fields are values, not Rust's debug text of one (`["jobs"]`, `Some(…)`, `90s`
        // structs): a log pipeline reads them as they are.
        for (name, field) in value["fields"].as_object().expect("fields") {
            let text = field.as_str().unwrap_or("");
            assert!(
                !(text.starts_with('[') || text.starts_with("Some(") || text.contains(" { ")),
                "field {name} is debug text: {line}"
            );
        }
        match value["fields"]["message"].as_str() {
            Some("worker started") => {
                started = true;
                assert_eq!(value["fields"]["queues"], "jobs", "{line}");
                assert!(value["fields"]["concurrency"].is_u64(), "{line}");
            }
            Some("applied schema migrations") => {
                let applied = value["fields"]["applied"].as_str().unwrap_or("");
                assert!(
                    applied.split(',').all(|v| v.parse::<u32>().is_ok()),
                    "{line}"
                );
            }
            _ => {}
        }
        let message = value["fields"]["message"].as_str().unwrap_or("");
        if message.starts_with("attempt ") {
            task_lines += 1;
            let span = &value["span"];
            assert_eq!(span["task_id"], id.as_str(), "{line}");
            assert_eq!(span["kind"], "sleep", "{line}");
            assert_eq!(span["queue"], "jobs", "{line}");
            assert_eq!(span["attempt"], 1, "{line}");
            assert!(
                span["worker"].as_str().is_some_and(|w| !w.is_empty()),
                "{line}"
            );
        }
    }
    assert!(started, "no 'worker started' line:\n{}", taskd.log());
    assert!(
        task_lines >= 2,
        "expected the attempt's lines:\n{}",
        taskd.log()
    );
}

#[test]
fn bench_reports_every_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    for batch in ["1", "25"] {
        let report = taskd
            .taskctl(&[
                "bench",
                "--tasks",
                "50",
                "--concurrency",
                "2",
                "--batch",
                batch,
                "-o",
                "json",
            ])
            .json();
        assert_eq!(report["tasks"], 50);
        assert_eq!(report["succeeded"], 50);
        for field in ["submitted_per_sec", "completed_per_sec"] {
            assert!(
                report[field].as_f64().is_some_and(|v| v > 0.0),
                "{field}: {report}"
            );
        }
        for field in ["submit_ms", "queue_wait_ms", "end_to_end_ms"] {
            for p in ["p50", "p90", "p99", "max"] {
                assert!(
                    report[field][p].as_f64().is_some_and(|v| v >= 0.0),
                    "{field}.{p}: {report}"
                );
            }
            assert!(
                report[field]["p50"].as_f64() <= report[field]["max"].as_f64(),
                "{report}"
            );
        }
    }
    assert_eq!(taskd.all_tasks().len(), 100);
    let table = taskd.taskctl(&["bench", "--tasks", "10"]).ok();
    assert!(table.contains("end to end"), "{table}");
}
