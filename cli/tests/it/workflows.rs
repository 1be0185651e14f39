//! Workflows end to end: `taskctl workflow …` against real taskd processes, on both backends
//! (production: an API and a worker process on PostgreSQL and RabbitMQ).

use std::path::PathBuf;
use std::time::Duration;

use crate::common;

use common::{Backend, Platform, wait_until};
use serde_json::{Value, json};

/// Writes `document` as a file in the platform's directory and returns its path.
fn file(platform: &Platform, name: &str, document: &str) -> String {
    let path: PathBuf = platform.dir.path().join(name);
    std::fs::write(&path, document).expect("write the workflow file");
    path.display().to_string()
}

fn workflow(platform: &Platform, id: &str) -> Value {
    platform
        .api()
        .taskctl(&["workflow", "status", id, "-o", "json"])
        .json()
}

fn step<'a>(workflow: &'a Value, id: &str) -> &'a Value {
    workflow["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {workflow}"))
}

fn task_of(platform: &Platform, workflow: &Value, id: &str) -> Value {
    let task_id = step(workflow, id)["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();
    platform.api().task(&task_id)
}

const DIAMOND: &str = r#"
name: diamond
params:
  greeting: hello
steps:
  - id: a
    kind: echo
    payload: {x: 1, who: "${params.who}"}
  - id: b
    kind: echo
    needs: [a]
    payload: {host: web1, n: "${steps.a.result.x}", said: "${params.greeting}"}
  - id: c
    kind: sleep
    needs: [a]
    payload: {ms: 300}
  - id: d
    kind: echo
    needs: [b, c]
    payload:
      host: "${steps.b.result.host}"
      n: "${steps.b.result.n}"
      text: "n=${steps.b.result.n} on ${steps.b.result.host}"
      from_a: "${steps.a.result}"
"#;

/// A diamond (a → b, c → d) runs in order, and d receives b's result (a number stays a
/// number, text is interpolated); the tree, the list and the events show it.
fn a_diamond_runs_in_order_and_passes_results(backend: Backend) {
    let Some(platform) = Platform::start(backend, "workflow_diamond", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let tail = common::EventTail::open(api, "", None);
    let path = file(&platform, "diamond.yaml", DIAMOND);
    let id = api
        .taskctl(&[
            "workflow", "run", "-f", &path, "--set", "who=ops", "--wait", "-q",
        ])
        .ok();
    let done = workflow(&platform, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["name"], "diamond");
    // Its end is an event of its own, after its last step's.
    let events = tail.until(Duration::from_secs(30), |e| {
        e["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("workflow_"))
    });
    let (_, end) = events.last().expect("an event");
    assert_eq!(end["type"], "workflow_succeeded", "{end}");
    assert_eq!(end["workflow"], id.as_str());
    let last_step = step(&done, "d")["task_id"].clone();
    assert_eq!(end["task"]["id"], last_step, "{end}");
    assert!(
        events
            .iter()
            .any(|(_, e)| e["type"] == "succeeded" && e["task"]["id"] == last_step),
        "d's own end came first"
    );
    assert_eq!(done["counts"], json!({"succeeded": 4}));
    let ids: Vec<&str> = done["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d"], "the steps in the order given");
    assert_eq!(step(&done, "d")["needs"], json!(["b", "c"]));
    for (before, after) in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")] {
        let ended = common::instant(&step(&done, before)["finished_at"]);
        let started = common::instant(&step(&done, after)["started_at"]);
        assert!(
            started >= ended,
            "{after} started after {before} ended: {done}"
        );
    }
    let a = task_of(&platform, &done, "a");
    assert_eq!(a["result"], json!({"x": 1, "who": "ops"}));
    assert_eq!(a["labels"]["workflow"], id.as_str());
    assert_eq!(a["labels"]["workflow.step"], "a");
    assert_eq!(a["workflow_id"], id.as_str());
    let d = task_of(&platform, &done, "d");
    assert_eq!(
        d["result"],
        json!({
            "host": "web1",
            "n": 1,
            "text": "n=1 on web1",
            "from_a": {"x": 1, "who": "ops"},
        }),
        "d took b's result"
    );
    // The stored payload keeps the template; the step's log shows what it ran with.
    assert_eq!(d["payload"]["host"], "${steps.b.result.host}");
    let d_id = d["id"].as_str().expect("id");
    let log = api.taskctl(&["logs", d_id]).ok();
    assert!(log.contains("\"text\":\"n=1 on web1\""), "{log}");

    let tree = api.taskctl(&["workflow", "status", &id]).ok();
    for line in ["Status:    succeeded", "a ", "├─ b", "│  └─ d", "└─ c"] {
        assert!(tree.contains(line), "{line:?} in:\n{tree}");
    }
    let list = api.taskctl(&["workflow", "list", "-o", "json"]).json();
    assert_eq!(list["workflows"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["workflows"][0]["status"], "succeeded");
    assert!(list["workflows"][0]["finished_at"].is_string(), "{list}");
    let named = api
        .taskctl(&["workflow", "list", "--name", "other", "-o", "json"])
        .json();
    assert_eq!(named["workflows"], json!([]));
    let events = api
        .taskctl(&[
            "events",
            "--workflow",
            &id,
            "--last",
            "100",
            "-n",
            "4",
            "-o",
            "jsonl",
        ])
        .ok();
    assert!(
        events
            .lines()
            .all(|line| line.contains(&format!("\"workflow\":\"{id}\""))),
        "{events}"
    );

    // A field a result lacks fails the step at once (another attempt would fail the same
    // way), naming the reference, and cancels what needs it.
    let path = file(
        &platform,
        "missing.yaml",
        r#"{"name": "missing", "steps": [
            {"id": "a", "kind": "echo", "payload": {"x": 1}},
            {"id": "b", "kind": "echo", "needs": ["a"], "payload": {"y": "${steps.a.result.y}"}},
            {"id": "c", "kind": "noop", "needs": ["b"]},
            {"id": "s", "kind": "sleep", "needs": ["a"], "payload": {"ms": "${steps.a.result}"}}]}"#,
    );
    let run = api.taskctl(&["workflow", "run", "-f", &path, "--wait", "-o", "json"]);
    let line = run.fails_with(3);
    assert!(
        line.contains("step b") && line.contains("has no field 'y'"),
        "{line}"
    );
    let failed = run.json();
    assert_eq!(step(&failed, "b")["attempts"], 1, "not retried: {failed}");
    assert_eq!(step(&failed, "c")["status"], "cancelled");
    // A payload whose filled-in shape its kind refuses fails at once too.
    let s = step(&failed, "s");
    assert_eq!(
        (&s["status"], &s["attempts"]),
        (&json!("failed"), &json!(1)),
        "{s}"
    );
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("sleep:")),
        "{s}"
    );
}

