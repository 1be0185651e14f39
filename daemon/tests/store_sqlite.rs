//! The store contract on the embedded SQLite backend, each test on its own file.

mod store_suite;

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
    logs_page_in_order,
    publishing_is_tracked,
    claims_by_id_skip_what_is_not_ready,
    transitions_agree_with_the_state_machine,
);
