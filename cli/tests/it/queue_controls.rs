//! Queue controls end to end, on both backends, with two worker processes (production: an
//! API and two workers on PostgreSQL and RabbitMQ; embedded: taskd and a second worker
//! process on the same SQLite file): pause and resume, a running limit, a rate, concurrency
//! keys, settings that survive a restart, and bad input.

use std::time::Duration;

use crate::common;

use common::{Backend, Daemon, Platform, instant, wait_until};
use serde_json::{Value, json};

/// Workers of 8 slots serving two queues besides `default`.
const WORKER: &[&str] = &["--concurrency", "8", "--queues", "default,limited,other"];

/// The platform with a second worker process beside the first.
fn two_workers(backend: Backend, test: &str) -> Option<(Platform, Daemon)> {
    let platform = Platform::start(backend, test, &[], WORKER)?;
    let second = platform.spawn("worker", WORKER);
    wait_until("two live workers", Duration::from_secs(30), || {
        let (_, list) = platform.api().http("GET", "/api/v1/workers", b"");
        list["workers"].as_array().is_some_and(|w| w.len() >= 2)
    });
    Some((platform, second))
}

fn sleeps(queue: &str, ms: u64, n: usize, extra: Value) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let mut task = json!({"kind": "sleep", "queue": queue, "payload": {"ms": ms}});
            if let (Some(task), Some(extra)) = (task.as_object_mut(), extra.as_object()) {
                task.extend(extra.clone());
            }
            task
        })
        .collect()
}

fn wait_done(api: &Daemon, ids: &[String], timeout: Duration) -> Vec<Value> {
    wait_until("every task succeeded", timeout, || {
        ids.iter().all(|id| api.task(id)["status"] == "succeeded")
    });
    ids.iter().map(|id| api.task(id)).collect()
}

/// The most of `tasks` that ran at one instant, from their start and finish times.
fn most_at_once(tasks: &[&Value]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for task in tasks {
        let started = instant(&task["started_at"]).timestamp_millis();
        let finished = instant(&task["finished_at"]).timestamp_millis();
        edges.push((started, 1));
        // A finish at the instant of a start comes first: they did not overlap.
        edges.push((finished, -1));
    }
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

fn queue_row(api: &Daemon, queue: &str) -> Value {
    let list = api.taskctl(&["queues", "-o", "json"]).json();
    list["queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|q| q["queue"] == queue))
        .cloned()
        .unwrap_or_else(|| panic!("no queue {queue} in {list}"))
}

/// Pausing a queue stops both worker processes taking its tasks while they keep running
/// another queue's; resuming releases them; submits are accepted throughout.
fn pause_holds_across_processes_and_resume_releases(backend: Backend) {
    let Some((platform, _second)) = two_workers(backend, "queue_pause") else {
        return;
    };
    let api = platform.api();
    let paused = api.taskctl(&["queues", "pause", "other"]).ok();
    assert_eq!(paused.trim(), "queue other: paused");
    let held = api.submit_batch(&sleeps("other", 10, 6, json!({})));
    // Work keeps flowing elsewhere: both processes take these (8 slots each, 40 tasks of
    // 100 ms) while the paused queue's wait.
    let busy = api.submit_batch(&sleeps("default", 100, 40, json!({})));
    let done = wait_done(api, &busy, Duration::from_secs(60));
    let workers: std::collections::HashSet<&str> =
        done.iter().filter_map(|t| t["worker"].as_str()).collect();
    assert_eq!(workers.len(), 2, "both processes ran tasks meanwhile");
    for id in &held {
        assert_eq!(
            api.task(id)["status"],
            "queued",
            "a paused queue's task stays ready"
        );
    }
    let row = queue_row(api, "other");
    assert_eq!(row["paused"], true);
    assert_eq!(row["depth"], 6);
    let table = api.taskctl(&["queues"]).ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("other") && l.contains("paused")),
        "{table}"
    );

    let resumed = api.taskctl(&["queues", "resume", "other"]).ok();
    assert_eq!(resumed.trim(), "queue other: no controls");
    wait_done(api, &held, Duration::from_secs(30));
    assert_eq!(queue_row(api, "other")["paused"], false);
}

