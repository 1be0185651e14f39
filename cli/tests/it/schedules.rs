//! Recurring schedules end to end: real taskd processes (several on one database), real
//! `taskctl schedule …`, on both backends where the database matters.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Backend, Daemon, Platform, wait_until};
use serde_json::Value;

/// The tasks schedule `name` made, as `taskctl schedule history -o json` lists them.
fn history(api: &Daemon, name: &str) -> Vec<Value> {
    let run = api.taskctl(&["schedule", "history", name, "--limit", "1000", "-o", "json"]);
    run.json()["tasks"].as_array().cloned().unwrap_or_default()
}

/// Their fire times, earliest first.
fn fire_times(api: &Daemon, name: &str) -> Vec<DateTime<Utc>> {
    let mut times: Vec<DateTime<Utc>> = history(api, name)
        .iter()
        .map(|task| {
            let text = task["labels"]["schedule.fire_at"]
                .as_str()
                .unwrap_or_else(|| panic!("no fire time on {task}"));
            DateTime::parse_from_rfc3339(text)
                .expect("RFC 3339")
                .with_timezone(&Utc)
        })
        .collect();
    times.sort();
    times
}

/// The fires this process counted (its `/metrics`).
fn fired_here(daemon: &Daemon, name: &str) -> u64 {
    let (status, body) = daemon.http("GET", "/metrics", b"");
    assert_eq!(status, 200);
    let text = body.as_str().unwrap_or_default().to_owned();
    let series =
        format!("taskplane_schedule_fires_total{{schedule=\"{name}\",outcome=\"fired\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

/// Three taskd processes on one database fire an every-second schedule for ten seconds:
/// about ten tasks, never two for one fire time, and each process ran the scheduler.
fn three_processes_fire_each_second_once(backend: Backend) {
    let Some(platform) = Platform::empty(backend, "three_processes_fire_each_second_once") else {
        return;
    };
    let processes: Vec<Daemon> = (0..3).map(|_| platform.spawn("all", &[])).collect();
    let api = &processes[0];
    api.taskctl(&["schedule", "create", "tick", "--every", "1s", "noop"])
        .ok();
    let started = Instant::now();
    wait_until("ten seconds of fires", Duration::from_secs(40), || {
        fire_times(api, "tick").last().is_some_and(|last| {
            fire_times(api, "tick")
                .first()
                .is_some_and(|first| (*last - *first).num_seconds() >= 10)
        })
    });
    api.taskctl(&["schedule", "pause", "tick"]).ok();
    let times = fire_times(api, "tick");
    let first = times[0];
    let window: Vec<&DateTime<Utc>> = times
        .iter()
        .filter(|t| (**t - first).num_milliseconds() < 10_000)
        .collect();
    assert!(
        (9..=11).contains(&window.len()),
        "{} tasks in the first ten seconds ({:?} since the schedule was made): {times:?}",
        window.len(),
        started.elapsed()
    );
    let distinct: BTreeSet<&DateTime<Utc>> = times.iter().collect();
    assert_eq!(
        distinct.len(),
        times.len(),
        "a fire time made two tasks: {times:?}"
    );
    assert!(
        times.iter().all(|t| t.timestamp_subsec_millis() == 0),
        "an interval fires on whole seconds: {times:?}"
    );
    // Every task came from one process's fire; together they made all of them.
    let counted: u64 = processes.iter().map(|p| fired_here(p, "tick")).sum();
    assert_eq!(
        counted as usize,
        times.len(),
        "the processes' fire counts add up"
    );
    // And each task ran.
    wait_until(
        "every fired task to finish",
        Duration::from_secs(30),
        || {
            history(api, "tick")
                .iter()
                .all(|task| task["status"] == "succeeded")
        },
    );
}

/// Pause, resume, trigger, history, next and delete through taskctl, with the schedule's
/// tasks found by their label.
fn pause_resume_trigger_and_delete(backend: Backend) {
    let Some(platform) = Platform::start(backend, "pause_resume_trigger_and_delete", &[], &[])
    else {
        return;
    };
    let api = platform.api();
    // Far from firing by itself: midnight on 1 January.
    let created = api
        .taskctl(&[
            "schedule",
            "create",
            "yearly",
            "--cron",
            "0 0 1 1 *",
            "--tz",
            "Europe/Berlin",
            "--overlap",
            "skip",
            "echo",
            "-p",
            "msg=hello",
            "--label",
            "team=ops",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["overlap"], "skip");
    assert!(
        created["next_run_at"]
            .as_str()
            .is_some_and(|t| t.ends_with("-12-31T23:00:00Z")),
        "midnight in Berlin is 23:00 UTC in winter: {created}"
    );
    // A name that is taken: 409, one line, exit 1.
    let taken = api.taskctl(&["schedule", "create", "yearly", "--every", "1h", "noop"]);
    assert!(taken.fails_with(1).contains("exists"), "{}", taken.stderr);

    let paused = api
        .taskctl(&["schedule", "pause", "yearly", "-o", "json"])
        .json();
    assert_eq!(paused[0]["paused"], true);
    let listed = api.taskctl(&["schedule", "list"]).ok();
    let row = listed
        .lines()
        .find(|line| line.starts_with("yearly"))
        .unwrap_or_else(|| panic!("no row for the schedule:\n{listed}"));
    assert!(row.trim_end().ends_with("yes"), "paused: {row}");

    // A trigger runs it now, paused or not, and waits for it with -w.
    let run = api.taskctl(&["schedule", "trigger", "yearly", "--wait", "-o", "json"]);
    run.ok();
    let triggered = run.json();
    assert_eq!(triggered[0]["status"], "succeeded", "{triggered}");
    assert_eq!(triggered[0]["labels"]["schedule"], "yearly");
    assert_eq!(triggered[0]["labels"]["team"], "ops");
    assert_eq!(triggered[0]["result"]["msg"], "hello");
    // The fire is an event of its own, naming the schedule.
    let id = triggered[0]["id"].as_str().unwrap_or_default().to_owned();
    let events = api
        .taskctl(&[
            "events", "--task", &id, "--last", "10", "-n", "4", "-o", "jsonl",
        ])
        .ok();
    let fired: Vec<Value> = events
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("an event"))
        .filter(|event| event["type"] == "fired")
        .collect();
    assert_eq!(fired.len(), 1, "{events}");
    assert_eq!(fired[0]["schedule"], "yearly");
    let shown = api
        .taskctl(&["events", "--task", &id, "--last", "10", "-n", "4"])
        .ok();
    assert!(shown.contains("by schedule yearly"), "{shown}");
    let tasks = history(api, "yearly");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], triggered[0]["id"]);
    let same = api
        .taskctl(&["list", "-l", "schedule=yearly", "-o", "id"])
        .ok();
    assert_eq!(same, triggered[0]["id"].as_str().unwrap_or_default());
    let got = api
        .taskctl(&["schedule", "get", "yearly", "-o", "json"])
        .json();
    assert_eq!(got["last_task_id"], triggered[0]["id"]);
    assert_eq!(got["last_status"], "succeeded");

    let resumed = api
        .taskctl(&["schedule", "resume", "yearly", "-o", "json"])
        .json();
    assert_eq!(resumed[0]["paused"], false);

    // The next fire times, from the schedule and from an expression.
    let next = api
        .taskctl(&["schedule", "next", "yearly", "-n", "3", "-o", "json"])
        .json();
    let times = next["fire_times"].as_array().expect("times");
    assert_eq!(times.len(), 3);
    assert!(
        next["local_times"][0]
            .as_str()
            .is_some_and(|t| t.ends_with("-01-01T00:00:00+01:00")),
        "{next}"
    );
    let table = api
        .taskctl(&[
            "schedule",
            "next",
            "--cron",
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "-n",
            "2",
        ])
        .ok();
    assert_eq!(table.lines().count(), 3, "a header and two rows:\n{table}");
    assert!(table.contains("LOCAL (America/New_York)"), "{table}");

    // Deleted: gone (404, one line), its task kept.
    api.taskctl(&["schedule", "delete", "yearly"]).ok();
    let gone = api.taskctl(&["schedule", "get", "yearly"]);
    assert!(
        gone.fails_with(1).contains("no schedule named 'yearly'"),
        "{}",
        gone.stderr
    );
    let kept = api.task(triggered[0]["id"].as_str().unwrap_or_default());
    assert_eq!(kept["status"], "succeeded");
}

