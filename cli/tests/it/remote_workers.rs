//! Remote workers end to end: `taskctl worker` and the lease protocol against real taskd
//! processes, on both backends (production: an API and a worker process on PostgreSQL and
//! RabbitMQ, the API's `--kinds` declaring what the agents serve).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::{Backend, Daemon, Platform, wait_until};
use serde_json::{Value, json};

/// The API flags of these tests: two declared kinds, and short leases so that an expired
/// one is seen within seconds.
const KINDS: &[&str] = &["--kinds", "resize,slow", "--lease", "3s"];

/// Starts `taskctl worker` against `api` with these arguments (before `--`) and command.
fn agent(api: &Daemon, args: &[&str], command: &str) -> Child {
    let mut all: Vec<&str> = vec!["worker"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", command]);
    common::taskctl_command(&api.url, &all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start taskctl worker")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn submit(api: &Daemon, kind: &str, payload: Value, extra: Value) -> String {
    let mut body = json!({"kind": kind, "payload": payload});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, task) = api.http("POST", "/api/v1/tasks", body.to_string().as_bytes());
    assert_eq!(status, 201, "{task}");
    task["id"].as_str().expect("id").to_owned()
}

fn wait_status(api: &Daemon, id: &str, status: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let task = api.task(id);
        if task["status"] == status {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} is not {status} after {timeout:?}: {task}\n{}",
            api.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_lines(api: &Daemon, id: &str) -> Vec<Value> {
    let (status, page) = api.http("GET", &format!("/api/v1/tasks/{id}/logs"), b"");
    assert_eq!(status, 200, "{page}");
    page["lines"].as_array().cloned().unwrap_or_default()
}

/// The agent runs 50 tasks: each gets its payload on stdin and its identity in the
/// environment, its last stdout line is the result, both streams reach the log; the agent
/// is listed with its kinds, and SIGTERM stops it cleanly.
fn the_agent_runs_tasks_with_results_and_logs(backend: Backend) {
    let Some(platform) = Platform::start(backend, "remote_agent", KINDS, &[]) else {
        return;
    };
    let api = platform.api();
    let script = r#"p=$(cat); echo "task $TASKPLANE_TASK_ID attempt $TASKPLANE_ATTEMPT"; echo "tp=$TRACEPARENT"; echo "to stderr" >&2; echo "{\"got\": $p, \"kind\": \"$TASKPLANE_KIND\"}""#;
    let mut worker = agent(
        api,
        &["--kind", "resize", "-c", "4", "--name", "agent-1"],
        script,
    );
    let tasks: Vec<Value> = (0..50)
        .map(|n| json!({"kind": "resize", "payload": {"n": n}}))
        .collect();
    let ids = api.submit_batch(&tasks);
    wait_until("50 remote tasks succeeded", Duration::from_secs(60), || {
        api.count("succeeded") == 50
    });
    for (n, id) in ids.iter().enumerate() {
        let task = api.task(id);
        assert_eq!(
            task["result"],
            json!({"got": {"n": n}, "kind": "resize"}),
            "{task}"
        );
        assert_eq!(task["worker"], "agent-1");
        assert_eq!(task["attempts"], 1);
    }
    let lines = log_lines(api, &ids[7]);
    let text: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap_or(""),
                l["line"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        text.contains(&("stdout", format!("task {} attempt 1", ids[7]).as_str())),
        "{lines:?}"
    );
    assert!(text.contains(&("stderr", "to stderr")), "{lines:?}");
    assert!(
        text.contains(&("stdout", "tp=")),
        "no trace, no TRACEPARENT: {lines:?}"
    );

    // A task submitted in a trace: the agent's program gets its TRACEPARENT.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, traced) = api.http_with_header(
        "POST",
        "/api/v1/tasks",
        br#"{"kind":"resize","payload":{"n":99}}"#,
        ("traceparent", traceparent),
    );
    assert_eq!(status, 201, "{traced}");
    let traced = traced["id"].as_str().expect("id").to_owned();
    api.taskctl(&["watch", &traced, "-o", "json"]).ok();
    let expected = format!("tp={traceparent}");
    assert!(
        log_lines(api, &traced)
            .iter()
            .any(|l| l["line"].as_str() == Some(expected.as_str())),
        "the program did not get the task's TRACEPARENT"
    );

    let workers = api.taskctl(&["workers", "-o", "json"]).json();
    let remote = workers["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["id"] == "agent-1"))
        .cloned()
        .unwrap_or_else(|| panic!("agent-1 is listed: {workers}"));
    assert_eq!(remote["remote"], true);
    assert_eq!(remote["kinds"], json!(["resize"]));
    assert_eq!(remote["concurrency"], 4);
    let kinds = api.taskctl(&["kinds", "-o", "json"]).json();
    let resize = kinds["kinds"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["name"] == "resize"))
        .cloned()
        .expect("resize is listed");
    assert_eq!(resize["builtin"], false);
    assert_eq!(resize["workers"], json!(["agent-1"]), "{kinds}");
    let table = api.taskctl(&["kinds"]).ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("slow") && l.contains("none")),
        "{table}"
    );

    signal(&worker, "TERM");
    let run = common::wait_child(worker_take(&mut worker), Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("worker agent-1 stopped"),
        "{}",
        run.stderr
    );
}

