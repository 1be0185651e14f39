//! The store contract on PostgreSQL, each test in a database of its own. Skips (or, with
//! TASKPLANE_REQUIRE_SERVICES=1, fails) when PostgreSQL is not running.

use crate::store_suite;

use std::sync::Arc;

use taskd::store::{self, Store};
use taskplane_testkit::{TempDatabase, services_available};

async fn fresh(test: &str) -> Option<(TempDatabase, Arc<dyn Store>)> {
    if !services_available(test, true, false) {
        return None;
    }
    let db = TempDatabase::create();
    let store = store::open(&db.url).await.expect("open");
    store.migrate().await.expect("migrate");
    store
        .migrate()
        .await
        .expect("migrating twice changes nothing");
    Some((db, store))
}

macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((_db, store)) = fresh(stringify!($name)).await else { return };
                store_suite::$name(store).await;
            }
        )*
    };
}

postgres_tests!(
    insert_get_and_idempotency,
    a_failed_write_fails_alone,
    concurrent_claims_never_share_a_task,
    claims_follow_priority_and_queue,
    settling_is_guarded,
    settling_in_groups,
    retrying_failing_and_requeueing,
    cancelling,
    expired_leases_are_reaped,
    listing_pages_and_filters,
    listing_each_status_in_pages,
    label_selectors,
    group_commit_answers_each_request,
    logs_page_in_order,
    publishing_is_tracked,
    claims_by_id_skip_what_is_not_ready,
    a_trace_parent_travels_from_insert_to_claim,
    finished_tasks_are_counted_per_minute,
    claims_by_kind_and_single_leases,
    transitions_agree_with_the_state_machine,
    schedules_fire_once_per_time_across_schedulers,
    schedules_catch_up_after_downtime,
    schedules_skip_overlaps_pause_and_trigger,
    schedules_refused_here_are_left_to_another_process,
    a_diamond_runs_in_order,
    a_failed_parent_cancels_its_descendants,
    a_child_added_to_a_running_parent_is_freed,
    workflows_cancel_and_retry,
    a_running_limit_and_a_pause_gate_the_claims,
    a_rate_spreads_the_starts,
    concurrency_keys_never_overlap,
    audited_actions_are_kept_with_their_change,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_wake_other_processes() {
    let Some((db, submitter)) = fresh("submits_wake_other_processes").await else {
        return;
    };
    let listener = store::open(&db.url).await.expect("open a second store");
    store_suite::submits_wake_other_processes(listener, submitter).await;
}

/// One statement's changes make one feed row: an insert of three tasks, a claim of two and a
/// settle of two write three rows, not seven (and a lease renewal writes none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_records_each_change_once() {
    let Some((_db, store)) = fresh("the_change_feed_records_each_change_once").await else {
        return;
    };
    let rows = store_suite::the_change_feed_records_each_change_once(store).await;
    let sizes: Vec<usize> = rows.iter().map(|row| row.events.len()).collect();
    assert_eq!(sizes, [3, 2, 2]);
}

/// A database made before labels had rows of their own: migrating writes them, so a selector
/// finds the tasks submitted before the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_from_before_the_label_table_are_found() {
    if !services_available("labels_from_before_the_label_table_are_found", true, false) {
        return;
    }
    let db = TempDatabase::create();
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    sqlx::raw_sql(include_str!("../../migrations/postgres/0001_tasks.sql"))
        .execute(&pool)
        .await
        .expect("version 1");
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("the migrations table");
    sqlx::raw_sql(store_suite::VERSION_1_ROWS)
        .execute(&pool)
        .await
        .expect("tasks of version 1");
    pool.close().await;

    let store = store::open(&db.url).await.expect("open");
    store_suite::labels_of_version_1_are_found(store).await;
}

