//! The live control plane end to end, on both backends: the event stream, following a
//! task's output, queue depth and the worker list.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use common::{Backend, EventTail, Lines, Platform, wait_child, wait_until};
use serde_json::{Value, json};

fn at(event: &Value) -> SystemTime {
    let at: DateTime<Utc> = event["at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("no time in {event}"));
    SystemTime::from(at)
}

fn a_tasks_events_arrive_in_order_and_promptly(backend: Backend) {
    let Some(platform) = Platform::start(backend, "event_order", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let tail = EventTail::open(api, "?kind=echo", None);
    let id = api
        .taskctl(&["submit", "echo", "-p", "x=1", "--wait", "-q"])
        .ok();
    let events = tail.until(Duration::from_secs(10), |e| e["type"] == "succeeded");
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, e)| {
            assert_eq!(e["task"]["id"], id.as_str(), "the kind filter holds");
            e["type"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(kinds, ["created", "started", "succeeded"]);
    let seqs: Vec<i64> = events
        .iter()
        .map(|(_, e)| e["seq"].as_i64().unwrap_or(0))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let (arrived, succeeded) = &events[2];
    assert_eq!(succeeded["task"]["status"], "succeeded");
    if backend == Backend::Embedded {
        let delay = arrived.duration_since(at(succeeded)).unwrap_or_default();
        assert!(
            delay <= Duration::from_millis(200),
            "the success arrived {delay:?} after it happened"
        );
    }
}

fn a_client_resuming_with_last_event_id_misses_nothing(backend: Backend) {
    let Some(platform) = Platform::start(backend, "event_resume", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let first = EventTail::open(api, "", None);
    api.taskctl(&["submit", "noop", "--wait", "-q"]).ok();
    let seen = first.until(Duration::from_secs(10), |e| e["type"] == "succeeded");
    let last_seq = seen
        .last()
        .and_then(|(_, e)| e["seq"].as_i64())
        .expect("a seq");
    drop(first);

    // While nobody listens: three more tasks run to the end.
    let ids: Vec<String> = (0..3)
        .map(|_| api.taskctl(&["submit", "noop", "-q"]).ok())
        .collect();
    let mut args = vec!["watch", "-o", "json"];
    args.extend(ids.iter().map(String::as_str));
    assert_eq!(api.taskctl(&args).code, 0);

    let resumed = EventTail::open(api, "", Some(last_seq));
    let mut by_task: HashMap<String, Vec<String>> = HashMap::new();
    let events = resumed.until(Duration::from_secs(10), |e| {
        let id = e["task"]["id"].as_str().unwrap_or("").to_owned();
        by_task
            .entry(id)
            .or_default()
            .push(e["type"].as_str().unwrap_or("").to_owned());
        ids.iter().all(|id| {
            by_task
                .get(id)
                .is_some_and(|k| k.last().map(String::as_str) == Some("succeeded"))
        })
    });
    assert!(
        events
            .iter()
            .all(|(_, e)| e["seq"].as_i64() > Some(last_seq)),
        "nothing old replayed"
    );
    for id in &ids {
        assert_eq!(
            by_task[id],
            ["created", "started", "succeeded"],
            "task {id}"
        );
    }
}

fn logs_follow_streams_a_running_task_and_ends_with_it(backend: Backend) {
    let Some(platform) = Platform::start(
        backend,
        "logs_follow",
        &["--enable-shell"],
        &["--enable-shell"],
    ) else {
        return;
    };
    let api = platform.api();
    let marker = platform.dir.path().join("go-on");
    let script = format!(
        "echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second >&2",
        marker.display()
    );
    let id = api
        .taskctl(&["submit", "shell", "-q", "--", "sh", "-c", &script])
        .ok();
    let mut follower = api.taskctl_spawn(&["logs", "-f", &id, "--timestamps", "-o", "table"]);
    let out = Lines::of(follower.stdout.take().expect("stdout"));
    let line = out.next(Duration::from_secs(30));
    assert!(line.trim_end().ends_with("stdout first"), "{line}");
    assert_eq!(
        api.task(&id)["status"],
        "running",
        "the line came while the task ran"
    );
    std::fs::write(&marker, b"").expect("marker");
    let rest = out.rest(Duration::from_secs(30)).join("\n");
    let run = wait_child(follower, Duration::from_secs(10));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(rest.trim_end().ends_with("stderr second"), "{rest}");
    assert_eq!(api.task(&id)["status"], "succeeded");

    let jsonl = api.taskctl(&["logs", "-f", &id, "-o", "jsonl"]).ok();
    let streams: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["stream"].clone())
        .collect();
    assert_eq!(streams, [json!("stdout"), json!("stderr")]);
}

fn queue_counts_match_a_batch_of_scheduled_tasks(backend: Backend) {
    let Some(platform) = Platform::start(backend, "queue_counts", &[], &["--queues", "now,later"])
    else {
        return;
    };
    let api = platform.api();
    let later: Vec<Value> = (0..7)
        .map(|_| json!({"kind": "noop", "queue": "later", "delay_ms": 3_600_000}))
        .collect();
    api.submit_batch(&later);
    for _ in 0..3 {
        api.taskctl(&["submit", "noop", "--queue", "now", "--wait", "-q"])
            .ok();
    }
    let list = api.taskctl(&["queues", "-o", "json"]).json();
    let queues: HashMap<&str, &Value> = list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| (q["queue"].as_str().unwrap_or(""), q))
        .collect();
    assert_eq!(queues["later"]["counts"]["scheduled"], 7);
    assert_eq!(queues["later"]["depth"], 0);
    assert_eq!(queues["now"]["counts"]["succeeded"], 3);
    assert_eq!(queues["now"]["finished_last_minute"], 3);
    if backend == Backend::Production {
        assert!(
            queues["now"]["broker"]["consumers"].as_u64() >= Some(1),
            "{}",
            queues["now"]
        );
    }
    let table = api.taskctl(&["queues", "-o", "table"]).ok();
    let later_row = table
        .lines()
        .find(|l| l.starts_with("later"))
        .expect("a later row");
    // QUEUE STATE READY SCHEDULED …: no controls, 0 ready, 7 scheduled.
    assert_eq!(later_row.split_whitespace().nth(1), Some("-"), "{table}");
    assert_eq!(later_row.split_whitespace().nth(3), Some("7"), "{table}");
}

fn a_killed_worker_drops_out_of_the_worker_list(backend: Backend) {
    let Some(platform) = Platform::empty(backend, "worker_list") else {
        return;
    };
    let api = platform.spawn("api", &[]);
    let mut worker = platform.spawn(
        "worker",
        &["--concurrency", "3", "--queues", "default,mail"],
    );
    wait_until("the worker to report in", Duration::from_secs(15), || {
        let list = api.taskctl(&["workers", "-o", "json"]).json();
        list["workers"].as_array().is_some_and(|w| w.len() == 1)
    });
    let list = api.taskctl(&["workers", "-o", "json"]).json();
    let me = &list["workers"][0];
    assert_eq!(me["pid"], worker.pid());
    assert_eq!(me["concurrency"], 3);
    assert_eq!(me["queues"], json!(["default", "mail"]));
    let table = api.taskctl(&["workers", "-o", "table"]).ok();
    assert!(
        table.contains("0/3") && table.contains("default,mail"),
        "{table}"
    );

    worker.kill9();
    wait_until(
        "the killed worker to drop out",
        Duration::from_secs(20),
        || {
            let list = api.taskctl(&["workers", "-o", "json"]).json();
            list["workers"].as_array().is_some_and(Vec::is_empty)
        },
    );
}

fn taskctl_events_tails_and_counts(backend: Backend) {
    let Some(platform) = Platform::start(backend, "taskctl_events", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let mut tail = api.taskctl_spawn(&["events", "--kind", "echo", "-n", "3", "-o", "jsonl"]);
    // The tail may connect after the first submits: keep submitting until it has its three.
    let mut submitted = HashSet::new();
    wait_until(
        "taskctl events to see three events",
        Duration::from_secs(30),
        || {
            submitted.insert(api.taskctl(&["submit", "echo", "--wait", "-q"]).ok());
            tail.try_wait().expect("wait").is_some()
        },
    );
    let run = wait_child(tail, Duration::from_secs(5));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| submitted.contains(e["task"]["id"].as_str().unwrap_or("")))
    );
}

/// Concurrent submitters and a busy worker commit their change-feed rows out of order (on
/// PostgreSQL, row by row interleaved); every event must still reach a subscriber once.
fn every_event_arrives_under_concurrent_load(backend: Backend) {
    let Some(platform) = Platform::start(backend, "event_load", &[], &["--concurrency", "256"])
    else {
        return;
    };
    let api = platform.api();
    let tail = EventTail::open(api, "?kind=noop", None);
    let submitted: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let mut ids = Vec::new();
                    for _ in 0..25 {
                        let batch = vec![serde_json::json!({"kind": "noop"}); 50];
                        ids.extend(api.submit_batch(&batch));
                    }
                    ids
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("submitter"))
            .collect()
    });
    assert_eq!(submitted.len(), 10_000);
    let mut succeeded = std::collections::HashSet::new();
    let mut per_task: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    // A debug build's API can fall a whole buffer behind the events of 10,000 tasks; the
    // server then cuts the stream and the client resumes, and still sees each event once.
    tail.until_resuming(api, "?kind=noop", Duration::from_secs(120), |e| {
        let id = e["task"]["id"].as_str().unwrap_or("").to_owned();
        let kind = e["type"].as_str().unwrap_or("").to_owned();
        if kind == "succeeded" {
            succeeded.insert(id.clone());
        }
        per_task.entry(id).or_default().push(kind);
        succeeded.len() == submitted.len()
    });
    for id in &submitted {
        assert_eq!(
            per_task.get(id).map(Vec::as_slice),
            Some(
                &[
                    "created".to_owned(),
                    "started".to_owned(),
                    "succeeded".to_owned()
                ][..]
            ),
            "{id}: each event once, in order"
        );
    }
}

on_both_backends!(
    every_event_arrives_under_concurrent_load,
    a_tasks_events_arrive_in_order_and_promptly,
    a_client_resuming_with_last_event_id_misses_nothing,
    logs_follow_streams_a_running_task_and_ends_with_it,
    queue_counts_match_a_batch_of_scheduled_tasks,
    a_killed_worker_drops_out_of_the_worker_list,
    taskctl_events_tails_and_counts,
);