/// A failed step fails the workflow and cancels what needs it; a retry once the cause is
/// fixed runs only the failed step and its dependents again.
fn a_retry_reruns_only_the_failed_steps_and_their_dependents(backend: Backend) {
    let Some(platform) = Platform::start(
        backend,
        "workflow_retry",
        &["--enable-shell"],
        &["--enable-shell"],
    ) else {
        return;
    };
    let api = platform.api();
    let fixed = platform.dir.path().join("fixed");
    let document = json!({
        "name": "flaky",
        "steps": [
            {"id": "a", "kind": "echo", "payload": {"v": 1}},
            {"id": "b", "kind": "shell", "needs": ["a"], "max_attempts": 1,
             "payload": {"argv": ["test", "-f", fixed.display().to_string()]}},
            {"id": "c", "kind": "echo", "needs": ["b"], "payload": {"from": "${steps.a.result.v}"}},
            {"id": "d", "kind": "noop", "needs": ["a"]},
        ]
    });
    let path = file(&platform, "flaky.json", &document.to_string());
    let id = api.taskctl(&["workflow", "run", "-f", &path, "-q"]).ok();
    let line = api.taskctl(&["workflow", "watch", &id]).fails_with(3);
    assert!(
        line.contains(&format!("workflow {id} failed: step b")),
        "{line}"
    );
    let failed = workflow(&platform, &id);
    assert_eq!(failed["status"], "failed");
    assert_eq!(step(&failed, "a")["status"], "succeeded");
    assert_eq!(step(&failed, "b")["status"], "failed");
    assert_eq!(step(&failed, "d")["status"], "succeeded");
    let c = step(&failed, "c");
    assert_eq!(c["status"], "cancelled");
    assert!(
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("dependency_failed: step b")),
        "{c}"
    );
    let tree = api.taskctl(&["workflow", "status", &id]).ok();
    assert!(tree.contains("dependency_failed"), "{tree}");

    std::fs::write(&fixed, b"").expect("fix the cause");
    let out = api.taskctl(&["workflow", "retry", &id, "--wait"]).ok();
    assert!(out.contains("2 steps to run again"), "{out}");
    let done = workflow(&platform, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    for kept in ["a", "d"] {
        assert_eq!(
            step(&done, kept)["finished_at"],
            step(&failed, kept)["finished_at"],
            "{kept} did not run again"
        );
        assert_eq!(step(&done, kept)["attempts"], 1);
    }
    assert_eq!(task_of(&platform, &done, "c")["result"], json!({"from": 1}));
    // Nothing left to run again.
    let again = api
        .taskctl(&["workflow", "retry", &id, "-o", "json"])
        .json();
    assert_eq!(again["changed"], 0);
}