/// Moves the child out so that it can be waited for by value.
fn worker_take(child: &mut Child) -> Child {
    std::mem::replace(
        child,
        Command::new("true").spawn().expect("a placeholder process"),
    )
}

/// An agent killed with -9 loses its lease: the task goes back to its queue when the lease
/// expires and another agent finishes it, as attempt 2.
fn a_killed_agent_loses_its_lease_and_another_finishes(backend: Backend) {
    let Some(platform) = Platform::start(backend, "remote_kill9", KINDS, &[]) else {
        return;
    };
    let api = platform.api();
    let mut first = agent(
        api,
        &["--kind", "slow", "--name", "doomed"],
        "exec sleep 20",
    );
    let id = submit(api, "slow", json!({}), json!({}));
    let running = wait_status(api, &id, "running", Duration::from_secs(20));
    assert_eq!(running["worker"], "doomed");
    first.kill().expect("kill -9 the agent");
    let _ = first.wait();
    let second = agent(
        api,
        &["--kind", "slow", "--name", "rescuer"],
        r#"echo '{"rescued": true}'"#,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.task(&id)["status"] != "succeeded" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&second, "KILL");
    let run = common::wait_child(second, Duration::from_secs(10));
    let done = api.task(&id);
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\nagent: {}\n{}",
        run.stderr,
        api.log()
    );
    assert_eq!(done["worker"], "rescuer");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"], json!({"rescued": true}));
}

