//! The hot path a regression would hit: a submit → claim → complete round on the embedded
//! SQLite store (batches of 100), and the JSON encoding and decoding of tasks as the API
//! sends and receives them.
//!
//!     cargo bench -p taskd --bench hot_path

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use taskd::domain::lifecycle::Settlement;
use taskd::domain::validate::{self, Kinds};
use taskd::store::{self, Store};
use taskplane_api::{SubmitTask, Task};
use uuid::Uuid;

const BATCH: usize = 100;

fn kinds() -> Kinds {
    Kinds::new(false, false, Vec::new())
}

fn store_round(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store: Arc<dyn Store> = runtime.block_on(async {
        let store = store::open(&url).await.expect("open");
        store.migrate().await.expect("migrate");
        store
    });
    let queues = vec!["default".to_owned()];
    let kinds = kinds();
    // What taskd's worker claims: the built-in kinds it runs.
    let runs: Vec<String> = taskplane_api::kinds::BUILTIN_KINDS
        .iter()
        .map(|k| (*k).to_owned())
        .collect();
    c.bench_function("sqlite submit+claim+settle x100", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let now = chrono::Utc::now().timestamp_millis();
                let tasks = (0..BATCH)
                    .map(|_| {
                        let request = SubmitTask {
                            kind: "noop".into(),
                            ..SubmitTask::default()
                        };
                        validate::submit(request, &kinds, Uuid::now_v7(), now).expect("valid")
                    })
                    .collect();
                store.insert(tasks).await.expect("insert");
                let claimed = store
                    .claim_of(
                        "bench",
                        &queues,
                        Some(&runs),
                        BATCH as u32,
                        now,
                        now + 30_000,
                    )
                    .await
                    .expect("claim");
                // As the worker does: the outcomes that end together, in one transaction.
                let done: Vec<_> = claimed
                    .iter()
                    .map(|task| {
                        (
                            task.id,
                            Settlement::Succeeded {
                                result: "null".into(),
                            },
                        )
                    })
                    .collect();
                let settled = store
                    .settle_many("bench", &done, now)
                    .await
                    .expect("settle");
                black_box(settled.len())
            })
        })
    });
}

fn wire(c: &mut Criterion) {
    let task: Task = serde_json::from_value(serde_json::json!({
        "id": Uuid::now_v7(), "kind": "http", "queue": "default", "priority": 0,
        "payload": {"url": "https://example.com/hook", "method": "POST", "body": {"order": 42}},
        "status": "succeeded", "attempts": 1, "max_attempts": 3, "timeout_secs": 300,
        "run_at": "2026-11-23T12:00:00Z", "created_at": "2026-11-23T12:00:00Z",
        "updated_at": "2026-11-23T12:00:01Z", "started_at": "2026-11-23T12:00:00.5Z",
        "finished_at": "2026-11-23T12:00:01Z", "result": {"status": 200, "body": "ok"},
        "last_error": null, "idempotency_key": "order-42", "labels": {"team": "ops"},
        "worker": "node-1-4242-ab12", "cancel_requested": false
    }))
    .expect("a task");
    let text = serde_json::to_string(&task).expect("encode");
    c.bench_function("task encode", |b| {
        b.iter(|| serde_json::to_string(black_box(&task)).expect("encode"))
    });
    c.bench_function("task decode", |b| {
        b.iter(|| serde_json::from_str::<Task>(black_box(&text)).expect("decode"))
    });
}

criterion_group!(benches, store_round, wire);
criterion_main!(benches);