/// Every process is killed; one restarts seconds later. The schedule that catches up with
/// `all` gets a task for each second it missed; the one with `none` does not.
fn a_restart_catches_up_as_told(backend: Backend) {
    let Some(platform) = Platform::empty(backend, "a_restart_catches_up_as_told") else {
        return;
    };
    let mut first = platform.spawn("all", &[]);
    first
        .taskctl(&[
            "schedule",
            "create",
            "each",
            "--every",
            "1s",
            "--catch-up",
            "all",
            "noop",
        ])
        .ok();
    first
        .taskctl(&["schedule", "create", "latest", "--every", "1s", "noop"])
        .ok();
    wait_until("both to fire", Duration::from_secs(20), || {
        !fire_times(&first, "each").is_empty() && !fire_times(&first, "latest").is_empty()
    });
    first.kill9();
    // The downtime under test: five seconds with no taskd at all.
    let down = Instant::now();
    wait_until("five seconds of downtime", Duration::from_secs(10), || {
        down.elapsed() >= Duration::from_secs(5)
    });
    let second = platform.spawn("all", &[]);
    wait_until("fires after the restart", Duration::from_secs(20), || {
        fire_times(&second, "latest")
            .last()
            .is_some_and(|t| (Utc::now() - *t).num_seconds() < 2)
            && fire_times(&second, "each").len() >= 8
    });
    let each = fire_times(&second, "each");
    for pair in each.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            1,
            "catch_up all leaves no second out: {each:?}"
        );
    }
    let latest = fire_times(&second, "latest");
    let widest = latest
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).num_seconds())
        .max()
        .unwrap_or(0);
    assert!(
        widest >= 4,
        "catch_up none skips the seconds of the downtime: {latest:?}"
    );
    let distinct: BTreeSet<&DateTime<Utc>> = each.iter().collect();
    assert_eq!(distinct.len(), each.len());
}

