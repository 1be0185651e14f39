//! The task lifecycle, end to end through `taskctl`, on both backends: every rule runs once
//! on the embedded platform and once on PostgreSQL + RabbitMQ (skipped, or failed under
//! TASKPLANE_REQUIRE_SERVICES=1, when those are missing).

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Backend, Platform, wait_until};
use serde_json::Value;

fn instant(task: &Value, field: &str) -> DateTime<Utc> {
    task[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("{field} is not a time in {task}"))
}

/// A port nothing listens on, for http tasks that must fail.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The worker flag that lets http tasks reach the closed port: the http kind refuses
/// loopback addresses by default.
const HTTP_TO_LOOPBACK: [&str; 2] = ["--http-allow-cidr", "127.0.0.1/32"];

fn failing_http(port: u16) -> String {
    format!("url=http://127.0.0.1:{port}/")
}

fn fails_three_times_then_lands_in_the_dead_letter_set(backend: Backend) {
    let Some(platform) = Platform::start(backend, "dead_letters", &[], &HTTP_TO_LOOPBACK) else {
        return;
    };
    let api = platform.api();
    let port = closed_port();
    let param = failing_http(port);
    let run = api.taskctl(&[
        "submit",
        "http",
        "-p",
        &param,
        "--retry-base",
        "20ms",
        "--retry-max",
        "100ms",
        "--wait",
        "-o",
        "json",
    ]);
    run.fails_with(3);
    let task = run.json();
    assert_eq!(task["status"], "failed");
    assert_eq!(task["attempts"], 3);
    assert_eq!(task["retry_base_ms"], 20);
    assert!(
        task["last_error"]
            .as_str()
            .unwrap_or("")
            .contains(&port.to_string()),
        "{task}"
    );
    let id = task["id"].as_str().expect("id").to_owned();

    let listed = api.taskctl(&["dlq", "list", "-o", "table"]).ok();
    assert!(listed.contains(&id) && listed.contains("3/3"), "{listed}");
    api.taskctl(&["submit", "noop", "--wait", "-q"]).ok();
    let dead = api.taskctl(&["dlq", "list", "-o", "json"]).json();
    assert_eq!(
        dead["tasks"].as_array().map(Vec::len),
        Some(1),
        "only the failed task"
    );

    // Bulk replay: narrowed by kind, then everything.
    let none = api
        .taskctl(&["dlq", "retry", "--all", "--kind", "noop", "-o", "json"])
        .json();
    assert_eq!(none["count"], 0);
    let again = api.taskctl(&["dlq", "retry", "--all", "-o", "table"]).ok();
    assert_eq!(again, "1 failed task queued again");
    let run = api.taskctl(&["watch", &id, "-o", "json"]);
    run.fails_with(3);
    assert_eq!(run.json()[0]["attempts"], 3, "a replay gets fresh attempts");

    let purged = api
        .taskctl(&["dlq", "purge", "--older-than", "0s", "-o", "json"])
        .json();
    assert_eq!(purged["count"], 1);
    api.taskctl(&["status", &id]).fails_with(1);
    assert!(
        api.taskctl(&["dlq", "list", "-o", "table"])
            .stderr
            .contains("no failed tasks")
    );
}

fn a_delayed_task_starts_within_a_second_of_its_time(backend: Backend) {
    let Some(platform) = Platform::start(backend, "delays", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let run = api.taskctl(&["submit", "noop", "--delay", "2s", "--wait", "-o", "json"]);
    let task = run.json();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let waited = instant(&task, "started_at") - instant(&task, "created_at");
    assert!(
        (2000..3000).contains(&waited.num_milliseconds()),
        "started {waited} after submit, want [2 s, 3 s)"
    );

    let at = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let id = api.taskctl(&["submit", "noop", "--at", &at, "-q"]).ok();
    assert_eq!(api.task(&id)["status"], "scheduled");
    let task = api.taskctl(&["watch", &id, "-o", "json"]).json()[0].clone();
    let late = instant(&task, "started_at") - instant(&task, "run_at");
    assert!(
        (0..1000).contains(&late.num_milliseconds()),
        "started {late} after run_at"
    );
}

fn a_high_priority_task_overtakes_on_a_single_slot(backend: Backend) {
    let Some(platform) = Platform::start(backend, "priorities", &[], &["--concurrency", "1"])
    else {
        return;
    };
    let api = platform.api();
    let blocker = api
        .taskctl(&["submit", "sleep", "-p", "ms:=3000", "-q"])
        .ok();
    wait_until("the blocker to run", Duration::from_secs(15), || {
        api.task(&blocker)["status"] == "running"
    });
    let low: Vec<String> = (0..5)
        .map(|_| {
            api.taskctl(&["submit", "noop", "--priority", "-1", "-q"])
                .ok()
        })
        .collect();
    let high = api
        .taskctl(&["submit", "noop", "--priority", "10", "-q"])
        .ok();
    let mut all = low.clone();
    all.push(high.clone());
    let mut args = vec!["watch", "-o", "json"];
    args.extend(all.iter().map(String::as_str));
    let done = api.taskctl(&args).json();
    let started: Vec<DateTime<Utc>> = done
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| instant(t, "started_at"))
        .collect();
    let high_started = started[5];
    assert!(
        started[..5].iter().all(|low| high_started <= *low),
        "the high-priority task started after a low one: {started:?}"
    );
}

