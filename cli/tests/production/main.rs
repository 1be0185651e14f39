//! Production mode end to end: `taskd --role api` and `--role worker` processes on the local
//! PostgreSQL and RabbitMQ, each test in a database and vhost of its own (and, in `redis`, on a
//! `redis-server` of its own). The fault tests stop
//! and restart the real servers, so they hold an exclusive lock that every other test here
//! shares. Without the services these tests skip (with TASKPLANE_REQUIRE_SERVICES=1 they fail).

// A binary of its own: these tests stop and restart the servers every other suite uses, and
// cargo runs test binaries one at a time.
#[macro_use]
#[path = "../it/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use common::{Backend, Daemon, Platform, wait_until};
use serde_json::{Value, json};
use taskplane_testkit::rabbitmqctl;

mod redis;

static FAULTS: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    FAULTS.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    FAULTS.write().unwrap_or_else(|e| e.into_inner())
}

/// A production platform with no process started: a database and a vhost of its own.
fn cluster(test: &str) -> Option<Platform> {
    Platform::empty(Backend::Production, test)
}

fn noops(n: usize) -> Vec<Value> {
    (0..n).map(|_| json!({"kind": "noop"})).collect()
}

fn sleeps(n: usize, ms: u64) -> Vec<Value> {
    (0..n)
        .map(|_| json!({"kind": "sleep", "payload": {"ms": ms}}))
        .collect()
}

fn worker_of(task: &Value, worker: &Daemon) -> bool {
    task["worker"]
        .as_str()
        .is_some_and(|w| w.contains(&format!("-{}-", worker.pid())))
}

fn wait_all_succeeded(api: &Daemon, n: usize, timeout: Duration) {
    wait_until(&format!("{n} tasks to succeed"), timeout, || {
        api.count("succeeded") == n
    });
}

/// Submits `n` noop tasks through `api` and checks that workers `a` and `b` ran every one of
/// them exactly once, both taking work, and that no process logged a password.
fn drain_exactly_once(api: &Daemon, a: &Daemon, b: &Daemon, n: usize, password: &str) {
    api.submit_batch(&noops(n));
    wait_all_succeeded(api, n, Duration::from_secs(240));
    let tasks = api.all_tasks();
    assert_eq!(tasks.len(), n);
    assert!(
        tasks.iter().all(|t| t["attempts"] == 1),
        "every task ran exactly once"
    );
    let by_a = tasks.iter().filter(|t| worker_of(t, a)).count();
    let by_b = tasks.iter().filter(|t| worker_of(t, b)).count();
    assert_eq!(by_a + by_b, n);
    assert!(
        by_a > 0 && by_b > 0,
        "both workers took work: {by_a} + {by_b}"
    );
    for process in [api, a, b] {
        assert!(
            !process.log().contains(password),
            "a password reached the log"
        );
    }
}

/// Kills a worker (`kill -9`) while it runs tasks of `broker` (`amqp`, or a Redis URL): a
/// second worker runs everything, the interrupted tasks again.
fn a_killed_worker_loses_nothing(cluster: &Platform, broker: &str) {
    let api = cluster.spawn_with_broker("api", broker, &[]);
    let flags = ["--concurrency", "4", "--lease", "2s"];
    let mut doomed = cluster.spawn_with_broker("worker", broker, &flags);
    let ids = api.submit_batch(&sleeps(24, 1000));
    wait_until(
        "the doomed worker to run tasks",
        Duration::from_secs(30),
        || {
            ids.iter()
                .any(|id| worker_of(&api.task(id), &doomed) && api.task(id)["status"] == "running")
        },
    );
    let survivor = cluster.spawn_with_broker("worker", broker, &flags);
    doomed.kill9();

    wait_all_succeeded(&api, 24, Duration::from_secs(120));
    let tasks = api.all_tasks();
    assert!(
        tasks.iter().any(|t| t["attempts"] == 2),
        "an interrupted task ran again"
    );
    assert!(tasks.iter().any(|t| worker_of(t, &survivor)));
    assert!(
        tasks.iter().all(|t| t["attempts"].as_u64() <= Some(2)),
        "no task ran more than twice"
    );
}

