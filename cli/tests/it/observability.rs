//! Observability end to end: Prometheus metrics after a few tasks, JSON log lines that carry
//! the task's identity, and `taskctl bench` on a small load (its report's shape, not its
//! figures: those belong in the benchmark report).

use crate::common;

use common::Daemon;
use serde_json::Value;

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
    for line in taskd.log().lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
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