/// The RabbitMQ delivery path's writers at once, on overlapping rows, for a few seconds: the
/// dispatcher recording what it published, workers claiming delivered ids (each in its own
/// order, as deliveries arrive) and settling them. PostgreSQL must never find a deadlock:
/// each one would stall everything behind it for `deadlock_timeout` (1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_delivery_writers_never_deadlock() {
    use taskd::domain::lifecycle::Settlement;
    use taskplane_api::SubmitTask;
    let Some((_db, store)) = fresh("the_delivery_writers_never_deadlock").await else {
        return;
    };
    let kinds = taskd::domain::validate::Kinds::new(false, false, Vec::new());
    let now = taskd::util::now_ms();
    let tasks: Vec<_> = (0..3000)
        .map(|_| {
            let request = SubmitTask {
                kind: "noop".into(),
                ..Default::default()
            };
            taskd::domain::validate::submit(request, &kinds, uuid::Uuid::now_v7(), now)
                .expect("valid")
        })
        .collect();
    let rows = store.insert(tasks).await.expect("insert");
    let versions: Arc<Vec<(uuid::Uuid, i64)>> =
        Arc::new(rows.iter().map(|(t, _)| (t.id, t.updated_at)).collect());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let mut writers = Vec::new();
    for publisher in 0..2u64 {
        let (store, versions) = (store.clone(), versions.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(publisher);
            while std::time::Instant::now() < deadline {
                // Confirmations arrive in any order: a shuffled slice of 500.
                let start = rng.usize(0..versions.len() - 500);
                let mut batch = versions[start..start + 500].to_vec();
                rng.shuffle(&mut batch);
                store.mark_published(&batch, taskd::util::now_ms()).await?;
            }
            Ok::<_, taskd::store::StoreError>(())
        }));
    }
    for worker in 0..3u64 {
        let (store, versions) = (store.clone(), versions.clone());
        writers.push(tokio::spawn(async move {
            let name = format!("worker-{worker}");
            let mut rng = fastrand::Rng::with_seed(100 + worker);
            while std::time::Instant::now() < deadline {
                let start = rng.usize(0..versions.len() - 64);
                let mut ids: Vec<uuid::Uuid> = versions[start..start + 64]
                    .iter()
                    .map(|(id, _)| *id)
                    .collect();
                rng.shuffle(&mut ids);
                let now = taskd::util::now_ms();
                let claimed = store.claim_ids(&name, &ids, now, now + 30_000).await?;
                let outcomes: Vec<_> = claimed
                    .iter()
                    .map(|task| {
                        (
                            task.id,
                            Settlement::Succeeded {
                                result: "{}".into(),
                            },
                        )
                    })
                    .collect();
                store.settle_many(&name, &outcomes, now).await?;
            }
            Ok(())
        }));
    }
    let mut errors = Vec::new();
    for writer in writers {
        if let Err(error) = writer.await.expect("writer task") {
            errors.push(error.to_string());
        }
    }
    assert!(errors.is_empty(), "the writers failed: {errors:#?}");
    // They really overlapped: claims took tasks while the marks went on.
    let succeeded = store
        .list(taskd::store::ListFilter {
            status: Some(taskplane_api::TaskStatus::Succeeded),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(
        succeeded.len() >= 100,
        "only {} tasks were claimed and settled",
        succeeded.len()
    );
}

/// With the server's autovacuum off (as on this machine), the dead rows that claims and
/// settles leave are vacuumed by taskd itself; with it on, taskd leaves that to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tend_vacuums_what_autovacuum_would() {
    let Some((db, store)) = fresh("tend_vacuums_what_autovacuum_would").await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let autovacuum: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
        .fetch_one(&pool)
        .await
        .expect("setting");
    // Dead rows: every task claimed and settled leaves two old versions.
    let kinds = taskd::domain::validate::Kinds::new(false, false, Vec::new());
    let now = taskd::util::now_ms();
    let tasks: Vec<_> = (0..2000)
        .map(|_| {
            let request = taskplane_api::SubmitTask {
                kind: "noop".into(),
                ..Default::default()
            };
            taskd::domain::validate::submit(request, &kinds, uuid::Uuid::now_v7(), now)
                .expect("valid")
        })
        .collect();
    store.insert(tasks).await.expect("insert");
    let queues = vec!["default".to_owned()];
    loop {
        let claimed = store
            .claim("w", &queues, 500, now, now + 30_000)
            .await
            .expect("claim");
        if claimed.is_empty() {
            break;
        }
        let outcomes: Vec<_> = claimed
            .iter()
            .map(|t| {
                (
                    t.id,
                    taskd::domain::lifecycle::Settlement::Succeeded {
                        result: "{}".into(),
                    },
                )
            })
            .collect();
        store
            .settle_many("w", &outcomes, now)
            .await
            .expect("settle");
    }
    let dead = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'tasks'",
        )
        .fetch_one(&pool)
        .await
        .expect("stats")
    };
    if autovacuum == "on" {
        let tended = store.tend().await.expect("tend");
        assert!(
            tended.is_empty(),
            "autovacuum is on: taskd leaves it alone ({tended:?})"
        );
        return;
    }
    // The statistics reach pg_stat_user_tables within a second or so of the writes, from
    // each connection on its own: wait for all of them (a claim and a settle per task), or
    // counts flushed after the vacuum would make the table due again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let updates: i64 =
            sqlx::query_scalar("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'tasks'")
                .fetch_one(&pool)
                .await
                .expect("stats");
        if updates >= 4000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the statistics show {updates} of 4000 updates"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let tended = loop {
        let tended = store.tend().await.expect("tend");
        if tended.iter().any(|t| t == "tasks") || std::time::Instant::now() > deadline {
            break tended;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(tended.iter().any(|t| t == "tasks"), "tended {tended:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while dead().await >= 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "dead rows left after the vacuum: {}",
            dead().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Nothing is due right after.
    let again = store.tend().await.expect("tend");
    assert!(
        !again.iter().any(|t| t == "tasks"),
        "tended again: {again:?}"
    );
}
