//! The Redis broker in process, against a `redis-server` of each test's own: what a worker's
//! intake claims for the wakes it reads (the database's order, the rest passed on), and the
//! housekeeping (dead consumers forgotten, acknowledged entries trimmed).

use std::sync::Arc;
use std::time::Duration;

use taskd::broker::redis::{GROUP, stream_key};
use taskd::broker::{Claimant, Gates, Redis, Transport};
use taskd::domain::validate::{self, Kinds};
use taskd::metrics::Metrics;
use taskd::store::{self, Publishable, Store, WorkerRow};
use taskd::util::now_ms;
use taskplane_api::SubmitTask;
use taskplane_testkit::TempRedis;
use uuid::Uuid;

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("taskd.db").display());
    let store = store::open(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    (dir, store)
}

/// Inserts noop tasks of `queue` with these priorities; answers what a publish takes.
async fn insert(store: &dyn Store, queue: &str, priorities: &[i32]) -> Vec<Publishable> {
    let kinds = Kinds::new(false, false, Vec::new());
    let tasks = priorities
        .iter()
        .map(|priority| {
            let request = SubmitTask {
                kind: "noop".into(),
                queue: Some(queue.into()),
                priority: Some(*priority),
                ..Default::default()
            };
            validate::submit(request, &kinds, Uuid::now_v7(), now_ms()).expect("valid")
        })
        .collect();
    store
        .insert(tasks)
        .await
        .expect("insert")
        .into_iter()
        .map(|(task, _)| Publishable::from_task(&task))
        .collect()
}

fn claimant(store: &Arc<dyn Store>, worker: &str) -> Claimant {
    Claimant {
        store: store.clone(),
        worker: worker.into(),
        queues: vec!["default".into()],
        kinds: vec!["noop".into()],
        lease: Duration::from_secs(30),
        metrics: Arc::new(Metrics::default()),
    }
}

fn field(info: &str, name: &str) -> Option<u64> {
    let lines: Vec<&str> = info.lines().map(str::trim).collect();
    let at = lines.iter().position(|line| *line == name)?;
    lines.get(at + 1)?.parse().ok()
}

/// The ids an entry names (its `tasks` field).
fn named(entry: &str) -> Vec<String> {
    entry
        .split('"')
        .filter(|part| Uuid::parse_str(part).is_ok())
        .map(str::to_owned)
        .collect()
}

