//! The store contract on PostgreSQL, each test in a database of its own. Skips (or, with
//! TASKPLANE_REQUIRE_SERVICES=1, fails) when PostgreSQL is not running.

mod store_suite;

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
    concurrent_claims_never_share_a_task,
    claims_follow_priority_and_queue,
    settling_is_guarded,
    settling_in_groups,
    retrying_failing_and_requeueing,
    cancelling,
    expired_leases_are_reaped,
    listing_pages_and_filters,
    label_selectors,
    logs_page_in_order,
    publishing_is_tracked,
    claims_by_id_skip_what_is_not_ready,
    transitions_agree_with_the_state_machine,
);

/// A database made before labels had rows of their own: migrating writes them, so a selector
/// finds the tasks submitted before the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_from_before_the_label_table_are_found() {
    if !services_available("labels_from_before_the_label_table_are_found", true, false) {
        return;
    }
    let db = TempDatabase::create();
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    sqlx::raw_sql(include_str!("../migrations/postgres/0001_tasks.sql"))
        .execute(&pool)
        .await
        .expect("version 1");
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);
         INSERT INTO schema_migrations VALUES (1, 0);
         INSERT INTO tasks (id, kind, queue, payload, status, max_attempts, timeout_secs, run_at,
                            created_at, updated_at, labels)
         VALUES ('01a20649-73ff-71a9-a177-5aa009d23a9d', 'noop', 'default', '{}', 'queued', 3, 300,
                 0, 0, 0, '{\"team\":\"ops\",\"env\":\"prod\"}'),
                ('01a20649-73ff-71a9-a177-5aa009d23a9e', 'noop', 'default', '{}', 'queued', 3, 300,
                 0, 0, 0, '{}')",
    )
    .execute(&pool)
    .await
    .expect("a task of version 1");
    pool.close().await;

    let store = store::open(&db.url).await.expect("open");
    assert_eq!(store.migrate().await.expect("migrate"), vec![2]);
    let found = store
        .list(store::ListFilter {
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
}
