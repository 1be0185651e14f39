//! `--broker redis://`: api and worker processes on the local PostgreSQL and a `redis-server`
//! of each test's own (a free port, a temp dir; Debian's package, installed by
//! scripts/install-test-tools.sh). Without redis-server these tests skip (with
//! TASKPLANE_REQUIRE_SERVICES=1 they fail).

use std::time::Duration;

use serde_json::{Value, json};
use taskplane_testkit::TempRedis;

use super::{
    a_killed_worker_loses_nothing, cluster, drain_exactly_once, shared, sleeps, wait_all_succeeded,
};
use crate::common::{Daemon, Platform, instant, taskd_bin, wait_until};

/// A production platform (its own database) and a Redis of its own.
fn redis_cluster(test: &str, aof: bool) -> Option<(Platform, TempRedis)> {
    let cluster = cluster(test)?;
    let redis = TempRedis::start(test, aof)?;
    Some((cluster, redis))
}

/// `XLEN` of a queue's stream.
fn stream_len(redis: &TempRedis, queue: &str) -> Option<u64> {
    redis
        .cli(&["XLEN", &format!("taskplane:q:{queue}")])
        .trim()
        .parse()
        .ok()
}

#[test]
fn one_api_and_two_workers_drain_5000_tasks_exactly_once() {
    let _shared = shared();
    let Some((cluster, redis)) = redis_cluster("redis_drain_5000", false) else {
        return;
    };
    let api = cluster.spawn_with_broker("api", &redis.url, &[]);
    let a = cluster.spawn_with_broker("worker", &redis.url, &["--concurrency", "16"]);
    let b = cluster.spawn_with_broker("worker", &redis.url, &["--concurrency", "16"]);
    wait_until("every process to be ready", Duration::from_secs(30), || {
        api.ready() == 200 && a.ready() == 200 && b.ready() == 200
    });

    let password = redis
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('@').next());
    let password = password.expect("the URL has a password");
    drain_exactly_once(&api, &a, &b, 5000, password);
    for process in [&api, &a, &b] {
        let log = process.log();
        assert!(log.contains("connected to Redis"), "{log}");
    }

    // The queue shows the broker's view: both workers consume, nothing is left unacked.
    let (_, queues) = api.http("GET", "/api/v1/queues", b"");
    let default = &queues["queues"][0];
    assert_eq!(default["broker"]["consumers"], 2, "{queues}");
    // Delivered entries are trimmed away by the dispatchers' housekeeping.
    wait_until(
        "the stream to be trimmed to nothing",
        Duration::from_secs(30),
        || stream_len(&redis, "default") == Some(0),
    );
    let groups = redis.cli(&["XINFO", "GROUPS", "taskplane:q:default"]);
    assert!(groups.contains("taskd"), "{groups}");
    let (_, queues) = api.http("GET", "/api/v1/queues", b"");
    assert_eq!(queues["queues"][0]["broker"]["messages"], 0, "{queues}");
}

#[test]
fn killing_a_worker_mid_run_loses_nothing() {
    let _shared = shared();
    let Some((cluster, redis)) = redis_cluster("redis_kill_worker", false) else {
        return;
    };
    a_killed_worker_loses_nothing(&cluster, &redis.url);
}

