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
    logs_page_in_order,
    publishing_is_tracked,
    claims_by_id_skip_what_is_not_ready,
    transitions_agree_with_the_state_machine,
);