/// Cancelling a workflow stops its running step and cancels the waiting ones.
fn cancel_stops_every_unfinished_step(backend: Backend) {
    let Some(platform) = Platform::start(backend, "workflow_cancel", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let path = file(
        &platform,
        "long.yaml",
        "name: long\nsteps:\n  - {id: a, kind: sleep, payload: {ms: 60000}}\n  - {id: b, kind: noop, needs: [a]}\n  - {id: c, kind: noop}\n",
    );
    let id = api.taskctl(&["workflow", "run", "-f", &path, "-q"]).ok();
    wait_until(
        "step a to run and c to end",
        Duration::from_secs(20),
        || {
            let now = workflow(&platform, &id);
            step(&now, "a")["status"] == "running" && step(&now, "c")["status"] == "succeeded"
        },
    );
    let out = api.taskctl(&["workflow", "cancel", &id]).ok();
    assert!(out.starts_with(&format!("workflow {id}: ")), "{out}");
    let line = api.taskctl(&["workflow", "watch", &id]).fails_with(4);
    assert!(line.contains("was cancelled"), "{line}");
    let done = workflow(&platform, &id);
    assert_eq!(done["status"], "cancelled");
    assert_eq!(step(&done, "a")["status"], "cancelled");
    assert_eq!(step(&done, "b")["status"], "cancelled");
    assert_eq!(step(&done, "c")["status"], "succeeded");
}

/// A 200-step chain and a 200-wide fan-out (with its fan-in) complete.
fn long_chains_and_wide_fan_outs_complete(backend: Backend) {
    let Some(platform) = Platform::start(backend, "workflow_big", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let chain: Vec<Value> = (0..200)
        .map(|i| {
            let needs: Vec<String> = if i == 0 {
                vec![]
            } else {
                vec![format!("s{}", i - 1)]
            };
            json!({"id": format!("s{i}"), "kind": "noop", "needs": needs})
        })
        .collect();
    let path = file(
        &platform,
        "chain.json",
        &json!({"name": "chain", "steps": chain}).to_string(),
    );
    let id = api
        .taskctl(&["workflow", "run", "-f", &path, "--wait", "-q"])
        .ok();
    assert_eq!(
        workflow(&platform, &id)["counts"],
        json!({"succeeded": 200})
    );

    let mut wide: Vec<Value> = vec![json!({"id": "root", "kind": "echo", "payload": {"n": 7}})];
    wide.extend((0..200).map(|i| {
        json!({"id": format!("w{i}"), "kind": "echo", "needs": ["root"],
               "payload": {"i": i, "n": "${steps.root.result.n}"}})
    }));
    let all: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    wide.push(json!({"id": "join", "kind": "noop", "needs": all[..100]}));
    wide.push(json!({"id": "join2", "kind": "noop", "needs": all[100..]}));
    let path = file(
        &platform,
        "wide.json",
        &json!({"name": "wide", "steps": wide}).to_string(),
    );
    let id = api
        .taskctl(&["workflow", "run", "-f", &path, "--wait", "-q"])
        .ok();
    let done = workflow(&platform, &id);
    assert_eq!(done["counts"], json!({"succeeded": 203}));
    assert_eq!(
        task_of(&platform, &done, "w199")["result"],
        json!({"i": 199, "n": 7})
    );
}

/// A bad graph is a 400 naming the problem, and one line from taskctl; nothing of it is
/// stored.
fn bad_graphs_are_refused(backend: Backend) {
    let Some(platform) = Platform::start(backend, "workflow_bad", &[], &[]) else {
        return;
    };
    let api = platform.api();
    let cases = [
        (
            "cycle",
            json!([{"id": "a", "kind": "noop", "needs": ["c"]},
                   {"id": "b", "kind": "noop", "needs": ["a"]},
                   {"id": "c", "kind": "noop", "needs": ["b"]}]),
            "the steps form a cycle",
        ),
        (
            "unknown",
            json!([{"id": "a", "kind": "noop", "needs": ["nope"]}]),
            "needs 'nope', which is not a step",
        ),
        (
            "duplicate",
            json!([{"id": "a", "kind": "noop"}, {"id": "a", "kind": "noop"}]),
            "'a' is used twice",
        ),
        (
            "sibling",
            json!([{"id": "a", "kind": "echo"},
                   {"id": "b", "kind": "echo", "needs": ["a"]},
                   {"id": "c", "kind": "echo", "needs": ["a"], "payload": {"x": "${steps.b.result}"}}]),
            "does not need 'b'",
        ),
        (
            "kind",
            json!([{"id": "a", "kind": "nosuchkind"}]),
            "step 'a': unknown kind 'nosuchkind'",
        ),
    ];
    for (name, steps, problem) in cases {
        let body = json!({"name": name, "steps": steps});
        let (status, answer) = api.http(
            "POST",
            "/api/v1/workflows",
            &serde_json::to_vec(&body).expect("encode"),
        );
        assert_eq!(status, 400, "{name}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(problem), "{name}: {answer}");
        let path = file(&platform, &format!("{name}.json"), &body.to_string());
        let line = api.taskctl(&["workflow", "run", "-f", &path]).fails_with(1);
        assert!(line.contains(problem), "{name}: {line}");
    }
    let list = api.taskctl(&["workflow", "list", "-o", "json"]).json();
    assert_eq!(list["workflows"], json!([]), "nothing was stored");
    assert_eq!(
        api.taskctl(&["list", "-o", "json"]).json()["tasks"],
        json!([])
    );

    // What taskctl catches itself is a usage error.
    let path = file(
        &platform,
        "params.yaml",
        "name: p\nsteps:\n  - {id: a, kind: echo, payload: {x: \"${params.x}\"}}\n",
    );
    let line = api.taskctl(&["workflow", "run", "-f", &path]).fails_with(2);
    assert!(line.contains("--set x=VALUE"), "{line}");
    let line = api
        .taskctl(&[
            "workflow", "run", "-f", &path, "--set", "x=1", "--set", "y=2",
        ])
        .fails_with(2);
    assert!(line.contains("--set y"), "{line}");
    let line = api
        .taskctl(&["workflow", "status", "not-an-id"])
        .fails_with(2);
    assert!(line.contains("not a workflow id"), "{line}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let line = api.taskctl(&["workflow", "status", &unknown]).fails_with(1);
    assert!(line.contains("no workflow"), "{line}");
}

/// A worker killed in the middle of a workflow loses no step and runs none twice: the
/// interrupted step runs again once its lease expires, and the rest follow once each.
fn a_killed_worker_loses_and_doubles_nothing(backend: Backend) {
    let flags = ["--lease", "2s"];
    let Some(mut platform) = Platform::start(backend, "workflow_kill", &[], &flags) else {
        return;
    };
    let path = file(
        &platform,
        "kill.yaml",
        "name: kill\nsteps:\n  - {id: a, kind: echo, payload: {v: 1}}\n  - {id: b, kind: sleep, needs: [a], payload: {ms: 2500}}\n  - {id: c, kind: echo, needs: [b], payload: {v: \"${steps.a.result.v}\"}}\n",
    );
    let id = platform
        .api()
        .taskctl(&["workflow", "run", "-f", &path, "-q"])
        .ok();
    wait_until("step b to run", Duration::from_secs(20), || {
        step(&workflow(&platform, &id), "b")["status"] == "running"
    });
    platform.worker().kill9();
    platform.start_worker(&flags);
    platform.api().taskctl(&["workflow", "watch", &id]).ok();
    let done = workflow(&platform, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(step(&done, "a")["attempts"], 1);
    assert_eq!(step(&done, "b")["attempts"], 2, "b ran again: {done}");
    assert_eq!(step(&done, "c")["attempts"], 1, "c ran once: {done}");
    assert_eq!(task_of(&platform, &done, "c")["result"], json!({"v": 1}));
}

/// The ops example in `examples/` passes every check taskd makes before it stores a
/// workflow (its steps then fail here, where no Salt master or cluster is).
fn the_example_deploy_workflow_is_accepted(backend: Backend) {
    let flags = ["--enable-provisioning"];
    let Some(platform) = Platform::start(backend, "workflow_example", &flags, &flags) else {
        return;
    };
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/deploy-workflow.yaml"
    );
    let created = platform
        .api()
        .taskctl(&[
            "workflow",
            "run",
            "-f",
            example,
            "--set",
            "deployment=api",
            "-o",
            "json",
        ])
        .json();
    let steps: Vec<&str> = created["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        steps,
        ["configure", "manifests", "rollout", "notify"],
        "{created}"
    );
    let id = created["id"].as_str().expect("id");
    let rollout = task_of(&platform, &workflow(&platform, id), "rollout");
    assert_eq!(
        rollout["payload"]["selector"], "app.kubernetes.io/name=api",
        "--set filled the file: {rollout}"
    );
    platform.api().taskctl(&["workflow", "cancel", id]).ok();
}

on_both_backends!(
    the_example_deploy_workflow_is_accepted,
    a_diamond_runs_in_order_and_passes_results,
    a_retry_reruns_only_the_failed_steps_and_their_dependents,
    cancel_stops_every_unfinished_step,
    long_chains_and_wide_fan_outs_complete,
    bad_graphs_are_refused,
    a_killed_worker_loses_and_doubles_nothing,
);