#[test]
fn one_api_and_two_workers_drain_3000_tasks_through_rabbitmq() {
    let _shared = shared();
    let Some(cluster) = cluster("drain_3000") else {
        return;
    };
    let api = cluster.spawn("api", &[]);
    let a = cluster.spawn("worker", &["--concurrency", "16"]);
    let b = cluster.spawn("worker", &["--concurrency", "16"]);
    cluster.vhost.as_ref().expect("vhost").queues(); // the vhost answers
    wait_until("both workers to be ready", Duration::from_secs(30), || {
        a.ready() == 200 && b.ready() == 200
    });

    drain_exactly_once(&api, &a, &b, 3000, ":guest@");
    wait_until(
        "every message to be acknowledged",
        Duration::from_secs(10),
        || {
            cluster
                .vhost
                .as_ref()
                .expect("vhost")
                .queues()
                .iter()
                .all(|(_, messages, _)| *messages == 0)
        },
    );
}

#[test]
fn broker_db_on_postgres_with_two_workers() {
    let _shared = shared();
    let Some(cluster) = cluster("broker_db_on_postgres") else {
        return;
    };
    let api = cluster.spawn_with_broker("api", "db", &[]);
    let a = cluster.spawn_with_broker("worker", "db", &["--concurrency", "8"]);
    let b = cluster.spawn_with_broker("worker", "db", &["--concurrency", "8"]);
    api.submit_batch(&sleeps(200, 20));
    wait_all_succeeded(&api, 200, Duration::from_secs(120));
    let tasks = api.all_tasks();
    assert!(tasks.iter().all(|t| t["attempts"] == 1));
    assert!(tasks.iter().any(|t| worker_of(t, &a)) && tasks.iter().any(|t| worker_of(t, &b)));

    // A submit wakes a worker through NOTIFY: one echo round-trips through taskctl.
    let out = api
        .taskctl(&[
            "submit",
            "echo",
            "-p",
            "via=notify",
            "--wait",
            "-o",
            "table",
        ])
        .ok();
    assert!(out.contains("notify"), "{out}");
}

#[test]
fn killing_a_worker_mid_run_loses_nothing() {
    let _shared = shared();
    let Some(cluster) = cluster("kill_worker") else {
        return;
    };
    a_killed_worker_loses_nothing(&cluster, "amqp");
}

/// Runs `rabbitmqctl start_app` when dropped, so a failing test leaves the broker up.
struct BrokerRestarter;

impl Drop for BrokerRestarter {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

#[test]
fn a_rabbitmq_restart_mid_run_loses_nothing_and_ready_recovers() {
    let _exclusive = exclusive();
    let Some(cluster) = cluster("rabbitmq_restart") else {
        return;
    };
    let api = cluster.spawn("api", &[]);
    let worker = cluster.spawn("worker", &["--concurrency", "8"]);
    wait_until("the api to be ready", Duration::from_secs(30), || {
        api.ready() == 200
    });
    api.submit_batch(&sleeps(200, 25));
    wait_until("work to start", Duration::from_secs(30), || {
        api.count("succeeded") > 10
    });

    let _restart = BrokerRestarter;
    rabbitmqctl(&["stop_app"]);
    wait_until("/ready to fail", Duration::from_secs(15), || {
        api.ready() == 503 && worker.ready() == 503
    });
    let (_, ready) = api.http("GET", "/ready", b"");
    assert!(
        ready["checks"]["broker"]
            .as_str()
            .unwrap_or("")
            .contains("RabbitMQ"),
        "{ready}"
    );
    // Submits still commit while the broker is down.
    api.submit_batch(&sleeps(20, 10));
    rabbitmqctl(&["start_app"]);
    wait_until("/ready to recover", Duration::from_secs(60), || {
        api.ready() == 200 && worker.ready() == 200
    });

    wait_all_succeeded(&api, 220, Duration::from_secs(180));
}

#[test]
fn a_task_committed_while_the_broker_is_down_still_runs() {
    let _exclusive = exclusive();
    let Some(cluster) = cluster("outbox") else {
        return;
    };
    let api = cluster.spawn("api", &[]);
    let _worker = cluster.spawn("worker", &[]);
    wait_until("the api to be ready", Duration::from_secs(30), || {
        api.ready() == 200
    });

    let _restart = BrokerRestarter;
    rabbitmqctl(&["stop_app"]);
    wait_until("the api to notice", Duration::from_secs(15), || {
        api.ready() == 503
    });
    // The commit succeeds and the publish after it fails: 201 all the same.
    let id = api
        .taskctl(&["submit", "echo", "-p", "outbox=yes", "-q"])
        .ok();
    assert_eq!(api.task(&id)["status"], "queued");
    rabbitmqctl(&["start_app"]);

    let run = api.taskctl(&["watch", &id, "-o", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()[0]["result"], json!({"outbox": "yes"}));
}

/// Starts PostgreSQL again when dropped.
struct PostgresRestarter;

fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut dir| dir.next())
        .and_then(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster under /etc/postgresql");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action}");
}

