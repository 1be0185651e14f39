//! The store contract on the embedded SQLite backend, each test on its own file.

use crate::store_suite;

use std::sync::Arc;

use taskd::store::{self, Store};

async fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("taskd.db").display());
    let store = store::open(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    store
        .migrate()
        .await
        .expect("migrating twice changes nothing");
    (dir, store)
}

macro_rules! sqlite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_dir, store) = fresh().await;
                store_suite::$name(store).await;
            }
        )*
    };
}

sqlite_tests!(
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

/// The writer's submits, claims and settles write a feed row per write, as PostgreSQL's
/// statement triggers do: an insert of three tasks, a claim of two and a settle of two are
/// three rows, not seven. Other writes (a cancel) still get theirs from the row triggers,
/// which the writer turns off for its own rounds only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_records_each_change_once() {
    let (_dir, store) = fresh().await;
    let rows = store_suite::the_change_feed_records_each_change_once(store.clone()).await;
    let sizes: Vec<usize> = rows.iter().map(|row| row.events.len()).collect();
    assert_eq!(sizes, [3, 2, 2]);
    let last = rows.last().expect("rows").seq;
    let waiting = rows[0].events[2].task_id;
    let cancelled = store
        .cancel(waiting, 2_000_000_000_000)
        .await
        .expect("cancel");
    assert!(matches!(cancelled, store::CancelOutcome::Cancelled(_)));
    let after = store
        .event_rows(last, i64::MAX, 100)
        .await
        .expect("event rows");
    let seen: Vec<_> = after
        .iter()
        .flat_map(|row| row.events.iter().map(|e| (e.task_id, e.event.clone())))
        .collect();
    assert_eq!(seen, [(waiting, "cancelled".to_owned())]);
}

/// A database made before labels had rows of their own: migrating writes them, so a selector
/// finds the tasks submitted before the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_from_before_the_label_table_are_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("taskd.db").display());
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("url");
    let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
        .await
        .expect("connect");
    sqlx::raw_sql(include_str!("../../migrations/sqlite/0001_tasks.sql"))
        .execute(&pool)
        .await
        .expect("version 1");
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("the migrations table");
    sqlx::raw_sql(store_suite::VERSION_1_ROWS)
        .execute(&pool)
        .await
        .expect("tasks of version 1");
    pool.close().await;

    let store = store::open(&url).await.expect("open");
    store_suite::labels_of_version_1_are_found(store).await;
}

/// The writer does not checkpoint the WAL at its commits; the store's checkpointer copies
/// it into the database file beside it, so the file grows with the tasks (and the WAL does
/// not grow for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_beside_the_writer() {
    let (dir, store) = fresh().await;
    let file = dir.path().join("taskd.db");
    let size = || std::fs::metadata(&file).expect("the database file").len();
    let before = size();
    for _ in 0..20 {
        let tasks = (0..100).map(|_| store_suite::noop_task()).collect();
        store.insert(tasks).await.expect("insert");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() < before + 512 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes (from {before}): the WAL was not checkpointed",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
