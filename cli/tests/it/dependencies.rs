//! Dependencies end to end: `taskctl submit --after` against real taskd processes, on both
//! backends (production: an API and a worker process with RabbitMQ, so a child freed by its
//! parent's settle is published by the dispatcher).

use crate::common;

use common::{Backend, Platform};
use serde_json::Value;

fn task(platform: &Platform, id: &str) -> Value {
    let out = platform.api().taskctl(&["status", id, "-o", "json"]).ok();
    serde_json::from_str(&out).expect("a task")
}

/// A task submitted `--after` a running one waits, then runs once it succeeded; one after a
/// task that fails is cancelled, naming it; one after a task that does not exist is refused.
fn after_waits_for_its_parents(backend: Backend) {
    let Some(platform) = Platform::start(backend, "after_waits_for_its_parents", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let parent = api
        .taskctl(&["submit", "sleep", "-p", "ms:=3000", "-q"])
        .ok();
    let child = api
        .taskctl(&[
            "submit",
            "echo",
            "-p",
            "msg=after",
            "--after",
            &parent,
            "-q",
        ])
        .ok();
    let waiting = task(&platform, &child);
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert_eq!(waiting["depends_on"][0], parent.as_str(), "{waiting}");
    api.taskctl(&["watch", &child]).ok();
    let parent_task = task(&platform, &parent);
    let child_task = task(&platform, &child);
    assert_eq!(child_task["status"], "succeeded");
    assert!(
        common::instant(&child_task["started_at"]) >= common::instant(&parent_task["finished_at"]),
        "the child started after its parent ended: {child_task} {parent_task}"
    );

    let failing = api
        .taskctl(&[
            "submit",
            "sleep",
            "-p",
            "ms:=10000",
            "--timeout",
            "1s",
            "--max-attempts",
            "1",
            "-q",
        ])
        .ok();
    let doomed = api
        .taskctl(&["submit", "noop", "--after", &failing, "-q"])
        .ok();
    let grandchild = api
        .taskctl(&["submit", "noop", "--after", &doomed, "-q"])
        .ok();
    let watched = api.taskctl(&["watch", &grandchild]);
    assert_eq!(watched.code, 4, "cancelled: {}", watched.stderr);
    let doomed_task = task(&platform, &doomed);
    assert_eq!(doomed_task["status"], "cancelled");
    let error = doomed_task["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("dependency_failed: task ") && error.contains(&failing),
        "{error}"
    );

    let unknown = uuid::Uuid::now_v7().to_string();
    let line = api
        .taskctl(&["submit", "noop", "--after", &unknown])
        .fails_with(1);
    assert!(line.contains("there is no task"), "{line}");
    let line = api
        .taskctl(&["submit", "noop", "--after", &failing])
        .fails_with(1);
    assert!(line.contains("could never run"), "{line}");
    let line = api
        .taskctl(&["submit", "noop", "--after", "not-an-id"])
        .fails_with(2);
    assert!(line.contains("not-an-id"), "{line}");
}

on_both_backends!(after_waits_for_its_parents);