impl Drop for PostgresRestarter {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| pg_ctl("start"));
    }
}

#[test]
fn a_postgres_restart_mid_run_loses_nothing_and_ready_recovers() {
    let _exclusive = exclusive();
    let Some(cluster) = cluster("postgres_restart") else {
        return;
    };
    if !std::path::Path::new("/etc/postgresql").exists() {
        taskplane_testkit::skip(
            "postgres_restart: no local cluster to restart (pg_ctlcluster and /etc/postgresql)",
        );
        return;
    }
    let api = cluster.spawn("api", &[]);
    let worker = cluster.spawn("worker", &["--concurrency", "8"]);
    wait_until("the api to be ready", Duration::from_secs(30), || {
        api.ready() == 200
    });
    api.submit_batch(&sleeps(150, 30));
    wait_until("work to start", Duration::from_secs(30), || {
        api.count("succeeded") > 10
    });

    let _restart = PostgresRestarter;
    pg_ctl("stop");
    wait_until("/ready to fail", Duration::from_secs(15), || {
        api.ready() == 503 && worker.ready() == 503
    });
    let (status, answer) = api.http("POST", "/api/v1/tasks", br#"{"kind":"noop"}"#);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "store_unavailable");
    let line = api.taskctl(&["list"]).fails_with(1);
    assert!(line.contains("unavailable"), "{line}");
    pg_ctl("start");
    wait_until("/ready to recover", Duration::from_secs(60), || {
        api.ready() == 200 && worker.ready() == 200
    });

    wait_all_succeeded(&api, 150, Duration::from_secs(180));
}

#[test]
fn the_dashboard_of_an_api_process_shows_what_the_workers_did() {
    let _shared = shared();
    let Some(cluster) = cluster("dashboard") else {
        return;
    };
    let api = cluster.spawn("api", &[]);
    let worker = cluster.spawn("worker", &[]);
    wait_until("the worker to be ready", Duration::from_secs(30), || {
        worker.ready() == 200
    });
    let body = json!({"kind": "echo", "payload": {"greeting": "from production"}}).to_string();
    let (status, task) = api.http("POST", "/api/v1/tasks", body.as_bytes());
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().expect("id").to_owned();
    wait_until("the task to succeed", Duration::from_secs(30), || {
        api.task(&id)["status"] == "succeeded"
    });
    let ran_on = api.task(&id)["worker"].as_str().expect("worker").to_owned();
    let page = |path: &str| {
        let (status, page) = api.http("GET", path, b"");
        assert_eq!(status, 200, "{path}: {page}");
        page.as_str().expect("HTML").to_owned()
    };
    let task_page = page(&format!("/ui/tasks/{id}"));
    assert!(task_page.contains("st-succeeded") && task_page.contains("from production"));
    assert!(
        task_page.contains(&ran_on),
        "the worker process that ran it"
    );
    let overview = page("/ui/");
    assert!(
        overview.contains(&ran_on),
        "the worker in the overview's list"
    );
    assert!(worker_of(&api.task(&id), &worker));
    // The chart counts the task, read from PostgreSQL.
    assert!(
        overview.contains("<strong>1</strong> finished"),
        "{overview}"
    );
    let list = page("/ui/tasks?queue=default");
    assert!(list.contains(&format!("data-task=\"{id}\"")));
}