/// A running limit of 2 over two worker processes of 8 slots each: never more than 2 of
/// the queue's tasks run at once, and 2 do.
fn max_running_holds_across_two_workers(backend: Backend) {
    let Some((platform, _second)) = two_workers(backend, "queue_limit") else {
        return;
    };
    let api = platform.api();
    let set = api
        .taskctl(&["queues", "set", "limited", "--max-running", "2"])
        .ok();
    assert_eq!(set.trim(), "queue limited: max 2");
    let ids = api.submit_batch(&sleeps("limited", 300, 12, json!({})));
    let done = wait_done(api, &ids, Duration::from_secs(60));
    let all: Vec<&Value> = done.iter().collect();
    assert_eq!(most_at_once(&all), 2, "at most 2, and 2 ran together");
    assert_eq!(queue_row(api, "limited")["max_running"], 2);

    // Cleared, the queue runs as wide as the slots.
    api.taskctl(&["queues", "set", "limited", "--max-running", "none"])
        .ok();
    let ids = api.submit_batch(&sleeps("limited", 500, 12, json!({})));
    let done = wait_done(api, &ids, Duration::from_secs(60));
    let all: Vec<&Value> = done.iter().collect();
    assert!(most_at_once(&all) > 2, "no limit any more");
    assert_eq!(queue_row(api, "limited")["max_running"], Value::Null);
}

/// A rate of 5 per second spreads 20 starts over at least 3 seconds (a burst of 5, then
/// one every 200 ms).
fn a_rate_spreads_the_starts(backend: Backend) {
    let Some((platform, _second)) = two_workers(backend, "queue_rate") else {
        return;
    };
    let api = platform.api();
    let set = api
        .taskctl(&["queues", "set", "limited", "--rate", "5"])
        .ok();
    assert_eq!(set.trim(), "queue limited: 5/s");
    let ids = api.submit_batch(&sleeps("limited", 1, 20, json!({})));
    let done = wait_done(api, &ids, Duration::from_secs(60));
    let mut starts: Vec<i64> = done
        .iter()
        .map(|t| instant(&t["started_at"]).timestamp_millis())
        .collect();
    starts.sort();
    let spread = starts[19] - starts[0];
    assert!(spread >= 3_000, "20 starts at 5/s took {spread} ms");
    assert!(spread < 10_000, "but they did start: {spread} ms");
    // A bucket of 5 filling at 5/s: no stretch of time holds more starts than the burst
    // plus what filled in it.
    for i in 0..starts.len() {
        for j in i..starts.len() {
            let secs = (starts[j] - starts[i]) as f64 / 1000.0;
            let count = (j - i + 1) as f64;
            assert!(
                count <= 5.0 + 5.0 * secs + 0.01,
                "{count} starts in {secs} s: {starts:?}"
            );
        }
    }
    assert_eq!(queue_row(api, "limited")["rate_per_sec"], 5.0);
}

/// Tasks with one concurrency key never overlap, across queues and processes, while
/// another key runs beside them within its own limit.
fn concurrency_keys_never_overlap(backend: Backend) {
    let Some((platform, _second)) = two_workers(backend, "queue_keys") else {
        return;
    };
    let api = platform.api();
    let mut tasks = sleeps("default", 150, 4, json!({"concurrency_key": "host=web1"}));
    tasks.extend(sleeps(
        "other",
        150,
        4,
        json!({"concurrency_key": "host=web1"}),
    ));
    tasks.extend(sleeps(
        "default",
        300,
        6,
        json!({"concurrency_key": "host=web2", "concurrency_limit": 2}),
    ));
    let ids = api.submit_batch(&tasks);
    // And one through taskctl.
    let one = api
        .taskctl(&[
            "submit",
            "sleep",
            "-p",
            "ms:=150",
            "--queue",
            "other",
            "--concurrency-key",
            "host=web1",
            "-o",
            "id",
        ])
        .ok();
    let mut web1_ids: Vec<String> = ids[..8].to_vec();
    web1_ids.push(one.trim().to_owned());
    let web1 = wait_done(api, &web1_ids, Duration::from_secs(60));
    let web2 = wait_done(api, &ids[8..], Duration::from_secs(60));
    assert_eq!(web1[8]["concurrency_key"], "host=web1");
    assert_eq!(web1[8]["concurrency_limit"], 1);
    assert_eq!(most_at_once(&web1.iter().collect::<Vec<_>>()), 1);
    assert_eq!(most_at_once(&web2.iter().collect::<Vec<_>>()), 2);
}

/// Settings persist in the database: a restart keeps them, for a queue with no task too.
fn settings_survive_a_restart(backend: Backend) {
    let Some(mut platform) = Platform::start(backend, "queue_restart", &[], &[]) else {
        return;
    };
    let api = platform.api();
    api.taskctl(&[
        "queues",
        "set",
        "nothing-yet",
        "--max-running",
        "3",
        "--rate",
        "0.5",
    ])
    .ok();
    api.taskctl(&["queues", "pause", "nothing-yet"]).ok();
    platform.worker().kill9();
    platform.start_worker(&[]);
    let row = queue_row(platform.api(), "nothing-yet");
    assert_eq!(row["paused"], true);
    assert_eq!(row["max_running"], 3);
    assert_eq!(row["rate_per_sec"], 0.5);
    assert_eq!(row["depth"], 0);
    let wide = platform.api().taskctl(&["queues"]).ok();
    assert!(
        wide.lines()
            .any(|l| l.starts_with("nothing-yet") && l.contains("paused, max 3, 0.5/s")),
        "{wide}"
    );
}

