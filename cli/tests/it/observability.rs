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

/// A small OTLP/HTTP receiver: takes `POST /v1/traces` (protobuf) on a port of its own and
/// keeps every span it is sent, with its service's name.
struct Collector {
    url: String,
    spans: std::sync::Arc<std::sync::Mutex<Vec<(String, Span)>>>,
}

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

impl Collector {
    fn start() -> Collector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || serve(stream, &sink));
            }
        });
        Collector { url, spans }
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Answers the requests of one connection (HTTP/1.1, kept alive), decoding each body.
fn serve(stream: std::net::TcpStream, sink: &std::sync::Mutex<Vec<(String, Span)>>) {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if line.starts_with("POST /v1/traces")
            && let Ok(request) = <ExportTraceServiceRequest as prost::Message>::decode(&body[..])
            && let Ok(mut sink) = sink.lock()
        {
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    sink.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's string attribute.
fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Any::StringValue(text)) => Some(text.clone()),
            Some(Any::IntValue(n)) => Some(n.to_string()),
            _ => None,
        })
}

/// The spans of `trace` (hex), by name.
fn in_trace<'a>(spans: &'a [(String, Span)], trace: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == trace)
        .map(|(_, s)| s)
        .collect()
}

/// Stops taskd processes gracefully, which flushes their exporters.
fn stop(processes: &mut [&mut Daemon]) {
    for process in processes {
        process.signal("TERM");
        assert!(
            process
                .wait_exit(std::time::Duration::from_secs(30))
                .success()
        );
    }
}

/// The span of the submit in `trace`.
fn submit_in<'a>(spans: &'a [(String, Span)], trace: &str) -> &'a (String, Span) {
    spans
        .iter()
        .find(|(_, s)| s.name == "POST /api/v1/tasks" && hex(&s.trace_id) == trace)
        .unwrap_or_else(|| panic!("no submit span in trace {trace} among {spans:?}"))
}

/// A task's attempt span.
fn attempt_of<'a>(spans: &'a [(String, Span)], id: &str) -> &'a (String, Span) {
    spans
        .iter()
        .find(|(_, s)| s.name == "task" && attribute(s, "task_id").as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no attempt span for {id} among {spans:?}"))
}

#[test]
fn with_an_otlp_endpoint_spans_are_exported_and_a_traceparent_is_their_parent() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.clone().into()),
        ("OTEL_SERVICE_NAME", "taskd-under-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ];
    // The log level filters log lines, not the spans exported.
    let mut taskd = Daemon::start_env(
        dir.path(),
        &["--enable-shell", "--log-level", "warn,taskd::app=info"],
        &env,
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    // A shell task submitted in the caller's trace sees it as TRACEPARENT.
    let (status, answer) = taskd.http_with_header(
        "POST",
        "/api/v1/tasks",
        br#"{"kind":"shell","payload":{"argv":["sh","-c","echo tp=$TRACEPARENT"]}}"#,
        ("traceparent", traceparent.as_str()),
    );
    assert_eq!(status, 201, "{answer}");
    let shell = answer["id"].as_str().expect("id").to_owned();
    taskd.taskctl(&["watch", &shell, "-o", "json"]).ok();
    let logs = taskd.taskctl(&["logs", &shell]).ok();
    // A workflow's steps share the workflow's trace.
    let flow_trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, flow) = taskd.http_with_header(
        "POST",
        "/api/v1/workflows",
        br#"{"name":"traced","steps":[{"id":"a","kind":"noop"},{"id":"b","kind":"noop","needs":["a"]}]}"#,
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    assert_eq!(status, 201, "{flow}");
    let steps: Vec<String> = flow["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["task_id"].as_str().expect("task id").to_owned())
        .collect();
    let mut args = vec!["watch", "-o", "json"];
    args.extend(steps.iter().map(String::as_str));
    taskd.taskctl(&args).ok();
    // taskctl sends a traceparent of its own: here the one its environment gives it.
    let cli_trace = "5b8efff798038103d269b633813fc60c";
    let cli_env = [(
        "TRACEPARENT",
        format!("00-{cli_trace}-eee19b7ec3c1b174-01").into(),
    )];
    let by_cli = common::taskctl_env(
        &taskd.url,
        &["submit", "noop", "--wait", "-q"],
        dir.path(),
        &cli_env,
    )
    .ok();
    // A graceful stop flushes what the exporter holds.
    stop(&mut [&mut taskd]);

    let spans = collector.spans();
    let submit = submit_in(&spans, trace);
    assert_eq!(submit.0, r#"Some(StringValue("taskd-under-test"))"#);
    assert_eq!(hex(&submit.1.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        attribute(&submit.1, "http.response.status_code").as_deref(),
        Some("201")
    );
    // The submit's store write and the attempt's settle, each a child of its own.
    let child = |name: &str, parent: &Span| {
        spans
            .iter()
            .any(|(_, s)| s.name == name && s.parent_span_id == parent.span_id)
    };
    assert!(
        child("store.insert", &submit.1),
        "no store.insert span under the submit"
    );
    // The attempt is the submit's child, and the program got the attempt's context.
    let attempt = &attempt_of(&spans, &shell).1;
    assert_eq!(hex(&attempt.trace_id), trace);
    assert_eq!(attempt.parent_span_id, submit.1.span_id);
    assert_eq!(attribute(attempt, "kind").as_deref(), Some("shell"));
    assert!(
        child("task.settle", attempt),
        "no task.settle span under the attempt"
    );
    // The claim, in the same trace: the submit's child, as the attempt is.
    let claim = spans
        .iter()
        .find(|(_, s)| {
            s.name == "task.claim" && attribute(s, "task_id").as_deref() == Some(shell.as_str())
        })
        .unwrap_or_else(|| panic!("no claim span for {shell}"));
    assert_eq!(claim.1.parent_span_id, submit.1.span_id);
    assert!(claim.1.start_time_unix_nano <= attempt.start_time_unix_nano);
    let expected = format!("tp=00-{trace}-{}-01", hex(&attempt.span_id));
    assert!(logs.contains(&expected), "{expected} not in:\n{logs}");
    // Both steps of the workflow, in its trace.
    for step in &steps {
        assert_eq!(hex(&attempt_of(&spans, step).1.trace_id), flow_trace);
    }
    assert!(
        in_trace(&spans, flow_trace).len() >= 3,
        "the create and two steps"
    );
    // taskctl's submit and its task, in the trace taskctl sent.
    assert_eq!(hex(&attempt_of(&spans, &by_cli).1.trace_id), cli_trace);
}

#[test]
fn without_the_variables_nothing_is_exported() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // The collector listens, but nothing names it: taskd must not send a thing.
    let mut taskd = Daemon::start(dir.path(), &[]);
    let (status, _) = taskd.http_with_header(
        "POST",
        "/api/v1/tasks",
        br#"{"kind":"noop"}"#,
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    );
    assert_eq!(status, 201);
    stop(&mut [&mut taskd]);
    assert!(collector.spans().is_empty());
    // And a protocol taskd cannot speak is refused at start, with the reason.
    let out = std::process::Command::new(common::taskd_bin())
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .expect("taskd runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http/protobuf"), "{stderr}");
}

/// An HTTP target that answers 200 to everything and keeps each request's `traceparent`.
fn traceparent_target() -> (String, std::sync::mpsc::Receiver<Option<String>>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
            let mut traceparent = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("traceparent")
                {
                    traceparent = Some(value.trim().to_owned());
                }
            }
            let mut writer = stream;
            let _ = writer
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = tx.send(traceparent);
        }
    });
    (url, rx)
}