/// A cancel kills the task's process (the whole group) within a heartbeat, and the task
/// ends cancelled.
fn cancel_kills_the_remote_process(backend: Backend) {
    let Some(platform) = Platform::start(backend, "remote_cancel", KINDS, &[]) else {
        return;
    };
    let api = platform.api();
    let pids = platform.dir.path().join("pids");
    std::fs::create_dir_all(&pids).expect("pid dir");
    let script = format!(
        "sleep 300 & echo $! > {dir}/$TASKPLANE_TASK_ID; wait",
        dir = pids.display()
    );
    let mut worker = agent(api, &["--kind", "slow"], &script);
    let id = submit(api, "slow", json!({}), json!({}));
    wait_status(api, &id, "running", Duration::from_secs(20));
    let pid_file = pids.join(&id);
    wait_until(
        "the task's child wrote its pid",
        Duration::from_secs(10),
        || std::fs::read_to_string(&pid_file).is_ok_and(|p| !p.trim().is_empty()),
    );
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    let alive = |pid: &str| {
        Command::new("kill")
            .args(["-0", pid.trim()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(alive(&pid));
    let cancelled = Instant::now();
    api.taskctl(&["cancel", &id]).ok();
    let task = wait_status(api, &id, "cancelled", Duration::from_secs(20));
    assert!(task["last_error"].is_null() || task["status"] == "cancelled");
    wait_until(
        "the task's grandchild is gone",
        Duration::from_secs(10),
        || !alive(&pid),
    );
    eprintln!(
        "cancel reached the remote process in {:?}",
        cancelled.elapsed()
    );
    worker.kill().expect("stop the agent");
    let _ = worker.wait();
}

/// SIGTERM stops leasing and lets a running task finish within the grace; a task still
/// running when a short grace ends is killed and handed back, its attempt not counted.
fn sigterm_drains(backend: Backend) {
    let Some(platform) = Platform::start(backend, "remote_drain", KINDS, &[]) else {
        return;
    };
    let api = platform.api();
    let marks = platform.dir.path().join("started");
    std::fs::create_dir_all(&marks).expect("dir");
    let script = format!(
        r#"touch {dir}/$TASKPLANE_TASK_ID; p=$(cat); case "$p" in *long*) exec sleep 60;; esac; sleep 1; echo '{{"finished": true}}'"#,
        dir = marks.display()
    );
    // A graceful drain: the task finishes, the agent exits 0.
    let mut patient = agent(api, &["--kind", "slow", "--grace", "30s"], &script);
    let short = submit(api, "slow", json!({"what": "short"}), json!({}));
    wait_until("the short task started", Duration::from_secs(20), || {
        marks.join(&short).exists()
    });
    signal(&patient, "TERM");
    // Submitted after the signal: the draining agent must not take it.
    let later = submit(api, "slow", json!({"what": "later"}), json!({}));
    let run = common::wait_child(worker_take(&mut patient), Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(api.task(&short)["status"], "succeeded");
    assert_eq!(api.task(&short)["result"], json!({"finished": true}));
    assert!(
        !marks.join(&later).exists(),
        "a draining agent took new work"
    );
    assert_eq!(api.task(&later)["status"], "queued");

    // A grace too short: the long task is killed and goes back uncounted.
    let mut hasty = agent(api, &["--kind", "slow", "--grace", "500ms"], &script);
    let long = submit(api, "slow", json!({"what": "long"}), json!({}));
    wait_until("the long task started", Duration::from_secs(20), || {
        marks.join(&long).exists() && marks.join(&later).exists()
    });
    signal(&hasty, "TERM");
    let run = common::wait_child(worker_take(&mut hasty), Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let task = api.task(&long);
    assert_eq!(task["status"], "queued", "{task}");
    assert_eq!(
        task["attempts"], 0,
        "an interrupted attempt is not counted: {task}"
    );
}

/// The protocol itself: a lease request waits for work and answers when a task is
/// submitted during the wait (the delay is measured, not asserted); foreign, stale and
/// expired leases are 409 and change nothing; bad requests are 400.
fn leases_long_poll_and_guard_every_report(backend: Backend) {
    let Some(platform) = Platform::start(backend, "remote_protocol", KINDS, &[]) else {
        return;
    };
    let api = platform.api();
    let addr = api.addr.clone();
    let poll = std::thread::spawn(move || {
        let body = json!({"worker": "w-1", "kinds": ["resize"], "wait_ms": 20000, "max": 5});
        let (status, answer) = common::raw_http(
            &addr,
            "POST",
            "/api/v1/leases",
            body.to_string().as_bytes(),
            None,
        );
        (status, answer, Instant::now())
    });
    // The poll is waiting once its worker is listed.
    wait_until(
        "the polling worker is listed",
        Duration::from_secs(10),
        || {
            let (_, list) = api.http("GET", "/api/v1/workers", b"");
            list["workers"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w["id"] == "w-1"))
        },
    );
    let submitted = Instant::now();
    let id = submit(api, "resize", json!({"w": 3}), json!({"max_attempts": 2}));
    let (status, answer, answered) = poll.join().expect("poll thread");
    assert_eq!(status, 200, "{answer}");
    let tasks = answer["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{answer}");
    assert_eq!(tasks[0]["id"], id.as_str());
    assert_eq!(tasks[0]["payload"], json!({"w": 3}));
    assert_eq!(tasks[0]["attempt"], 1);
    eprintln!(
        "{backend:?}: a task submitted during a lease poll was delivered in {:?}",
        answered.duration_since(submitted)
    );
    let lease = tasks[0]["lease"].as_str().expect("lease").to_owned();

    let report = |what: &str, body: Value| {
        api.http(
            "POST",
            &format!("/api/v1/tasks/{id}/{what}"),
            body.to_string().as_bytes(),
        )
    };
    // Foreign and malformed leases change nothing.
    for bad in ["1.someone-else", "2.w-1", "nonsense"] {
        let (status, error) = report("complete", json!({"lease": bad, "result": 1}));
        assert_eq!(status, 409, "{bad}: {error}");
        assert_eq!(error["error"]["code"], "lease_lost");
    }
    assert_eq!(api.task(&id)["status"], "running");
    let (status, beat) = report("heartbeat", json!({"lease": lease, "progress": 0.5}));
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["cancel_requested"], false);
    let (status, error) = report(
        "logs",
        json!({"lease": lease, "lines": [{"stream": "system", "line": "x"}]}),
    );
    assert_eq!(status, 400, "{error}");
    let (status, _) = report(
        "logs",
        json!({"lease": lease, "lines": [{"stream": "stdout", "line": "working"}]}),
    );
    assert_eq!(status, 200);
    let (status, done) = report("complete", json!({"lease": lease, "result": {"w": 6}}));
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "succeeded");
    let task = api.task(&id);
    assert_eq!(task["result"], json!({"w": 6}));
    let lines: Vec<String> = log_lines(api, &id)
        .iter()
        .map(|l| l["line"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        lines.contains(&"working".to_owned()) && lines.contains(&"progress: 0.5".to_owned()),
        "{lines:?}"
    );
    // Stale: the task is finished.
    for (what, body) in [
        ("complete", json!({"lease": lease, "result": 0})),
        ("heartbeat", json!({"lease": lease})),
        ("fail", json!({"lease": lease, "error": "late"})),
    ] {
        let (status, error) = report(what, body);
        assert_eq!(status, 409, "{what}: {error}");
    }
    assert_eq!(
        api.task(&id)["result"],
        json!({"w": 6}),
        "a stale report changed nothing"
    );

    // Expired: a lease nobody renews ends, the task goes back to its queue, and the old
    // lease's reports are refused.
    let expiring = submit(api, "resize", json!({}), json!({"max_attempts": 3}));
    let body = json!({"worker": "w-2", "kinds": ["resize"]});
    let (status, answer) = api.http("POST", "/api/v1/leases", body.to_string().as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tasks"][0]["id"], expiring.as_str(), "{answer}");
    let old = answer["tasks"][0]["lease"]
        .as_str()
        .expect("lease")
        .to_owned();
    wait_until(
        "the unrenewed lease expired",
        Duration::from_secs(30),
        || api.task(&expiring)["status"] != "running",
    );
    let (status, error) = api.http(
        "POST",
        &format!("/api/v1/tasks/{expiring}/heartbeat"),
        json!({"lease": old}).to_string().as_bytes(),
    );
    assert_eq!(status, 409, "{error}");
    // Taken again: attempt 2, and the fail report retries it.
    let (_, answer) = api.http(
        "POST",
        "/api/v1/leases",
        json!({"worker": "w-2", "kinds": ["resize"], "wait_ms": 10000})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(answer["tasks"][0]["attempt"], 2, "{answer}");
    let lease = answer["tasks"][0]["lease"]
        .as_str()
        .expect("lease")
        .to_owned();
    let (status, failed) = api.http(
        "POST",
        &format!("/api/v1/tasks/{expiring}/fail"),
        json!({"lease": lease, "error": "no disk", "retry": false})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed", "retry: false fails at once");
    assert_eq!(api.task(&expiring)["last_error"], "no disk");

    // Bad requests.
    for (body, code) in [
        (json!({"worker": "w", "kinds": ["echo"]}), "unknown_kind"),
        (json!({"worker": "w", "kinds": ["nope"]}), "unknown_kind"),
        (json!({"worker": "w", "kinds": []}), "invalid_request"),
        (
            json!({"worker": "w", "kinds": ["resize"], "wait_ms": 40000}),
            "invalid_request",
        ),
        (
            json!({"worker": "w", "kinds": ["resize"], "max": 0}),
            "invalid_request",
        ),
        (
            json!({"worker": "bad id", "kinds": ["resize"]}),
            "invalid_request",
        ),
        (
            json!({"worker": "w", "kinds": ["resize"], "extra": 1}),
            "invalid_json",
        ),
    ] {
        let (status, error) = api.http("POST", "/api/v1/leases", body.to_string().as_bytes());
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
    }
    let (status, error) = api.http(
        "POST",
        "/api/v1/tasks/not-a-uuid/heartbeat",
        br#"{"lease": "1.w"}"#,
    );
    assert_eq!(status, 400, "{error}");
    // taskd's own workers never run a declared kind, and leases never hand out a built-in one.
    let echo = submit(api, "echo", json!({"x": 1}), json!({}));
    wait_status(api, &echo, "succeeded", Duration::from_secs(20));
    let (status, error) = api.http(
        "POST",
        &format!("/api/v1/tasks/{echo}/complete"),
        br#"{"lease": "1.w-1"}"#,
    );
    assert_eq!(status, 409, "{error}");
}

/// A submit of a kind neither built in nor declared is refused with the list of kinds, and
/// an agent for an undeclared kind stops with one line and exit 1.
fn undeclared_kinds_are_refused(backend: Backend) {
    let Some(platform) = Platform::start(backend, "remote_undeclared", KINDS, &[]) else {
        return;
    };
    let api = platform.api();
    let line = api.taskctl(&["submit", "reszie"]).fails_with(1);
    assert!(
        line.contains("unknown kind 'reszie'") && line.contains("resize, slow"),
        "{line}"
    );
    let worker = agent(api, &["--kind", "thumbnail"], "true");
    let run = common::wait_child(worker, Duration::from_secs(20));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let last = run
        .stderr
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(
        last.contains("'thumbnail' is not declared"),
        "{}",
        run.stderr
    );
}

/// The Rust example (`api/examples/worker.rs`, built by `cargo test --workspace`) serves
/// `resize` through the api crate's client: results for good payloads, a failure without
/// retry for a bad one.
fn the_rust_example_worker_serves_its_kind(backend: Backend) {
    let example = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join("worker")))
        .filter(|path| path.is_file());
    let Some(example) = example else {
        taskplane_testkit::skip(
            "the Rust example worker is not built (cargo test --workspace builds it)",
        );
        return;
    };
    let Some(platform) = Platform::start(backend, "remote_rust_example", KINDS, &[]) else {
        return;
    };
    let api = platform.api();
    let mut worker = Command::new(example)
        .arg(&api.url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example worker");
    let good = submit(api, "resize", json!({"w": 3, "h": 4}), json!({}));
    let bad = submit(
        api,
        "resize",
        json!({"w": "wide"}),
        json!({"max_attempts": 3}),
    );
    let done = wait_status(api, &good, "succeeded", Duration::from_secs(30));
    assert_eq!(done["result"], json!({"w": 6, "h": 8}));
    let failed = wait_status(api, &bad, "failed", Duration::from_secs(30));
    assert_eq!(failed["attempts"], 1, "no retry: {failed}");
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("needs numbers")),
        "{failed}"
    );
    worker.kill().expect("stop the example");
    let _ = worker.wait();
}

/// taskd goes away while the agent runs a task: the agent keeps the task running, retries
/// its report until taskd is back (within the lease); and taskd going away while the agent
/// waits for work costs a reconnection with backoff, nothing more.
#[test]
fn the_agent_rides_out_taskd_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let db = format!("sqlite://{}", dir.path().join("taskd.db").display());
    let flags = ["--listen", &listen, "--database", &db, "--kinds", "slow"];
    let mut daemon = Daemon::start_with(dir.path(), &flags);
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).expect("dir");
    let script = format!(
        r#"touch {dir}/started-$TASKPLANE_TASK_ID; sleep 1; touch {dir}/done-$TASKPLANE_TASK_ID; echo '{{"survived": true}}'"#,
        dir = marks.display()
    );
    let mut worker = agent(&daemon, &["--kind", "slow"], &script);
    let first = submit(&daemon, "slow", json!({}), json!({}));
    wait_until("the task started", Duration::from_secs(20), || {
        marks.join(format!("started-{first}")).exists()
    });
    daemon.kill9();
    // The task ends while taskd is down: its end can only be reported later.
    wait_until("the task ended", Duration::from_secs(20), || {
        marks.join(format!("done-{first}")).exists()
    });
    let mut daemon = Daemon::start_with(dir.path(), &flags);
    let done = wait_status(&daemon, &first, "succeeded", Duration::from_secs(30));
    assert_eq!(done["result"], json!({"survived": true}));
    assert_eq!(
        done["attempts"], 1,
        "the report was retried, not the task: {done}"
    );

    // Down while the agent waits for work.
    daemon.kill9();
    let daemon = Daemon::start_with(dir.path(), &flags);
    let second = submit(&daemon, "slow", json!({}), json!({}));
    wait_status(&daemon, &second, "succeeded", Duration::from_secs(60));
    signal(&worker, "TERM");
    let run = common::wait_child(worker_take(&mut worker), Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("retrying") && run.stderr.contains("taskd answers again"),
        "{}",
        run.stderr
    );
}

on_both_backends!(
    the_rust_example_worker_serves_its_kind,
    the_agent_runs_tasks_with_results_and_logs,
    a_killed_agent_loses_its_lease_and_another_finishes,
    cancel_kills_the_remote_process,
    sigterm_drains,
    leases_long_poll_and_guard_every_report,
    undeclared_kinds_are_refused,
);