/// Bad input: a clear 400 from the API, one line and the usage or error code from taskctl.
fn bad_settings_are_refused(backend: Backend) {
    let Some(platform) = Platform::start(backend, "queue_bad", &[], &[]) else {
        return;
    };
    let api = platform.api();
    for (body, code, says) in [
        (r#"{"max_running": -1}"#, "invalid_request", "max_running"),
        (r#"{"max_running": 0}"#, "invalid_request", "max_running"),
        (r#"{"rate_per_sec": 0}"#, "invalid_request", "rate_per_sec"),
        (
            r#"{"rate_per_sec": -2.5}"#,
            "invalid_request",
            "rate_per_sec",
        ),
        (r#"{}"#, "invalid_request", "nothing to change"),
        (r#"{"max": 2}"#, "invalid_json", "max"),
        (r#"{"max_running": "two"}"#, "invalid_json", "max_running"),
    ] {
        let (status, answer) = api.http("PATCH", "/api/v1/queues/q", body.as_bytes());
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, answer) = api.http("POST", "/api/v1/queues/bad%20name!/pause", b"");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_name");
    let (status, answer) = api.http(
        "POST",
        "/api/v1/tasks",
        br#"{"kind":"noop","concurrency_limit":2}"#,
    );
    assert_eq!(status, 400, "a limit without a key: {answer}");
    let (status, answer) = api.http(
        "POST",
        "/api/v1/tasks",
        br#"{"kind":"noop","concurrency_key":"has space"}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        api.taskctl(&["list", "-o", "json"]).json()["tasks"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "nothing was stored"
    );

    let line = api
        .taskctl(&["queues", "set", "q", "--max-running", "-1"])
        .fails_with(2);
    assert!(line.contains("at least 1"), "{line}");
    let line = api
        .taskctl(&["queues", "set", "q", "--rate", "0"])
        .fails_with(2);
    assert!(line.contains("more than 0"), "{line}");
    let line = api.taskctl(&["queues", "set", "q"]).fails_with(2);
    assert!(
        line.contains("--max-running") || line.contains("required"),
        "{line}"
    );
    let line = api.taskctl(&["queues", "pause", "bad name!"]).fails_with(1);
    assert!(
        line.starts_with("error:") && line.contains("queue"),
        "{line}"
    );
    // Nothing was set by any of them.
    assert!(
        api.taskctl(&["queues", "-o", "json"]).json()["queues"]
            .as_array()
            .is_some_and(|q| q
                .iter()
                .all(|q| q["paused"] == false && q["max_running"].is_null()))
    );
}

/// Remote workers' leases keep the controls too: a running limit counts the leased tasks,
/// and a paused queue hands out none.
fn leases_keep_the_controls(backend: Backend) {
    let Some(platform) = Platform::start(backend, "queue_leases", &["--kinds", "resize"], &[])
    else {
        return;
    };
    let api = platform.api();
    api.taskctl(&["queues", "set", "limited", "--max-running", "1"])
        .ok();
    let ids = api.submit_batch(&[
        json!({"kind": "resize", "queue": "limited"}),
        json!({"kind": "resize", "queue": "limited"}),
    ]);
    let lease = |max: u32| -> Vec<Value> {
        let body = json!({"worker": "remote-1", "kinds": ["resize"], "queues": ["limited"],
                          "max": max, "wait_ms": 0});
        let (status, answer) = api.http("POST", "/api/v1/leases", body.to_string().as_bytes());
        assert_eq!(status, 200, "{answer}");
        answer["tasks"].as_array().cloned().unwrap_or_default()
    };
    let first = lease(5);
    assert_eq!(first.len(), 1, "the limit holds for leases: {first:?}");
    assert!(lease(5).is_empty(), "one runs: no second");
    let held = first[0]["lease"].as_str().expect("lease").to_owned();
    let id = first[0]["id"].as_str().expect("id").to_owned();
    let (status, answer) = api.http(
        "POST",
        &format!("/api/v1/tasks/{id}/complete"),
        json!({"lease": held, "result": {"ok": true}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    api.taskctl(&["queues", "pause", "limited"]).ok();
    assert!(lease(5).is_empty(), "a paused queue leases nothing");
    api.taskctl(&["queues", "resume", "limited"]).ok();
    let second = lease(5);
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(ids.contains(&second[0]["id"].as_str().unwrap_or("").to_owned()));
}

on_both_backends!(
    pause_holds_across_processes_and_resume_releases,
    max_running_holds_across_two_workers,
    a_rate_spreads_the_starts,
    concurrency_keys_never_overlap,
    settings_survive_a_restart,
    bad_settings_are_refused,
    leases_keep_the_controls,
);
