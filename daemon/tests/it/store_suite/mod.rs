//! The store contract, written once and run against every backend (each backend's test file
//! opens a fresh store and calls these).

use std::collections::HashSet;
use std::sync::Arc;

use taskd::domain::lifecycle::{Event, Settlement, transition};
use taskd::domain::validate::{self, Kinds, NewTask};
use taskd::store::{CancelOutcome, ListFilter, NewLogLine, RetryOutcome, Store};
use taskplane_api::{LogStream, SubmitTask, TaskStatus};
use uuid::Uuid;

mod controls;
mod dependencies;
mod schedules;
pub use controls::*;
pub use dependencies::*;
pub use schedules::*;

const NOW: i64 = 1_800_000_000_000;
const LEASE: i64 = 30_000;

fn kinds() -> Kinds {
    Kinds::new(true, true, vec!["resize".into()])
}

fn new_task(edit: impl FnOnce(&mut SubmitTask)) -> NewTask {
    let mut request = SubmitTask {
        kind: "noop".into(),
        ..Default::default()
    };
    edit(&mut request);
    validate::submit(request, &kinds(), Uuid::now_v7(), NOW).expect("valid task")
}

/// A noop task, as a submit without options makes it.
pub fn noop_task() -> NewTask {
    new_task(|_| {})
}

fn queues() -> Vec<String> {
    vec!["default".to_owned()]
}

async fn insert_one(store: &dyn Store, task: NewTask) -> Uuid {
    let mut rows = store.insert(vec![task]).await.expect("insert");
    let (row, created) = rows.pop().expect("one row");
    assert!(created);
    row.id
}