/// Waits (polling, up to 10 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the intake's next entries.
async fn woken(intake: &mut Box<dyn taskd::broker::Intake>) {
    tokio::time::timeout(Duration::from_secs(10), intake.wait())
        .await
        .expect("entries arrive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_claim_the_best_ready_tasks_and_pass_on_what_does_not_fit() {
    let Some(server) = TempRedis::start("redis wakes", false) else {
        return;
    };
    let (_dir, store) = sqlite().await;
    let redis = Arc::new(Redis::open(&server.url).expect("a Redis URL"));
    let key = stream_key("default");
    let gates = Arc::new(Gates::default());
    let mut first = redis
        .clone()
        .intake(claimant(&store, "first"), 8, gates.clone());
    // Nothing is published yet: a wait given up on leaves its read running, and loses
    // nothing of what that read brings later.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), first.wait())
            .await
            .is_err()
    );

    // Fifteen tasks at priority 0, then five at 5, published in one go: an entry for each.
    let mut priorities = vec![0; 15];
    priorities.extend([5; 5]);
    let tasks = insert(store.as_ref(), "default", &priorities).await;
    assert_eq!(redis.publish(&tasks).await.expect("publish").len(), 20);
    assert_eq!(server.cli(&["XLEN", &key]).trim(), "2");

    // The first worker reads the first entry (fifteen wakes, for priority-0 tasks) and, with
    // five slots, claims the queue's five best: the priority-5 tasks, whatever it named.
    woken(&mut first).await;
    let took = first.take(5).await;
    assert_eq!(took.len(), 5);
    let urgent: Vec<Uuid> = tasks[15..].iter().map(|t| t.id).collect();
    assert!(
        took.iter().all(|(task, _)| urgent.contains(&task.id)),
        "not the priority-5 tasks"
    );
    // The ten wakes it could not use are passed on: a new entry naming ten of the tasks it
    // woke for and did not claim.
    eventually("the passed-on entry", || {
        server.cli(&["XLEN", &key]).trim() == "3"
    })
    .await;
    let passed = named(&server.cli(&["XREVRANGE", &key, "+", "-", "COUNT", "1"]));
    assert_eq!(passed.len(), 10, "{passed:?}");
    let first_ids: Vec<String> = took.iter().map(|(t, _)| t.id.to_string()).collect();
    assert!(passed.iter().all(|id| !first_ids.contains(id)));

    // A second worker reads the next entry (five wakes) and claims five: as many as it woke
    // for, though it has sixteen slots. Then the passed-on entry wakes it for the rest.
    let mut second = redis
        .clone()
        .intake(claimant(&store, "second"), 16, gates.clone());
    woken(&mut second).await;
    let five = second.take(16).await;
    assert_eq!(five.len(), 5, "as many as the entry woke for");
    woken(&mut second).await;
    let ten = second.take(16).await;
    assert_eq!(ten.len(), 10, "the passed-on wakes");
    let mut ids: Vec<Uuid> = took
        .iter()
        .chain(&five)
        .chain(&ten)
        .map(|(t, _)| t.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "each task claimed once");

    // Entries are acknowledged once the outcomes of the tasks claimed on them are in.
    let stats = redis.queue_stats("default").await.expect("stats");
    assert_eq!((stats.messages, stats.consumers), (0, 2), "all delivered");
    let groups = server.cli(&["XINFO", "GROUPS", &key]);
    assert_eq!(field(&groups, "pending"), Some(3), "{groups}");
    for (_, receipt) in took.into_iter().chain(five).chain(ten) {
        receipt.ack().await;
    }
    let groups = server.cli(&["XINFO", "GROUPS", &key]);
    assert_eq!(field(&groups, "pending"), Some(0), "{groups}");

    // A duplicate wake (a task published twice) claims nothing and is acknowledged.
    redis.publish(&tasks[..1]).await.expect("publish");
    assert!(first.take(8).await.is_empty(), "a look finds nothing ready");
    woken(&mut first).await;
    assert!(
        first.take(8).await.is_empty(),
        "the duplicate claims nothing"
    );
    eventually("the duplicate to be acknowledged", || {
        field(&server.cli(&["XINFO", "GROUPS", &key]), "pending") == Some(0)
    })
    .await;

    // Redis lost the stream and its group (a restart without persistence, a flush): the
    // reader makes the group again and reads what was published since.
    assert_eq!(server.cli(&["DEL", &key]).trim(), "1");
    let late = insert(store.as_ref(), "default", &[0]).await;
    redis.publish(&late).await.expect("publish");
    woken(&mut first).await;
    let again = first.take(8).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0.id, late[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_forgets_dead_consumers_and_trims_what_was_delivered() {
    let Some(server) = TempRedis::start("redis housekeeping", false) else {
        return;
    };
    let (_dir, store) = sqlite().await;
    let redis = Redis::open(&server.url).expect("a Redis URL");
    let key = stream_key("default");
    for _ in 0..3 {
        let tasks = insert(store.as_ref(), "default", &[0]).await;
        redis.publish(&tasks).await.expect("publish");
    }
    // Two consumers read an entry each and do not acknowledge it: "ghost" has no worker row,
    // "alive" beats in the database. A third reads one and acknowledges it.
    for consumer in ["ghost", "alive", "done"] {
        let read = server.cli(&[
            "XREADGROUP",
            "GROUP",
            GROUP,
            consumer,
            "COUNT",
            "1",
            "STREAMS",
            &key,
            ">",
        ]);
        assert!(read.contains("tasks"), "{read}");
    }
    let pending_of = |consumer: &str| {
        let out = server.cli(&["XPENDING", &key, GROUP, "-", "+", "10", consumer]);
        out.lines().next().unwrap_or("").trim().to_owned()
    };
    let done_id = pending_of("done");
    assert_eq!(server.cli(&["XACK", &key, GROUP, &done_id]).trim(), "1");
    store
        .heartbeat(&WorkerRow {
            id: "alive".into(),
            host: "h".into(),
            pid: 1,
            queues: "default".into(),
            concurrency: 1,
            busy: 1,
            started_at: now_ms(),
            heartbeat_at: now_ms(),
            kinds: "noop".into(),
            remote: false,
        })
        .await
        .expect("heartbeat");
    // One more entry that nobody has read.
    let unread = insert(store.as_ref(), "default", &[0]).await;
    redis.publish(&unread).await.expect("publish");
    let stats = redis.queue_stats("default").await.expect("stats");
    assert_eq!(
        (stats.messages, stats.consumers),
        (1, 3),
        "one entry not read yet"
    );

    // What was delivered is trimmed, pending or not; the unread entry stays. Nobody is idle
    // long enough to be forgotten.
    let trimmed = redis
        .tend_with(store.as_ref(), Duration::from_secs(3600))
        .await
        .expect("tend");
    assert_eq!(trimmed, 3);
    assert_eq!(server.cli(&["XLEN", &key]).trim(), "1");
    let groups = server.cli(&["XINFO", "GROUPS", &key]);
    assert_eq!(field(&groups, "pending"), Some(2), "{groups}");

    // Idle past the limit: the consumers of workers not beating are forgotten with what they
    // held; the live worker is kept.
    redis
        .tend_with(store.as_ref(), Duration::ZERO)
        .await
        .expect("tend");
    let consumers = server.cli(&["XINFO", "CONSUMERS", &key, GROUP]);
    assert!(!consumers.contains("ghost"), "{consumers}");
    assert!(!consumers.contains("done"), "{consumers}");
    assert!(consumers.contains("alive"), "{consumers}");
    // The live worker's acknowledgement still lands though its entry was trimmed.
    let alive_id = pending_of("alive");
    assert_eq!(server.cli(&["XACK", &key, GROUP, &alive_id]).trim(), "1");
    let groups = server.cli(&["XINFO", "GROUPS", &key]);
    assert_eq!(field(&groups, "pending"), Some(0), "{groups}");
    assert_eq!(server.cli(&["XLEN", &key]).trim(), "1", "the unread entry");
}