on_both_backends!(
    three_processes_fire_each_second_once,
    pause_resume_trigger_and_delete,
    a_restart_catches_up_as_told,
);

#[test]
fn apply_twice_changes_nothing_and_prune_deletes_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    let file = dir.path().join("schedules.yaml");
    let write = |text: &str| std::fs::write(&file, text).expect("write the file");
    let path = file.to_str().expect("a UTF-8 path");
    write(
        "- name: nightly\n  cron: \"0 2 * * *\"\n  timezone: Europe/Berlin\n  overlap: skip\n  task:\n    kind: echo\n    payload: {msg: backup}\n    labels: {team: ops}\n\
         - name: heartbeat\n  every: 30s\n  task: {kind: noop, queue: pings}\n",
    );
    let first = taskd.taskctl(&["schedule", "apply", "-f", path]).ok();
    assert_eq!(
        first,
        "schedule/nightly created\nschedule/heartbeat created"
    );
    let before = taskd.taskctl(&["schedule", "list", "-o", "json"]).json();
    let second = taskd.taskctl(&["schedule", "apply", "-f", path]).ok();
    assert_eq!(
        second,
        "schedule/nightly unchanged\nschedule/heartbeat unchanged"
    );
    let after = taskd.taskctl(&["schedule", "list", "-o", "json"]).json();
    for (a, b) in before["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .zip(after["schedules"].as_array().expect("schedules"))
    {
        assert_eq!(a["updated_at"], b["updated_at"], "nothing was written");
        assert_eq!(a["next_run_at"], b["next_run_at"]);
    }
    let heartbeat = taskd
        .taskctl(&["schedule", "get", "heartbeat", "-o", "json"])
        .json();
    assert_eq!(heartbeat["every_secs"], 30);
    assert_eq!(heartbeat["task"]["queue"], "pings");

    // A pause by hand survives an apply that says nothing about it.
    taskd.taskctl(&["schedule", "pause", "heartbeat"]).ok();
    let third = taskd.taskctl(&["schedule", "apply", "-f", path]).ok();
    assert!(third.contains("schedule/heartbeat unchanged"), "{third}");

    // A changed entry is configured; --prune deletes what the file no longer names.
    write(
        "schedules:\n- name: nightly\n  cron: \"0 3 * * *\"\n  timezone: Europe/Berlin\n  overlap: skip\n  task: {kind: echo, payload: {msg: backup}, labels: {team: ops}}\n",
    );
    let dry = taskd
        .taskctl(&["schedule", "apply", "-f", path, "--prune", "--dry-run"])
        .ok();
    assert_eq!(
        dry,
        "schedule/nightly configured (dry run)\nschedule/heartbeat pruned (dry run)"
    );
    assert_eq!(
        taskd.taskctl(&["schedule", "list", "-o", "id"]).ok(),
        "heartbeat\nnightly"
    );
    let pruned = taskd
        .taskctl(&["schedule", "apply", "-f", path, "--prune"])
        .ok();
    assert_eq!(
        pruned,
        "schedule/nightly configured\nschedule/heartbeat pruned"
    );
    assert_eq!(
        taskd.taskctl(&["schedule", "list", "-o", "id"]).ok(),
        "nightly"
    );
    let nightly = taskd
        .taskctl(&["schedule", "get", "nightly", "-o", "json"])
        .json();
    assert_eq!(nightly["cron"], "0 3 * * *");
    assert!(
        nightly["next_run_at"]
            .as_str()
            .is_some_and(|t| t.ends_with("T02:00:00Z")),
        "03:00 in Berlin in winter: {nightly}"
    );

    // A bad file: one line, exit 2, nothing changed.
    write("- name: x\n  cron: \"* * * * *\"\n  task: {kind: noop}\n  colour: blue\n");
    let bad = taskd.taskctl(&["schedule", "apply", "-f", path]);
    assert!(bad.fails_with(2).contains("colour"), "{}", bad.stderr);
    assert_eq!(
        taskd.taskctl(&["schedule", "list", "-o", "id"]).ok(),
        "nightly"
    );

    // An empty file with --prune is refused instead of deleting every schedule.
    write("");
    let empty = taskd.taskctl(&["schedule", "apply", "-f", path, "--prune"]);
    assert!(empty.fails_with(2).contains("--prune"), "{}", empty.stderr);
    assert_eq!(
        taskd.taskctl(&["schedule", "list", "-o", "id"]).ok(),
        "nightly"
    );

    // An entry taskd refuses stops the apply; what was applied before it is said.
    write(
        "- name: first\n  every: 1m\n  task: {kind: noop}\n- name: second\n  every: 1m\n  task: {kind: nosuchkind}\n",
    );
    let partial = taskd.taskctl(&["schedule", "apply", "-f", path]);
    assert!(
        partial.fails_with(1).contains("nosuchkind"),
        "{}",
        partial.stderr
    );
    assert_eq!(partial.stdout.trim(), "schedule/first created");
}