/// Kills Redis mid-run and starts it again: with `aof` it comes back with its streams, without
/// it comes back empty. Either way nothing accepted is lost.
fn a_redis_restart_mid_run_loses_nothing(aof: bool) {
    let _shared = shared();
    let test = if aof {
        "redis_restart_aof"
    } else {
        "redis_restart_memory"
    };
    let Some((cluster, mut redis)) = redis_cluster(test, aof) else {
        return;
    };
    let api = cluster.spawn_with_broker("api", &redis.url, &[]);
    let worker = cluster.spawn_with_broker("worker", &redis.url, &["--concurrency", "8"]);
    wait_until("every process to be ready", Duration::from_secs(30), || {
        api.ready() == 200 && worker.ready() == 200
    });
    api.submit_batch(&sleeps(200, 25));
    wait_until("work to start", Duration::from_secs(30), || {
        api.count("succeeded") > 10
    });

    redis.kill();
    wait_until("/ready to fail", Duration::from_secs(15), || {
        api.ready() == 503 && worker.ready() == 503
    });
    let (_, ready) = api.http("GET", "/ready", b"");
    let check = ready["checks"]["broker"].as_str().unwrap_or("").to_owned();
    assert!(check.contains("Redis"), "{ready}");
    assert!(check.contains(":***@"), "the password is hidden: {check}");
    // Submits still commit while Redis is down.
    api.submit_batch(&sleeps(20, 10));
    redis.restart();
    wait_until("/ready to recover", Duration::from_secs(60), || {
        api.ready() == 200 && worker.ready() == 200
    });

    wait_all_succeeded(&api, 220, Duration::from_secs(180));
    let tasks = api.all_tasks();
    assert!(
        tasks.iter().all(|t| t["status"] == "succeeded"),
        "every accepted task ran"
    );
    // New work after the restart flows through the new streams at once.
    let out = api
        .taskctl(&[
            "submit",
            "echo",
            "-p",
            "after=restart",
            "--wait",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(out["result"], json!({"after": "restart"}));
}

#[test]
fn a_redis_restart_without_persistence_loses_nothing() {
    a_redis_restart_mid_run_loses_nothing(false);
}

#[test]
fn a_redis_restart_with_aof_loses_nothing() {
    a_redis_restart_mid_run_loses_nothing(true);
}

#[test]
fn cancel_reaches_the_worker_and_priorities_hold() {
    let _shared = shared();
    let Some((cluster, redis)) = redis_cluster("redis_cancel_priorities", false) else {
        return;
    };
    let api = cluster.spawn_with_broker("api", &redis.url, &[]);
    let _worker = cluster.spawn_with_broker("worker", &redis.url, &["--concurrency", "1"]);
    wait_until("the api to be ready", Duration::from_secs(30), || {
        api.ready() == 200
    });

    // Cancel: a running task stops on the worker.
    let long = api
        .taskctl(&["submit", "sleep", "-p", "ms:=60000", "-q"])
        .ok();
    wait_until("the long task to run", Duration::from_secs(15), || {
        api.task(&long)["status"] == "running"
    });
    api.taskctl(&["cancel", &long]).ok();
    wait_until(
        "the cancel to reach the worker",
        Duration::from_secs(15),
        || api.task(&long)["status"] == "cancelled",
    );

    // Priorities: behind a blocker on the single slot, the high-priority task submitted last
    // starts before every low one submitted earlier.
    let blocker = api
        .taskctl(&["submit", "sleep", "-p", "ms:=3000", "-q"])
        .ok();
    wait_until("the blocker to run", Duration::from_secs(15), || {
        api.task(&blocker)["status"] == "running"
    });
    let mut ids: Vec<String> = (0..5)
        .map(|_| {
            api.taskctl(&["submit", "noop", "--priority", "-1", "-q"])
                .ok()
        })
        .collect();
    ids.push(
        api.taskctl(&["submit", "noop", "--priority", "10", "-q"])
            .ok(),
    );
    let mut args = vec!["watch", "-o", "json"];
    args.extend(ids.iter().map(String::as_str));
    let done = api.taskctl(&args).json();
    let started: Vec<_> = done
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| instant(&t["started_at"]))
        .collect();
    assert!(
        started[..5].iter().all(|low| started[5] <= *low),
        "the high-priority task started after a low one: {started:?}"
    );
}

#[test]
fn a_paused_queue_holds_on_redis_and_resumes() {
    let _shared = shared();
    let Some((cluster, redis)) = redis_cluster("redis_pause", false) else {
        return;
    };
    let api = cluster.spawn_with_broker("api", &redis.url, &[]);
    let _worker = cluster.spawn_with_broker(
        "worker",
        &redis.url,
        &["--concurrency", "4", "--queues", "default,mail"],
    );
    wait_until("the api to be ready", Duration::from_secs(30), || {
        api.ready() == 200
    });
    api.taskctl(&["queues", "pause", "mail"]).ok();
    let held: Vec<Value> = (0..6)
        .map(|_| json!({"kind": "noop", "queue": "mail"}))
        .collect();
    let held = api.submit_batch(&held);
    // Work of another queue flows meanwhile; the paused queue's does not start.
    let other = api
        .taskctl(&["submit", "echo", "-p", "x=1", "--wait", "-q"])
        .ok();
    assert!(!other.is_empty());
    assert!(
        held.iter().all(|id| api.task(id)["status"] == "queued"),
        "a paused queue's task started"
    );
    api.taskctl(&["queues", "resume", "mail"]).ok();
    wait_all_succeeded(&api, 7, Duration::from_secs(60));
}

#[test]
fn bad_urls_and_an_unreachable_redis_give_clear_errors() {
    let _shared = shared();
    let Some(cluster) = cluster("redis_bad_urls") else {
        return;
    };
    for bad in [
        "redis://:s3cret@127.0.0.1:port",
        "redis://:s3cret@127.0.0.1:6379/nine",
        "redis://",
    ] {
        let out = std::process::Command::new(taskd_bin())
            .args(["--listen", "127.0.0.1:0", "--broker", bad])
            .current_dir(cluster.dir.path())
            .output()
            .expect("taskd runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("--broker redis://"), "{stderr}");
        assert!(
            !stderr.contains("s3cret"),
            "the password reached the log: {stderr}"
        );
    }

    // Nothing listens there: the process starts, says it is not ready and why, and still
    // commits submits (the dispatcher publishes them once Redis is back).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://:s3cret@127.0.0.1:{port}");
    let api = cluster.spawn_with_broker("api", &url, &[]);
    wait_until("/ready to answer", Duration::from_secs(20), || {
        api.ready() == 503
    });
    let (_, ready) = api.http("GET", "/ready", b"");
    let check = ready["checks"]["broker"].as_str().unwrap_or("");
    assert!(
        check.starts_with(&format!(
            "not connected to Redis at redis://:***@127.0.0.1:{port}"
        )),
        "{ready}"
    );
    wait_until("the log to say why", Duration::from_secs(20), || {
        api.log().contains("cannot connect to Redis")
    });
    let id = api.taskctl(&["submit", "noop", "-q"]).ok();
    assert_eq!(api.task(&id)["status"], "queued");
    assert!(
        !api.log().contains("s3cret"),
        "the password reached the log"
    );
}

#[test]
fn rediss_carries_the_work_over_tls() {
    let _shared = shared();
    let Some(cluster) = cluster("redis_tls") else {
        return;
    };
    let Some(redis) = TempRedis::start_tls("redis_tls") else {
        return;
    };
    let database = cluster.db.as_ref().expect("a database").url.clone();
    let args = |role| {
        [
            "--role",
            role,
            "--listen",
            "127.0.0.1:0",
            "--database",
            database.as_str(),
            "--broker",
            redis.url.as_str(),
        ]
    };
    // The server's certificate is signed by the test's own CA: trusted through the standard
    // SSL_CERT_FILE, as a private CA would be.
    let trust = [("SSL_CERT_FILE", redis.ca().into_os_string())];
    let api = Daemon::start_with_env(cluster.dir.path(), &args("api"), &trust);
    let worker = Daemon::start_with_env(cluster.dir.path(), &args("worker"), &trust);
    wait_until("both to connect over TLS", Duration::from_secs(30), || {
        api.ready() == 200 && worker.ready() == 200
    });
    let out = api
        .taskctl(&["submit", "echo", "-p", "over=tls", "--wait", "-o", "json"])
        .json();
    assert_eq!(out["result"], json!({"over": "tls"}));

    // Without the CA the certificate is refused: not ready, and the log says so.
    let untrusting = Daemon::start_with(cluster.dir.path(), &args("api"));
    wait_until("the refusal to be logged", Duration::from_secs(30), || {
        untrusting.log().contains("cannot connect to Redis")
    });
    assert_eq!(untrusting.ready(), 503);
    let (_, ready) = untrusting.http("GET", "/ready", b"");
    assert!(
        ready["checks"]["broker"].as_str().is_some_and(
            |check| check.starts_with("not connected to Redis at rediss://:***@localhost")
        ),
        "{ready}"
    );
}
