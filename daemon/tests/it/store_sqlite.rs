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
    concurrent_claims_never_share_a_task,
    claims_follow_priority_and_queue,
    settling_is_guarded,
    settling_in_groups,
    retrying_failing_and_requeueing,
    cancelling,
    expired_leases_are_reaped,
    listing_pages_and_filters,
    label_selectors,
    group_commit_answers_each_request,
    logs_page_in_order,
    publishing_is_tracked,
    claims_by_id_skip_what_is_not_ready,
    transitions_agree_with_the_state_machine,
);

/// SQLite has no statement-level triggers: each change is a feed row of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_records_each_change_once() {
    let (_dir, store) = fresh().await;
    let rows = store_suite::the_change_feed_records_each_change_once(store).await;
    assert!(rows.iter().all(|row| row.events.len() == 1));
    assert_eq!(rows.len(), 7);
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