#[test]
fn bad_schedules_get_a_400_naming_the_field_and_a_one_line_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    for (body, code, field) in [
        (
            r#"{"name":"a","cron":"61 * * * *","task":{"kind":"noop"}}"#,
            "invalid_request",
            "cron: ",
        ),
        (
            r#"{"name":"a","cron":"* * * * *","timezone":"Mars/Olympus","task":{"kind":"noop"}}"#,
            "invalid_request",
            "timezone: ",
        ),
        (
            r#"{"name":"a","every_secs":0,"task":{"kind":"noop"}}"#,
            "invalid_request",
            "every_secs: ",
        ),
        (
            r#"{"name":"with space","every_secs":5,"task":{"kind":"noop"}}"#,
            "invalid_name",
            "name: ",
        ),
        (
            r#"{"name":"a","every_secs":5,"task":{"kind":"teleport"}}"#,
            "unknown_kind",
            "task.",
        ),
        (
            r#"{"name":"a","every_secs":5,"task":{"kind":"noop","delay_ms":5}}"#,
            "invalid_request",
            "task.delay_ms: ",
        ),
        (r#"{"name":"a","every_secs":5}"#, "invalid_json", ""),
    ] {
        let (status, answer) = taskd.http("POST", "/api/v1/schedules", body.as_bytes());
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    // Nothing was stored.
    assert_eq!(taskd.taskctl(&["schedule", "list", "-o", "id"]).ok(), "");
    for (args, code, says) in [
        (
            &["schedule", "create", "a", "--cron", "61 * * * *", "noop"][..],
            1,
            "cron",
        ),
        (
            &[
                "schedule",
                "create",
                "a",
                "--cron",
                "* * * * *",
                "--tz",
                "Mars/Olympus",
                "noop",
            ][..],
            1,
            "Mars/Olympus",
        ),
        (
            &["schedule", "create", "a", "--every", "0s", "noop"][..],
            2,
            "at least 1s",
        ),
        (
            &["schedule", "create", "with space", "--every", "5s", "noop"][..],
            1,
            "not a schedule name",
        ),
        (&["schedule", "create", "a", "noop"][..], 2, "--cron"),
        (&["schedule", "next", "--cron", "* * *"][..], 1, "fields"),
        (
            &["schedule", "get", "nope"][..],
            1,
            "no schedule named 'nope'",
        ),
    ] {
        let run = taskd.taskctl(args);
        let line = if code == 2 && run.stderr.lines().count() > 1 {
            // clap's own usage errors add a usage line and a hint.
            assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
            run.stderr.clone()
        } else {
            run.fails_with(code)
        };
        assert!(line.contains(says), "{args:?}: {line}");
    }
}