#[test]
fn a_trace_crosses_from_the_api_process_to_the_worker_process_and_on_to_an_http_target() {
    let Some(platform) =
        common::Platform::empty(common::Backend::Production, "traces across processes")
    else {
        return;
    };
    let collector = Collector::start();
    let (target, seen) = traceparent_target();
    let start = |role: &str, service: &str, extra: &[&str]| {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.clone().into()),
            ("OTEL_SERVICE_NAME", service.into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ];
        platform.spawn_with_env(role, "amqp", extra, &env)
    };
    let mut api = start("api", "taskd-api", &[]);
    let mut worker = start(
        "worker",
        "taskd-worker",
        &["--http-allow-cidr", "127.0.0.1/32"],
    );
    common::wait_until(
        "both to be ready",
        std::time::Duration::from_secs(30),
        || api.ready() == 200 && worker.ready() == 200,
    );
    let trace = "7d2a5e1ccf9b4b8f9b8e3f4a1c2d3e4f";
    let body = serde_json::json!({"kind": "http", "payload": {"url": target}}).to_string();
    let (status, answer) = api.http_with_header(
        "POST",
        "/api/v1/tasks",
        body.as_bytes(),
        ("traceparent", &format!("00-{trace}-1111111111111111-01")),
    );
    assert_eq!(status, 201, "{answer}");
    let id = answer["id"].as_str().expect("id").to_owned();
    let done = api.taskctl(&["watch", &id, "-o", "json"]).json();
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    let sent = seen
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the target was called")
        .expect("with a traceparent");
    stop(&mut [&mut api, &mut worker]);

    let spans = collector.spans();
    let submit = submit_in(&spans, trace);
    assert_eq!(submit.0, r#"Some(StringValue("taskd-api"))"#);
    let (service, attempt) = attempt_of(&spans, &id);
    assert_eq!(service, r#"Some(StringValue("taskd-worker"))"#);
    assert_eq!(
        hex(&attempt.trace_id),
        trace,
        "the worker joined the API's trace"
    );
    assert_eq!(attempt.parent_span_id, submit.1.span_id);
    // The target got the attempt's context: the same trace, the attempt as parent.
    assert_eq!(sent, format!("00-{trace}-{}-01", hex(&attempt.span_id)));
}