pub async fn insert_get_and_idempotency(store: Arc<dyn Store>) {
    let task = new_task(|t| {
        t.kind = "echo".into();
        t.payload = Some(serde_json::json!({"a": [1, 2]}));
        t.labels = [("team".to_owned(), "ops".to_owned())].into();
        t.idempotency_key = Some("key-1".into());
        t.retry_base_ms = Some(20);
        t.retry_max_ms = Some(5000);
    });
    let id = insert_one(store.as_ref(), task.clone()).await;
    let row = store.get(id).await.expect("get").expect("exists");
    assert_eq!(row.kind, "echo");
    assert_eq!(row.status, TaskStatus::Queued);
    assert_eq!(row.payload, r#"{"a":[1,2]}"#);
    assert_eq!(row.labels, r#"{"team":"ops"}"#);
    assert_eq!(row.attempts, 0);
    assert_eq!(
        (row.retry_base_ms, row.retry_max_ms),
        (Some(20), Some(5000))
    );
    assert_eq!(row.idempotency_key.as_deref(), Some("key-1"));

    // Same key again (and twice in one batch): the first task comes back, nothing new.
    let again = new_task(|t| t.idempotency_key = Some("key-1".into()));
    let rows = store
        .insert(vec![again.clone(), again])
        .await
        .expect("insert");
    assert!(rows.iter().all(|(row, created)| row.id == id && !created));
    assert!(store.get(Uuid::now_v7()).await.expect("get").is_none());
}

pub async fn concurrent_claims_never_share_a_task(store: Arc<dyn Store>) {
    let tasks: Vec<NewTask> = (0..200).map(|_| new_task(|_| {})).collect();
    store.insert(tasks).await.expect("insert");
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim(&worker, &queues(), 7, NOW, NOW + LEASE)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    break;
                }
                mine.extend(claimed.into_iter().map(|t| t.id));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for handle in handles {
        for id in handle.await.expect("claimer") {
            assert!(seen.insert(id), "task {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 200);
}

pub async fn claims_follow_priority_and_queue(store: Arc<dyn Store>) {
    let low = insert_one(store.as_ref(), new_task(|t| t.priority = Some(-1))).await;
    let high = insert_one(store.as_ref(), new_task(|t| t.priority = Some(10))).await;
    let other = insert_one(store.as_ref(), new_task(|t| t.queue = Some("other".into()))).await;
    let later = insert_one(store.as_ref(), new_task(|t| t.delay_ms = Some(60_000))).await;

    let first = store
        .claim("w", &queues(), 1, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), vec![high]);
    assert_eq!(first[0].attempt, 1);
    let rest = store
        .claim("w", &queues(), 10, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(rest.iter().map(|t| t.id).collect::<Vec<_>>(), vec![low]);

    let mine = store
        .claim("w", &["other".to_owned()], 10, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(mine.iter().map(|t| t.id).collect::<Vec<_>>(), vec![other]);

    // The scheduled task becomes claimable only once promoted at its time.
    assert_eq!(store.promote_due(NOW + 59_000).await.expect("promote"), 0);
    assert_eq!(store.promote_due(NOW + 60_000).await.expect("promote"), 1);
    let due = store
        .claim("w", &queues(), 10, NOW + 60_000, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(due.iter().map(|t| t.id).collect::<Vec<_>>(), vec![later]);
}

pub async fn settling_is_guarded(store: Arc<dyn Store>) {
    let id = insert_one(store.as_ref(), new_task(|_| {})).await;
    store
        .claim("w1", &queues(), 1, NOW, NOW + LEASE)
        .await
        .expect("claim");
    let done = Settlement::Succeeded {
        result: "42".into(),
    };

    assert!(
        !store.settle(id, "w2", &done, NOW).await.expect("settle"),
        "not the owner"
    );
    assert!(
        store
            .settle(id, "w1", &done, NOW + 5)
            .await
            .expect("settle")
    );
    assert!(
        !store
            .settle(id, "w1", &done, NOW + 6)
            .await
            .expect("settle"),
        "twice"
    );
    let failed = Settlement::Failed {
        error: "late".into(),
    };
    assert!(
        !store
            .settle(id, "w1", &failed, NOW + 7)
            .await
            .expect("settle"),
        "stale"
    );

    let row = store.get(id).await.expect("get").expect("exists");
    assert_eq!(row.status, TaskStatus::Succeeded);
    assert_eq!(row.result.as_deref(), Some("42"));
    assert_eq!(row.finished_at, Some(NOW + 5));
    assert_eq!(row.worker.as_deref(), Some("w1"));
}

pub async fn settling_in_groups(store: Arc<dyn Store>) {
    // Four tasks for w1, one for w2; w1 reports five outcomes in one transaction.
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(insert_one(store.as_ref(), new_task(|t| t.max_attempts = Some(3))).await);
    }
    let mine = store
        .claim("w1", &queues(), 4, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(mine.len(), 4);
    let theirs = store
        .claim("w2", &queues(), 4, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(theirs.len(), 1);
    let (a, b, c, d) = (mine[0].id, mine[1].id, mine[2].id, mine[3].id);
    let e = theirs[0].id;
    let ok = |r: &str| Settlement::Succeeded { result: r.into() };
    let items = vec![
        (a, ok("1")),
        (e, ok("stolen")),
        (
            b,
            Settlement::Failed {
                error: "boom".into(),
            },
        ),
        (c, ok("3")),
        (
            d,
            Settlement::Retrying {
                error: "again".into(),
                run_at_ms: NOW + 1000,
            },
        ),
    ];
    let settled = store
        .settle_many("w1", &items, NOW + 10)
        .await
        .expect("settle");
    assert_eq!(settled, [true, false, true, true, true]);
    let get = |id| {
        let store = store.clone();
        async move { store.get(id).await.expect("get").expect("exists") }
    };
    let (ra, rb, rc, rd, re) = (
        get(a).await,
        get(b).await,
        get(c).await,
        get(d).await,
        get(e).await,
    );
    assert_eq!(
        (ra.status, ra.result.as_deref()),
        (TaskStatus::Succeeded, Some("1"))
    );
    assert_eq!(rb.status, TaskStatus::Failed);
    assert_eq!(rb.last_error.as_deref(), Some("boom"));
    assert_eq!(
        (rc.status, rc.result.as_deref()),
        (TaskStatus::Succeeded, Some("3"))
    );
    assert_eq!(ra.finished_at, Some(NOW + 10));
    assert_eq!((rd.status, rd.run_at), (TaskStatus::Retrying, NOW + 1000));
    assert_eq!(
        re.status,
        TaskStatus::Running,
        "w1 could not settle w2's task"
    );
    // And a large group, past one statement's chunk.
    let mut many = Vec::new();
    for _ in 0..450 {
        many.push(new_task(|_| {}));
    }
    store.insert(many).await.expect("insert");
    let claimed = store
        .claim("w3", &queues(), 1000, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 450);
    let items: Vec<_> = claimed.iter().map(|t| (t.id, ok("x"))).collect();
    let settled = store
        .settle_many("w3", &items, NOW + 20)
        .await
        .expect("settle");
    assert!(settled.iter().all(|s| *s));
    assert_eq!(
        store
            .get(claimed[449].id)
            .await
            .expect("get")
            .expect("row")
            .status,
        TaskStatus::Succeeded
    );
    // Successes only, one of them another worker's: the one-statement path tells them apart.
    let mine = insert_one(store.as_ref(), new_task(|_| {})).await;
    store
        .claim("w4", &queues(), 1, NOW, NOW + LEASE)
        .await
        .expect("claim");
    let theirs = insert_one(store.as_ref(), new_task(|_| {})).await;
    store
        .claim("w5", &queues(), 1, NOW, NOW + LEASE)
        .await
        .expect("claim");
    let settled = store
        .settle_many("w4", &[(theirs, ok("no")), (mine, ok("yes"))], NOW + 30)
        .await
        .expect("settle");
    assert_eq!(settled, [false, true]);
    let theirs = store.get(theirs).await.expect("get").expect("row");
    assert_eq!(
        theirs.status,
        TaskStatus::Running,
        "w4 could not settle w5's task"
    );
}

pub async fn retrying_failing_and_requeueing(store: Arc<dyn Store>) {
    let id = insert_one(store.as_ref(), new_task(|t| t.max_attempts = Some(2))).await;
    store
        .claim("w", &queues(), 1, NOW, NOW + LEASE)
        .await
        .expect("claim");
    let retry = Settlement::Retrying {
        error: "boom".into(),
        run_at_ms: NOW + 1000,
    };
    assert!(store.settle(id, "w", &retry, NOW).await.expect("settle"));
    let row = store.get(id).await.expect("get").expect("exists");
    assert_eq!((row.status, row.attempts), (TaskStatus::Retrying, 1));
    assert_eq!(row.last_error.as_deref(), Some("boom"));
    assert_eq!(row.run_at, NOW + 1000);

    assert!(
        store
            .claim("w", &queues(), 1, NOW + 999, NOW + LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    store.promote_due(NOW + 1000).await.expect("promote");
    let again = store
        .claim("w", &queues(), 1, NOW + 1000, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(again[0].attempt, 2);

    // Shutdown puts it back without counting the attempt.
    assert!(
        store
            .settle(id, "w", &Settlement::Requeued, NOW + 1001)
            .await
            .expect("settle")
    );
    let row = store.get(id).await.expect("get").expect("exists");
    assert_eq!((row.status, row.attempts), (TaskStatus::Queued, 1));

    store
        .claim("w", &queues(), 1, NOW + 1002, NOW + LEASE)
        .await
        .expect("claim");
    let failed = Settlement::Failed {
        error: "boom again".into(),
    };
    assert!(
        store
            .settle(id, "w", &failed, NOW + 1003)
            .await
            .expect("settle")
    );
    let row = store.get(id).await.expect("get").expect("exists");
    assert_eq!((row.status, row.attempts), (TaskStatus::Failed, 2));

    match store.retry(id, NOW + 2000).await.expect("retry") {
        RetryOutcome::Requeued(row) => {
            assert_eq!((row.status, row.attempts), (TaskStatus::Queued, 0));
            assert_eq!(row.finished_at, None);
        }
        other => panic!("expected a requeue, got {other:?}"),
    }
    assert!(matches!(
        store.retry(id, NOW).await.expect("retry"),
        RetryOutcome::NotRetryable(_)
    ));
    assert!(matches!(
        store.retry(Uuid::now_v7(), NOW).await.expect("retry"),
        RetryOutcome::NotFound
    ));
}

pub async fn cancelling(store: Arc<dyn Store>) {
    let waiting = insert_one(store.as_ref(), new_task(|t| t.delay_ms = Some(5000))).await;
    match store.cancel(waiting, NOW + 1).await.expect("cancel") {
        CancelOutcome::Cancelled(row) => {
            assert_eq!(row.status, TaskStatus::Cancelled);
            assert_eq!(row.finished_at, Some(NOW + 1));
        }
        other => panic!("expected cancelled, got {other:?}"),
    }
    assert!(matches!(
        store.cancel(waiting, NOW).await.expect("cancel"),
        CancelOutcome::Finished(_)
    ));

    let running = insert_one(store.as_ref(), new_task(|_| {})).await;
    store
        .claim("w", &queues(), 1, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert!(
        store
            .cancel_requests("w")
            .await
            .expect("requests")
            .is_empty()
    );
    match store.cancel(running, NOW + 2).await.expect("cancel") {
        CancelOutcome::Requested(row) => {
            assert_eq!(row.status, TaskStatus::Running);
            assert!(row.cancel_requested);
        }
        other => panic!("expected a request, got {other:?}"),
    }
    assert_eq!(
        store.cancel_requests("w").await.expect("requests"),
        vec![running]
    );
    assert!(
        store
            .cancel_requests("other")
            .await
            .expect("requests")
            .is_empty()
    );
    assert!(
        store
            .settle(running, "w", &Settlement::Cancelled, NOW + 3)
            .await
            .expect("settle")
    );
    assert_eq!(
        store
            .get(running)
            .await
            .expect("get")
            .expect("exists")
            .status,
        TaskStatus::Cancelled
    );
    assert!(matches!(
        store.cancel(Uuid::now_v7(), NOW).await.expect("cancel"),
        CancelOutcome::NotFound
    ));
}

pub async fn expired_leases_are_reaped(store: Arc<dyn Store>) {
    let again = insert_one(store.as_ref(), new_task(|t| t.max_attempts = Some(2))).await;
    let last = insert_one(store.as_ref(), new_task(|t| t.max_attempts = Some(1))).await;
    store
        .claim("dead", &queues(), 2, NOW, NOW + 1000)
        .await
        .expect("claim");
    store.renew_leases("dead", NOW + 2000).await.expect("renew");
    assert_eq!(
        store.reap_expired(NOW + 1500).await.expect("reap"),
        0,
        "renewed"
    );
    assert_eq!(store.reap_expired(NOW + 2001).await.expect("reap"), 2);

    let row = store.get(again).await.expect("get").expect("exists");
    assert_eq!((row.status, row.attempts), (TaskStatus::Queued, 1));
    assert!(row.last_error.as_deref().unwrap_or("").contains("dead"));
    let row = store.get(last).await.expect("get").expect("exists");
    assert_eq!(row.status, TaskStatus::Failed);

    // The dead worker's late report changes nothing.
    let done = Settlement::Succeeded {
        result: "null".into(),
    };
    assert!(
        !store
            .settle(again, "dead", &done, NOW + 3000)
            .await
            .expect("settle")
    );
    let claimed = store
        .claim("alive", &queues(), 5, NOW + 3000, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(
        claimed
            .iter()
            .map(|t| (t.id, t.attempt))
            .collect::<Vec<_>>(),
        vec![(again, 2)]
    );
}

/// The ids `filter` lists, read in pages of `size`, each page starting before the last.
async fn in_pages(store: &dyn Store, filter: ListFilter, size: u32) -> Vec<Uuid> {
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list(ListFilter {
                before,
                limit: size,
                ..filter.clone()
            })
            .await
            .expect("list");
        seen.extend(page.iter().map(|t| t.id));
        if page.len() < size as usize {
            return seen;
        }
        before = page.last().map(|t| t.id);
    }
}

pub async fn listing_pages_and_filters(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..25 {
        let kind = if i % 5 == 0 { "echo" } else { "noop" };
        ids.push(insert_one(store.as_ref(), new_task(|t| t.kind = kind.into())).await);
    }
    ids.reverse(); // newest first
    assert_eq!(
        in_pages(store.as_ref(), ListFilter::default(), 10).await,
        ids
    );

    let echoes = store
        .list(ListFilter {
            kind: Some("echo".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(echoes.len(), 5);
    let none = store
        .list(ListFilter {
            status: Some(TaskStatus::Failed),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(none.is_empty());
}

/// Every status, with and without a queue and a kind, read in pages of 3: the same tasks,
/// newest first, as a filter over all of them finds.
pub async fn listing_each_status_in_pages(store: Arc<dyn Store>) {
    for i in 0..36 {
        let task = new_task(|t| {
            t.kind = if i % 3 == 0 { "echo" } else { "noop" }.into();
            if i % 4 == 3 {
                t.queue = Some("other".into());
            }
            if i % 9 == 8 {
                t.delay_ms = Some(3_600_000);
            }
        });
        insert_one(store.as_ref(), task).await;
    }
    let claimed = store
        .claim("w", &queues(), 14, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 14);
    let outcomes = [
        Settlement::Succeeded { result: "1".into() },
        Settlement::Failed { error: "no".into() },
        Settlement::Cancelled,
        Settlement::Retrying {
            error: "again".into(),
            run_at_ms: NOW + 60_000,
        },
    ];
    for (task, outcome) in claimed.iter().zip(outcomes.iter().cycle()).take(11) {
        assert!(
            store
                .settle(task.id, "w", outcome, NOW + 1)
                .await
                .expect("settle")
        );
    }
    let all = store
        .list(ListFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 36);
    let mut statuses: Vec<TaskStatus> = all.iter().map(|t| t.status).collect();
    statuses.sort_by_key(|s| s.as_str());
    statuses.dedup();
    assert_eq!(statuses.len(), 7, "every status is there: {statuses:?}");

    for status in statuses {
        for queue in [None, Some("default"), Some("other")] {
            for kind in [None, Some("echo")] {
                let want: Vec<Uuid> = all
                    .iter()
                    .filter(|t| t.status == status)
                    .filter(|t| queue.is_none_or(|q| t.queue == q))
                    .filter(|t| kind.is_none_or(|k| t.kind == k))
                    .map(|t| t.id)
                    .collect();
                let filter = ListFilter {
                    status: Some(status),
                    queue: queue.map(Into::into),
                    kind: kind.map(Into::into),
                    ..Default::default()
                };
                let seen = in_pages(store.as_ref(), filter, 3).await;
                assert_eq!(seen, want, "{status:?} in {queue:?} of kind {kind:?}");
            }
        }
    }
}

pub async fn label_selectors(store: Arc<dyn Store>) {
    use taskd::domain::labels::Selector;
    // Task i: team=t(i mod 3), env=prod for odd i, rare=yes for i = 7.
    let mut ids = Vec::new();
    for i in 0..30 {
        let task = new_task(|t| {
            t.labels.insert("team".into(), format!("t{}", i % 3));
            if i % 2 == 1 {
                t.labels.insert("env".into(), "prod".into());
            }
            if i == 7 {
                t.labels.insert("rare".into(), "yes".into());
                t.idempotency_key = Some("rare".into());
            }
        });
        ids.push(insert_one(store.as_ref(), task).await);
    }
    // The same key again is no new task, and writes no second set of label rows.
    let again = new_task(|t| {
        t.labels.insert("rare".into(), "yes".into());
        t.idempotency_key = Some("rare".into());
    });
    let rows = store.insert(vec![again]).await.expect("insert a known key");
    assert!(!rows[0].1);
    let unlabeled = insert_one(store.as_ref(), new_task(|_| {})).await;

    let select = |texts: &[&str]| {
        let labels = texts
            .iter()
            .map(|text| Selector::parse(text).expect("selector"))
            .collect();
        let store = store.clone();
        async move {
            store
                .list(ListFilter {
                    labels,
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    // What each selector should find, newest first.
    let expect = |keep: &dyn Fn(usize) -> bool| {
        let mut want: Vec<Uuid> = (0..30).filter(|i| keep(*i)).map(|i| ids[i]).collect();
        want.reverse();
        want
    };
    assert_eq!(select(&["team=t1"]).await, expect(&|i| i % 3 == 1));
    assert_eq!(select(&["rare=yes"]).await, vec![ids[7]]);
    assert_eq!(select(&["rare"]).await, vec![ids[7]]);
    assert_eq!(select(&["env"]).await, expect(&|i| i % 2 == 1));
    let mut no_team = vec![unlabeled];
    no_team.extend(expect(&|_| false));
    assert_eq!(select(&["!team"]).await, no_team);
    let mut not_t1 = vec![unlabeled];
    not_t1.extend(expect(&|i| i % 3 != 1));
    assert_eq!(select(&["team!=t1"]).await, not_t1);
    // Several: all must match, whichever one drives the query.
    assert_eq!(
        select(&["team=t1", "env=prod"]).await,
        expect(&|i| i % 3 == 1 && i % 2 == 1)
    );
    assert_eq!(
        select(&["env=prod", "team=t1"]).await,
        expect(&|i| i % 3 == 1 && i % 2 == 1)
    );
    assert_eq!(
        select(&["env=prod", "team=t1", "rare=yes"]).await,
        vec![ids[7]]
    );
    assert_eq!(
        select(&["team", "!env", "team!=t0"]).await,
        expect(&|i| i % 2 == 0 && i % 3 != 0)
    );
    assert_eq!(select(&["env=prod", "!env"]).await, Vec::<Uuid>::new());
    assert_eq!(select(&["team=nobody"]).await, Vec::<Uuid>::new());
    assert_eq!(select(&["team=t1", "env=dev"]).await, Vec::<Uuid>::new());

    // Pages follow the cursor through a selector's tasks, with the other filters applied.
    let want = expect(&|i| i % 3 == 2);
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list(ListFilter {
                labels: vec![Selector::parse("team=t2").expect("selector")],
                status: Some(TaskStatus::Queued),
                before,
                limit: 4,
                ..Default::default()
            })
            .await
            .expect("list");
        seen.extend(page.iter().map(|t| t.id));
        if page.len() < 4 {
            break;
        }
        before = page.last().map(|t| t.id);
    }
    assert_eq!(seen, want);

    // A task's label rows go with it.
    assert!(matches!(
        store.cancel(ids[7], NOW).await.expect("cancel"),
        CancelOutcome::Cancelled(_)
    ));
    let deleted = store
        .delete_finished(taskd::store::FinishedFilter {
            statuses: vec![TaskStatus::Cancelled],
            finished_before: NOW + 1,
            kind: None,
            queue: None,
            steps: false,
        })
        .await
        .expect("delete the cancelled task");
    assert_eq!(deleted, 1);
    assert!(select(&["rare"]).await.is_empty());
}

pub async fn group_commit_answers_each_request(store: Arc<dyn Store>) {
    let submits = taskd::store::GroupCommit::start(store.clone());
    // Many single submits at once (they share transactions), four of them with one key.
    let mut requests = Vec::new();
    for i in 0..200 {
        let submits = submits.clone();
        let task = new_task(|t| {
            t.labels.insert("n".into(), i.to_string());
            if i % 50 == 0 {
                t.idempotency_key = Some("shared".into());
            }
        });
        requests.push(tokio::spawn(async move {
            let id = task.id;
            (id, submits.insert(vec![task]).await)
        }));
    }
    let mut created = 0;
    let mut replayed = Vec::new();
    for request in requests {
        let (id, answer) = request.await.expect("request");
        let rows = answer.expect("committed");
        assert_eq!(rows.len(), 1);
        let (row, new) = &rows[0];
        if *new {
            assert_eq!(row.id, id, "each request gets its own task back");
            created += 1;
        } else {
            replayed.push(row.id);
        }
        assert!(
            store.get(row.id).await.expect("get").is_some(),
            "answered = committed"
        );
    }
    assert_eq!(created, 197);
    assert_eq!(replayed.len(), 3);
    let first = store
        .list(ListFilter {
            labels: vec![taskd::domain::labels::Selector::parse("n").expect("selector")],
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(first.len(), 197);
    assert!(replayed.iter().all(|id| first.iter().any(|t| t.id == *id)));
}

/// Version 1 recorded as applied, and two tasks of that version (the first labelled
/// team=ops and env=prod, with a line of output; the second with an idempotency key): what a
/// backend's test puts in a version-1 database.
pub const VERSION_1_ROWS: &str = "INSERT INTO schema_migrations VALUES (1, 0);
     INSERT INTO tasks (id, kind, queue, payload, status, max_attempts, timeout_secs, run_at,
                        created_at, updated_at, labels, idempotency_key)
     VALUES ('01a20649-73ff-71a9-a177-5aa009d23a9d', 'noop', 'default', '{}', 'queued', 3, 300,
             0, 0, 0, '{\"team\":\"ops\",\"env\":\"prod\"}', NULL),
            ('01a20649-73ff-71a9-a177-5aa009d23a9e', 'noop', 'default', '{}', 'queued', 3, 300,
             0, 0, 0, '{}', 'from-version-1');
     INSERT INTO task_logs (task_id, attempt, stream, ts, line)
     VALUES ('01a20649-73ff-71a9-a177-5aa009d23a9d', 1, 'stdout', 0, 'kept')";

/// After a backend's test made a version-1 database with [`VERSION_1_ROWS`]: migrating
/// applies the later versions (SQLite's rebuilds the tasks table), a selector finds the
/// labelled task, its output is still there, and the key still names its task.
pub async fn labels_of_version_1_are_found(store: Arc<dyn Store>) {
    assert_eq!(
        store.migrate().await.expect("migrate"),
        vec![2, 3, 4, 5, 6, 7, 8, 9]
    );
    let again = new_task(|t| t.idempotency_key = Some("from-version-1".into()));
    let rows = store.insert(vec![again]).await.expect("insert a known key");
    assert_eq!(
        (rows[0].0.id.to_string(), rows[0].1),
        ("01a20649-73ff-71a9-a177-5aa009d23a9e".to_owned(), false)
    );
    let found = store
        .list(ListFilter {
            labels: vec![
                taskd::domain::labels::Selector::parse("team=ops").expect("selector"),
                taskd::domain::labels::Selector::parse("env").expect("selector"),
            ],
            ..Default::default()
        })
        .await
        .expect("list");
    let ids: Vec<String> = found.iter().map(|t| t.id.to_string()).collect();
    assert_eq!(ids, ["01a20649-73ff-71a9-a177-5aa009d23a9d"]);
    let lines = store.logs(found[0].id, 0, 10).await.expect("logs");
    let lines: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(lines, ["kept"]);
}

pub async fn logs_page_in_order(store: Arc<dyn Store>) {
    let id = insert_one(store.as_ref(), new_task(|_| {})).await;
    let lines = (0..30)
        .map(|i| NewLogLine {
            task_id: id,
            attempt: 1 + i / 20,
            stream: if i % 2 == 0 {
                LogStream::Stdout
            } else {
                LogStream::Stderr
            },
            ts: NOW + i64::from(i),
            line: format!("line {i}"),
        })
        .collect();
    store.append_logs(lines).await.expect("append");
    let first = store.logs(id, 0, 20).await.expect("logs");
    assert_eq!(first.len(), 20);
    assert_eq!(first[0].line, "line 0");
    let rest = store.logs(id, first[19].seq, 100).await.expect("logs");
    assert_eq!(rest.len(), 10);
    assert_eq!(rest[0].line, "line 20");
    assert_eq!(rest[0].attempt, 2);
    assert_eq!(rest[0].stream, LogStream::Stdout);
    assert!(
        store
            .logs(Uuid::now_v7(), 0, 10)
            .await
            .expect("logs")
            .is_empty()
    );
}

fn ids(tasks: &[taskd::store::Publishable]) -> HashSet<Uuid> {
    tasks.iter().map(|t| t.id).collect()
}

pub async fn publishing_is_tracked(store: Arc<dyn Store>) {
    let marked = |mark: Option<i64>| new_task(move |_| {}).with_mark(mark);
    // Publisher 7 beats; its tasks are its own to publish, and no write says it did.
    store.publisher_beat(7, NOW + 5).await.expect("beat");
    let mine = insert_one(store.as_ref(), marked(Some(-7))).await;
    let left = insert_one(store.as_ref(), marked(None)).await;
    let dead = insert_one(store.as_ref(), marked(Some(-8))).await;
    let nobody = insert_one(store.as_ref(), marked(Some(0))).await;
    let unpublished = store.unpublished(10).await.expect("unpublished");
    assert_eq!(
        ids(&unpublished),
        HashSet::from([left]),
        "only a task left to the dispatcher"
    );

    let stamped = unpublished[0].updated_at;
    store
        .mark_published(&[(left, stamped)], NOW + 2)
        .await
        .expect("mark");
    assert!(store.unpublished(10).await.expect("unpublished").is_empty());

    // Not yet stale: nothing changes hands.
    assert_eq!(store.reclaim_orphans(NOW).await.expect("reclaim"), 0);
    // Publisher 8 never beat and nobody publishes a 0-marked task: both go to the dispatcher;
    // publisher 7 has beaten since, so its task stays its own.
    assert_eq!(store.reclaim_orphans(NOW + 1).await.expect("reclaim"), 2);
    assert_eq!(
        ids(&store.unpublished(10).await.expect("unpublished")),
        HashSet::from([dead, nobody])
    );
    // What a publisher could not publish it hands back; another's mark is not its to return.
    assert_eq!(store.hand_back(-8, &[mine]).await.expect("hand back"), 0);
    assert_eq!(store.hand_back(-7, &[mine]).await.expect("hand back"), 1);
    assert_eq!(
        ids(&store.unpublished(10).await.expect("unpublished")),
        HashSet::from([dead, nobody, mine])
    );
    // Once publisher 7 falls silent too, a later reclaim finds nothing more of it.
    assert_eq!(store.reclaim_orphans(NOW + 100).await.expect("reclaim"), 0);
    for task in store.unpublished(10).await.expect("unpublished") {
        store
            .mark_published(&[(task.id, task.updated_at)], NOW + 3)
            .await
            .expect("mark");
    }
    assert!(store.unpublished(10).await.expect("unpublished").is_empty());

    let later = insert_one(store.as_ref(), new_task(|t| t.delay_ms = Some(10))).await;
    // A due task is the dispatcher's at once; a stale version is not marked.
    store.promote_due(NOW + 10).await.expect("promote");
    let due = store.unpublished(10).await.expect("unpublished");
    assert_eq!(due.iter().map(|t| t.id).collect::<Vec<_>>(), vec![later]);
    store
        .mark_published(&[(later, due[0].updated_at - 1)], NOW + 11)
        .await
        .expect("mark");
    assert_eq!(store.unpublished(10).await.expect("unpublished").len(), 1);
    store
        .mark_published(&[(later, due[0].updated_at)], NOW + 11)
        .await
        .expect("mark");
    assert!(store.unpublished(10).await.expect("unpublished").is_empty());
}

trait WithMark {
    fn with_mark(self, mark: Option<i64>) -> Self;
}

impl WithMark for NewTask {
    fn with_mark(mut self, mark: Option<i64>) -> NewTask {
        self.published_at = mark;
        self
    }
}

/// Every change lands in the feed once, in order, with its task's fields, whatever shape the
/// backend writes it in. Answers the feed's rows (a backend's own test checks their shape).
pub async fn the_change_feed_records_each_change_once(
    store: Arc<dyn Store>,
) -> Vec<taskd::store::EventRow> {
    let before = store.latest_event().await.expect("latest");
    let tasks: Vec<NewTask> = (0..3).map(|_| new_task(|t| t.priority = Some(2))).collect();
    let mut ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    ids.sort();
    store.insert(tasks).await.expect("insert");
    let claimed = store
        .claim_ids("w1", &ids[..2], NOW + 1, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    // A lease renewal changes no status: no event.
    store
        .renew_leases("w1", NOW + LEASE * 2)
        .await
        .expect("renew");
    let ok = |r: &str| Settlement::Succeeded { result: r.into() };
    store
        .settle_many("w1", &[(ids[0], ok("a")), (ids[1], ok("b"))], NOW + 2)
        .await
        .expect("settle");
    let rows = store
        .event_rows(before, i64::MAX, 100)
        .await
        .expect("event rows");
    let events: Vec<_> = rows.iter().flat_map(|row| row.events.clone()).collect();
    let seen: Vec<(Uuid, &str)> = events
        .iter()
        .map(|e| (e.task_id, e.event.as_str()))
        .collect();
    let mut expected = Vec::new();
    for (names, tasks) in [
        ("created", &ids[..]),
        ("started", &ids[..2]),
        ("succeeded", &ids[..2]),
    ] {
        expected.extend(tasks.iter().map(|id| (*id, names)));
    }
    assert_eq!(
        seen, expected,
        "each change once, statement by statement, in id order"
    );
    let started = &events[3];
    assert_eq!(started.status, TaskStatus::Running);
    assert_eq!(started.worker.as_deref(), Some("w1"));
    assert_eq!(started.attempts, 1);
    assert_eq!((started.priority, started.queue.as_str()), (2, "default"));
    assert_eq!((started.kind.as_str(), started.created_at), ("noop", NOW));
    assert_eq!(started.at, NOW + 1);
    // Event ids rise and name their row.
    for pair in events.windows(2) {
        assert!(pair[0].seq < pair[1].seq);
    }
    for row in &rows {
        for event in &row.events {
            assert_eq!(event.seq / taskd::store::EVENTS_PER_ROW, row.seq);
        }
    }
    // Walking back finds the same rows, newest first.
    let back = store
        .event_rows_before(i64::MAX, 100)
        .await
        .expect("rows before");
    assert_eq!(back.first().map(|r| r.seq), rows.last().map(|r| r.seq));
    assert_eq!(
        store.latest_event().await.expect("latest"),
        rows.last().expect("rows").seq
    );
    rows
}

/// The `traceparent` a task is submitted in comes back with each claim of it, by queue and
/// by id; a task without one claims with none.
pub async fn a_trace_parent_travels_from_insert_to_claim(store: Arc<dyn Store>) {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut traced = noop_task();
    traced.trace_parent = Some(traceparent.to_owned());
    let plain = noop_task();
    let (traced_id, plain_id) = (traced.id, plain.id);
    store.insert(vec![traced, plain]).await.expect("insert");
    let now = NOW;
    let claimed = store
        .claim("w", &["default".to_owned()], 10, now, now + LEASE)
        .await
        .expect("claim");
    let by_id = |id: Uuid| claimed.iter().find(|t| t.id == id).expect("claimed");
    assert_eq!(by_id(traced_id).trace_parent.as_deref(), Some(traceparent));
    assert_eq!(by_id(plain_id).trace_parent, None);
    // Back to the queue after a lost lease, and claimed by id: still there.
    store.reap_expired(now + LEASE + 1).await.expect("reap");
    let again = store
        .claim_ids("w2", &[traced_id], now + LEASE + 2, now + 2 * LEASE)
        .await
        .expect("claim by id");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].trace_parent.as_deref(), Some(traceparent));
}

pub async fn claims_by_id_skip_what_is_not_ready(store: Arc<dyn Store>) {
    let ready = insert_one(store.as_ref(), new_task(|t| t.priority = Some(1))).await;
    let also = insert_one(store.as_ref(), new_task(|t| t.priority = Some(2))).await;
    let cancelled = insert_one(store.as_ref(), new_task(|_| {})).await;
    store.cancel(cancelled, NOW).await.expect("cancel");
    let ids = [ready, also, cancelled, Uuid::now_v7()];
    let claimed = store
        .claim_ids("w", &ids, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![also, ready]
    );
    // A duplicate delivery claims nothing.
    assert!(
        store
            .claim_ids("w2", &ids, NOW, NOW + LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
}

/// A claim of some kinds takes only tasks of those kinds, by queue or by id (taskd's workers
/// leave declared kinds to remote workers, which take nothing else); a lease is renewed only
/// by its holder for its attempt, and a renewal reports a cancel request.
pub async fn claims_by_kind_and_single_leases(store: Arc<dyn Store>) {
    let remote = insert_one(store.as_ref(), new_task(|t| t.kind = "resize".into())).await;
    let local = insert_one(store.as_ref(), new_task(|_| {})).await;
    let builtin: Vec<String> = vec!["noop".into(), "echo".into()];
    let declared: Vec<String> = vec!["resize".into()];
    let by_id = store
        .claim_ids_of("w", &[remote], Some(&builtin), NOW, NOW + LEASE)
        .await
        .expect("claim by id");
    assert!(
        by_id.is_empty(),
        "a local worker never claims a declared kind"
    );
    let claimed = store
        .claim_of("w", &queues(), Some(&builtin), 10, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), [local]);
    let leased = store
        .claim_of("remote-1", &queues(), Some(&declared), 10, NOW, NOW + LEASE)
        .await
        .expect("lease");
    assert_eq!(leased.iter().map(|t| t.id).collect::<Vec<_>>(), [remote]);
    assert_eq!(leased[0].attempt, 1);

    let later = NOW + 2 * LEASE;
    for (owner, attempt) in [("remote-2", 1), ("remote-1", 2), ("w", 1)] {
        let renewed = store
            .renew_lease(remote, owner, attempt, later)
            .await
            .expect("renew");
        assert_eq!(renewed, None, "{owner} attempt {attempt} holds no lease");
    }
    let renewed = store
        .renew_lease(remote, "remote-1", 1, later)
        .await
        .expect("renew")
        .expect("the holder renews");
    assert_eq!(renewed.expires_at, later);
    assert!(!renewed.cancel_requested);
    store.cancel(remote, NOW).await.expect("cancel");
    let renewed = store
        .renew_lease(remote, "remote-1", 1, later + 1)
        .await
        .expect("renew")
        .expect("still held");
    assert!(
        renewed.cancel_requested,
        "a renewal reports the cancel request"
    );
    // A finished task's lease is gone.
    let done = store
        .settle(remote, "remote-1", &Settlement::Cancelled, NOW + 1)
        .await
        .expect("settle");
    assert!(done);
    assert_eq!(
        store
            .renew_lease(remote, "remote-1", 1, later)
            .await
            .expect("renew"),
        None
    );
}

/// Every statement the store runs moves a task exactly as the state machine says.
pub async fn transitions_agree_with_the_state_machine(store: Arc<dyn Store>) {
    let id = insert_one(store.as_ref(), new_task(|t| t.max_attempts = Some(5))).await;
    let status = |store: Arc<dyn Store>| async move {
        store.get(id).await.expect("get").expect("exists").status
    };
    let mut now = NOW;
    let step = |before: TaskStatus, event: Event, after: TaskStatus| {
        assert_eq!(transition(before, event), Ok(after), "{before} + {event:?}");
    };
    let before = status(store.clone()).await;
    store
        .claim("w", &queues(), 1, now, now + 10)
        .await
        .expect("claim");
    step(before, Event::Claim, status(store.clone()).await);

    let before = status(store.clone()).await;
    let retry = Settlement::Retrying {
        error: "e".into(),
        run_at_ms: now + 5,
    };
    store.settle(id, "w", &retry, now).await.expect("settle");
    step(before, Event::FailRetryable, status(store.clone()).await);

    now += 10;
    let before = status(store.clone()).await;
    store.promote_due(now).await.expect("promote");
    step(before, Event::Due, status(store.clone()).await);

    store
        .claim("w", &queues(), 1, now, now + 10)
        .await
        .expect("claim");
    let before = status(store.clone()).await;
    store.cancel(id, now).await.expect("cancel");
    step(before, Event::Cancel, status(store.clone()).await);

    let before = status(store.clone()).await;
    store.reap_expired(now + 11).await.expect("reap");
    let event = Event::LeaseExpired {
        attempts_left: true,
        cancel_requested: true,
    };
    step(before, event, status(store.clone()).await);

    let before = status(store.clone()).await;
    store.retry(id, now).await.expect("retry");
    step(
        before,
        Event::Retry {
            parents_pending: false,
        },
        status(store.clone()).await,
    );

    store
        .claim("w", &queues(), 1, now, now + 10)
        .await
        .expect("claim");
    let before = status(store.clone()).await;
    store.release_leases("w", now).await.expect("release");
    step(
        before,
        Event::Released {
            cancel_requested: false,
        },
        status(store.clone()).await,
    );

    store
        .claim("w", &queues(), 1, now, now + 10)
        .await
        .expect("claim");
    let before = status(store.clone()).await;
    store.reap_expired(now + 11).await.expect("reap");
    let event = Event::LeaseExpired {
        attempts_left: true,
        cancel_requested: false,
    };
    step(before, event, status(store.clone()).await);

    store
        .claim("w", &queues(), 1, now, now + 10)
        .await
        .expect("claim");
    let before = status(store.clone()).await;
    store
        .settle(id, "w", &Settlement::Succeeded { result: "1".into() }, now)
        .await
        .expect("settle");
    step(before, Event::Succeed, status(store.clone()).await);
}

/// A submit of ready work for database-claiming workers wakes `listener`'s workers (another
/// process's store on the same database), in the one-statement insert and in the transaction
/// alike; work for a broker's workers wakes nobody.
pub async fn submits_wake_other_processes(listener: Arc<dyn Store>, submitter: Arc<dyn Store>) {
    use std::time::Duration;
    let wake = Arc::new(tokio::sync::Notify::new());
    let listening = tokio::spawn(listener.listen_ready(wake.clone()));
    // LISTEN is in place once a notification gets through; until then, submit again.
    let woken = |wake: Arc<tokio::sync::Notify>| async move {
        tokio::time::timeout(Duration::from_millis(200), wake.notified())
            .await
            .is_ok()
    };
    let mut listening_yet = false;
    for _ in 0..50 {
        insert_one(submitter.as_ref(), new_task(|_| {})).await;
        if woken(wake.clone()).await {
            listening_yet = true;
            break;
        }
    }
    assert!(listening_yet, "no notification reached the listener");
    // One statement (no key, no labels) and a transaction (a key) both notify.
    insert_one(submitter.as_ref(), new_task(|_| {})).await;
    assert!(
        woken(wake.clone()).await,
        "the one-statement insert notified"
    );
    insert_one(
        submitter.as_ref(),
        new_task(|t| t.idempotency_key = Some("wake".into())),
    )
    .await;
    assert!(woken(wake.clone()).await, "the keyed insert notified");
    // A task a publisher publishes is no database worker's business.
    insert_one(submitter.as_ref(), new_task(|_| {}).with_mark(Some(-5))).await;
    assert!(
        !woken(wake.clone()).await,
        "a broker's task woke database workers"
    );
    listening.abort();
}

/// A write that fails (here a task whose id is taken) fails alone: the writes that ran
/// beside it (on SQLite in the same round of the writer) are stored and answered.
pub async fn a_failed_write_fails_alone(store: Arc<dyn Store>) {
    let taken = new_task(|_| {});
    insert_one(store.as_ref(), taken.clone()).await;
    let mut writes = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        let task = if i == 12 {
            taken.clone()
        } else {
            new_task(|_| {})
        };
        writes.push(tokio::spawn(async move {
            (task.id, store.insert(vec![task]).await)
        }));
    }
    let mut stored = 0;
    for write in writes {
        let (id, answer) = write.await.expect("the write ran");
        if id == taken.id {
            let error = answer.expect_err("a taken id is refused");
            assert!(!error.is_unavailable(), "{error}");
        } else {
            let rows = answer.expect("the other writes are stored");
            assert!(rows[0].1);
            assert!(store.get(id).await.expect("get").is_some());
            stored += 1;
        }
    }
    assert_eq!(stored, 23);
}

/// The dashboard's chart: finished tasks per minute (its start) and status, from a time on.
pub async fn finished_tasks_are_counted_per_minute(store: Arc<dyn Store>) {
    let minute = NOW - NOW.rem_euclid(60_000);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(insert_one(store.as_ref(), new_task(|_| {})).await);
    }
    let claimed = store
        .claim("w", &queues(), 4, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4);
    let ok = Settlement::Succeeded { result: "1".into() };
    let failed = Settlement::Failed { error: "no".into() };
    for (id, outcome, at) in [
        (ids[0], &ok, minute + 5),
        (ids[1], &failed, minute + 61_000),
        (ids[2], &ok, minute + 119_999),
    ] {
        assert!(store.settle(id, "w", outcome, at).await.expect("settle"));
    }
    let mut counts: Vec<(i64, TaskStatus, u64)> = store
        .finished_by_minute(minute)
        .await
        .expect("counts")
        .into_iter()
        .map(|c| (c.minute, c.status, c.count))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            (minute, TaskStatus::Succeeded, 1),
            (minute + 60_000, TaskStatus::Succeeded, 1),
            (minute + 60_000, TaskStatus::Failed, 1),
        ],
        "the running task is not counted"
    );
    let later = store
        .finished_by_minute(minute + 60_000)
        .await
        .expect("counts");
    assert_eq!(later.iter().map(|c| c.count).sum::<u64>(), 2);
}