fn twenty_concurrent_submits_with_one_key_create_one_task(backend: Backend) {
    let Some(platform) = Platform::start(backend, "idempotency", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let children: Vec<_> = (0..20)
        .map(|_| {
            api.taskctl_spawn(&[
                "submit",
                "noop",
                "--idempotency-key",
                "nightly-2026-11-23",
                "-q",
            ])
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|child| common::wait_child(child, Duration::from_secs(30)).ok())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(api.all_tasks().len(), 1);
    // The header works as well as the field.
    let (status, task) = api.http_with_header(
        "POST",
        "/api/v1/tasks",
        br#"{"kind":"noop"}"#,
        ("Idempotency-Key", "nightly-2026-11-23"),
    );
    assert_eq!((status, task["id"].as_str()), (200, Some(ids[0].as_str())));
}

fn cancellation_is_exact_in_every_status(backend: Backend) {
    let Some(platform) = Platform::start(backend, "cancellation", &[], &HTTP_TO_LOOPBACK) else {
        return;
    };
    let api = platform.api();
    let scheduled = api.taskctl(&["submit", "noop", "--delay", "1h", "-q"]).ok();
    let queued = api
        .taskctl(&["submit", "noop", "--queue", "nobody-consumes-this", "-q"])
        .ok();
    let param = failing_http(closed_port());
    let retrying = api
        .taskctl(&[
            "submit",
            "http",
            "-p",
            &param,
            // The delay is drawn from [0, 7 days] (full jitter): under a minute once in
            // 10,080 runs.
            "--retry-base",
            "168h",
            "--retry-max",
            "168h",
            "-q",
        ])
        .ok();
    wait_until(
        "the failing task to back off",
        Duration::from_secs(15),
        || api.task(&retrying)["status"] == "retrying",
    );
    // Between attempts the task shows its error and when it runs next.
    let backing_off = api.task(&retrying);
    assert!(
        backing_off["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("http:")),
        "{backing_off}"
    );
    assert!(
        instant(&backing_off, "run_at") > Utc::now() + chrono::Duration::minutes(1),
        "the next attempt waits for the backoff: {backing_off}"
    );
    assert_eq!(backing_off["attempts"], 1);
    assert_eq!(api.task(&queued)["status"], "queued");
    for id in [&scheduled, &queued, &retrying] {
        let out = api.taskctl(&["cancel", id, "-o", "table"]).ok();
        assert!(out.ends_with(": cancelled"), "{out}");
        assert_eq!(api.task(id)["status"], "cancelled");
    }

    let running = api
        .taskctl(&["submit", "sleep", "-p", "ms:=60000", "-q"])
        .ok();
    wait_until("the sleep to run", Duration::from_secs(15), || {
        api.task(&running)["status"] == "running"
    });
    let watch = api.taskctl_spawn(&["watch", &running, "-o", "table"]);
    api.taskctl(&["cancel", &running]).ok();
    // The worker running it hears of the cancel within a second, wherever it runs.
    let line = common::wait_child(watch, Duration::from_secs(2)).fails_with(4);
    assert!(line.contains("cancelled"), "{line}");

    let line = api.taskctl(&["cancel", &scheduled]).fails_with(1);
    assert!(line.contains("already finished (cancelled)"), "{line}");
    let (status, body) = api.http("POST", &format!("/api/v1/tasks/{running}/cancel"), b"");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_cancellable"))
    );
}

fn sigterm_lets_a_running_task_finish_and_exits_0(backend: Backend) {
    let Some(mut platform) = Platform::start(backend, "sigterm", &[], &[]) else {
        return;
    };
    let id = platform
        .api()
        .taskctl(&["submit", "sleep", "-p", "ms:=1500", "-q"])
        .ok();
    wait_until("the task to run", Duration::from_secs(15), || {
        platform.api().task(&id)["status"] == "running"
    });
    platform.worker().signal("TERM");
    let status = platform.worker().wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    if !platform.api_outlives_worker() {
        platform.start_worker(&[]);
    }
    let task = platform.api().task(&id);
    assert_eq!(
        (task["status"].as_str(), task["attempts"].as_u64()),
        (Some("succeeded"), Some(1))
    );
}

fn after_the_grace_period_tasks_are_requeued_without_counting(backend: Backend) {
    let Some(mut platform) = Platform::start(backend, "grace", &[], &["--grace", "300ms"]) else {
        return;
    };
    let id = platform
        .api()
        .taskctl(&["submit", "sleep", "-p", "ms:=3000", "-q"])
        .ok();
    wait_until("the task to run", Duration::from_secs(15), || {
        platform.api().task(&id)["status"] == "running"
    });
    platform.worker().signal("TERM");
    let status = platform.worker().wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    if platform.api_outlives_worker() {
        let task = platform.api().task(&id);
        assert_eq!(
            (task["status"].as_str(), task["attempts"].as_u64()),
            (Some("queued"), Some(0))
        );
    }
    platform.start_worker(&[]);
    let run = platform.api().taskctl(&["watch", &id, "-o", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.json()[0]["attempts"],
        1,
        "the interrupted attempt did not count"
    );
}

fn a_second_signal_exits_at_once_and_hands_tasks_back(backend: Backend) {
    let Some(mut platform) = Platform::start(backend, "second_signal", &[], &[]) else {
        return;
    };
    let id = platform
        .api()
        .taskctl(&["submit", "sleep", "-p", "ms:=60000", "-q"])
        .ok();
    wait_until("the task to run", Duration::from_secs(15), || {
        platform.api().task(&id)["status"] == "running"
    });
    platform.worker().signal("TERM");
    wait_until("the drain to start", Duration::from_secs(10), || {
        platform.worker().log().contains("shutting down gracefully")
    });
    platform.worker().signal("TERM");
    let status = platform.worker().wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    if !platform.api_outlives_worker() {
        platform.start_worker(&["--concurrency", "1", "--queues", "elsewhere"]);
    }
    let task = platform.api().task(&id);
    assert_eq!(
        (task["status"].as_str(), task["attempts"].as_u64()),
        (Some("queued"), Some(0)),
        "{task}"
    );
}

fn finished_tasks_are_deleted_after_the_retention_period(backend: Backend) {
    let Some(platform) = Platform::start(backend, "retention", &[], &["--retention", "2s"]) else {
        return;
    };
    let api = platform.api();
    let id = api.taskctl(&["submit", "noop", "--wait", "-q"]).ok();
    let waiting = api.taskctl(&["submit", "noop", "--delay", "1h", "-q"]).ok();
    wait_until(
        "the finished task to be deleted",
        Duration::from_secs(30),
        || api.http("GET", &format!("/api/v1/tasks/{id}"), b"").0 == 404,
    );
    assert_eq!(
        api.task(&waiting)["status"],
        "scheduled",
        "unfinished tasks stay"
    );
}

fn cancelling_a_shell_task_kills_its_processes(backend: Backend) {
    let Some(platform) = Platform::start(
        backend,
        "shell_kill",
        &["--enable-shell"],
        &["--enable-shell"],
    ) else {
        return;
    };
    let api = platform.api();
    let pidfile = platform.dir.path().join("child.pid");
    let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
    let id = api
        .taskctl(&["submit", "shell", "-q", "--", "sh", "-c", &script])
        .ok();
    wait_until("the grandchild to start", Duration::from_secs(15), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|p| !p.trim().is_empty())
    });
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .to_owned();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    api.taskctl(&["cancel", &id]).ok();
    let run = api.taskctl(&["watch", &id]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    wait_until(
        "the grandchild to be killed",
        Duration::from_secs(5),
        || {
            // A killed child lingers as a zombie until init reaps it; both mean it is not running.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true)
        },
    );
}

on_both_backends!(
    cancelling_a_shell_task_kills_its_processes,
    fails_three_times_then_lands_in_the_dead_letter_set,
    a_delayed_task_starts_within_a_second_of_its_time,
    a_high_priority_task_overtakes_on_a_single_slot,
    twenty_concurrent_submits_with_one_key_create_one_task,
    cancellation_is_exact_in_every_status,
    sigterm_lets_a_running_task_finish_and_exits_0,
    after_the_grace_period_tasks_are_requeued_without_counting,
    a_second_signal_exits_at_once_and_hands_tasks_back,
    finished_tasks_are_deleted_after_the_retention_period,
);
