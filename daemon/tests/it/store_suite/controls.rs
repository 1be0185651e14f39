//! Queue controls, concurrency keys and the audit log in the store contract.

use std::sync::Arc;

use taskd::domain::lifecycle::Settlement;
use taskd::store::{AuditEntry, AuditFilter, QueueChange, Store};
use uuid::Uuid;

use super::{LEASE, NOW, insert_one, new_task, queues};

fn entry(action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        actor: "ops@example".into(),
        action: action.into(),
        target: target.into(),
        details: "{}".into(),
    }
}

fn done() -> Settlement {
    Settlement::Succeeded {
        result: "null".into(),
    }
}

async fn settle(store: &dyn Store, id: Uuid, worker: &str) {
    assert!(
        store
            .settle(id, worker, &done(), NOW + 1)
            .await
            .expect("settle")
    );
}

/// A running limit: the claims of ungated work (by queue and by id) pass over the queue's
/// tasks, and the gated claim starts no more than the limit counting what runs; pausing
/// stops it, and clearing every control hands the queue back to the ordinary claims.
pub async fn a_running_limit_and_a_pause_gate_the_claims(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(insert_one(store.as_ref(), new_task(|_| {})).await);
    }
    let limit = QueueChange {
        max_running: Some(Some(2)),
        ..QueueChange::default()
    };
    let (gate, ungated) = store
        .change_queue("default", &limit, NOW, &entry("queue.set", "default"))
        .await
        .expect("set");
    let gate = gate.expect("settings kept");
    assert_eq!(gate.max_running, Some(2));
    assert!(!ungated);
    let state = store.gate_state().await.expect("gate state");
    assert_eq!(state.gated.get("default"), Some(&false));
    assert!(!state.keyed);

    let free = store
        .claim("w", &queues(), 10, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert!(
        free.is_empty(),
        "the ordinary claim passes over a gated queue"
    );
    let delivered = store
        .claim_ids("w", &ids, NOW, NOW + LEASE)
        .await
        .expect("claim by id");
    assert!(delivered.is_empty(), "and so does a claim of delivered ids");

    let first = store
        .claim_gated("w", &queues(), None, 10, NOW, NOW + LEASE)
        .await
        .expect("gated claim");
    assert_eq!(first.tasks.len(), 2, "the limit");
    assert_eq!(first.wake_at, None);
    let none = store
        .claim_gated("w2", &queues(), None, 10, NOW, NOW + LEASE)
        .await
        .expect("gated claim");
    assert!(
        none.tasks.is_empty(),
        "two run: no other process starts one"
    );
    settle(store.as_ref(), first.tasks[0].id, "w").await;
    let next = store
        .claim_gated("w2", &queues(), None, 10, NOW + 2, NOW + LEASE)
        .await
        .expect("gated claim");
    assert_eq!(next.tasks.len(), 1, "one ended, one starts");

    let pause = QueueChange {
        paused: Some(true),
        ..QueueChange::default()
    };
    store
        .change_queue("default", &pause, NOW + 3, &entry("queue.pause", "default"))
        .await
        .expect("pause");
    settle(store.as_ref(), next.tasks[0].id, "w2").await;
    let paused = store
        .claim_gated("w", &queues(), None, 10, NOW + 4, NOW + LEASE)
        .await
        .expect("gated claim");
    assert!(paused.tasks.is_empty(), "a paused queue starts nothing");
    assert_eq!(
        store
            .gate_state()
            .await
            .expect("gate state")
            .gated
            .get("default"),
        Some(&true)
    );

    let clear = QueueChange {
        paused: Some(false),
        max_running: Some(None),
        ..QueueChange::default()
    };
    let (gate, ungated) = store
        .change_queue(
            "default",
            &clear,
            NOW + 5,
            &entry("queue.resume", "default"),
        )
        .await
        .expect("clear");
    assert_eq!(gate, None, "a queue without controls keeps no settings");
    assert!(ungated);
    assert!(store.queue_settings().await.expect("settings").is_empty());
    let rest = store
        .claim("w", &queues(), 10, NOW + 6, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(rest.len(), 2, "the ordinary claim takes the rest");

    let log = store
        .audit_log(AuditFilter {
            action: Some("queue".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let actions: Vec<&str> = log.iter().map(|row| row.entry.action.as_str()).collect();
    assert_eq!(actions, ["queue.resume", "queue.pause", "queue.set"]);
    assert!(log.iter().all(|row| row.entry.actor == "ops@example"));
}

/// A rate: a burst of one second's worth, then a start per 1/rate seconds, and the claim
/// says when the next one comes.
pub async fn a_rate_spreads_the_starts(store: Arc<dyn Store>) {
    for _ in 0..8 {
        insert_one(
            store.as_ref(),
            new_task(|t| t.queue = Some("partner".into())),
        )
        .await;
    }
    let rate = QueueChange {
        rate_milli: Some(Some(5_000)),
        ..QueueChange::default()
    };
    store
        .change_queue("partner", &rate, NOW, &entry("queue.set", "partner"))
        .await
        .expect("set");
    let served = vec!["partner".to_owned()];
    let burst = store
        .claim_gated("w", &served, None, 10, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(burst.tasks.len(), 5, "the burst");
    assert_eq!(burst.wake_at, Some(NOW + 200));
    let early = store
        .claim_gated("w", &served, None, 10, NOW + 100, NOW + LEASE)
        .await
        .expect("claim");
    assert!(early.tasks.is_empty(), "no start before the next token");
    let later = store
        .claim_gated("w", &served, None, 10, NOW + 450, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(later.tasks.len(), 2, "two starts in 450 ms at 5/s");
}

/// Concurrency keys: the ordinary claims never take a keyed task; at most the key's limit
/// run at once, across queues; a task without a key beside them is not held up.
pub async fn concurrency_keys_never_overlap(store: Arc<dyn Store>) {
    let keyed = |queue: &str, key: &str| {
        let (queue, key) = (queue.to_owned(), key.to_owned());
        new_task(move |t| {
            t.queue = Some(queue);
            t.concurrency_key = Some(key);
        })
    };
    let a1 = insert_one(store.as_ref(), keyed("default", "host=web1")).await;
    let a2 = insert_one(store.as_ref(), keyed("other", "host=web1")).await;
    let b = insert_one(store.as_ref(), keyed("default", "host=web2")).await;
    let served = vec!["default".to_owned(), "other".to_owned()];
    assert!(store.gate_state().await.expect("state").keyed);
    let free = store
        .claim("w", &served, 10, NOW, NOW + LEASE)
        .await
        .expect("claim");
    assert!(free.is_empty(), "keyed tasks are the gated claim's");
    let first = store
        .claim_gated("w", &served, None, 10, NOW, NOW + LEASE)
        .await
        .expect("claim");
    let mut got: Vec<Uuid> = first.tasks.iter().map(|t| t.id).collect();
    got.sort();
    assert_eq!(got, [a1, b], "one per key, the oldest first");
    let blocked = store
        .claim_gated("w2", &served, None, 10, NOW + 1, NOW + LEASE)
        .await
        .expect("claim");
    assert!(blocked.tasks.is_empty(), "web1 runs in another queue");
    settle(store.as_ref(), a1, "w").await;
    let next = store
        .claim_gated("w2", &served, None, 10, NOW + 2, NOW + LEASE)
        .await
        .expect("claim");
    assert_eq!(next.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [a2]);
    let row = store.get(a2).await.expect("get").expect("exists");
    assert_eq!(row.concurrency_key.as_deref(), Some("host=web1"));
}

/// Audited actions are written with the change, and only when it happened; retention trims
/// the log.
pub async fn audited_actions_are_kept_with_their_change(store: Arc<dyn Store>) {
    let id = insert_one(store.as_ref(), new_task(|_| {})).await;
    store
        .cancel_by(id, NOW, Some(&entry("cancel", &id.to_string())))
        .await
        .expect("cancel");
    // A second cancel changes nothing and records nothing.
    store
        .cancel_by(id, NOW + 1, Some(&entry("cancel", &id.to_string())))
        .await
        .expect("cancel again");
    store
        .retry_by(id, NOW + 2, Some(&entry("retry", &id.to_string())))
        .await
        .expect("retry");
    let mut audited = new_task(|t| {
        t.kind = "shell".into();
        t.payload = Some(serde_json::json!({"argv": ["true"]}));
    });
    audited.audit = Some(entry("submit", &audited.id.to_string()));
    insert_one(store.as_ref(), audited).await;
    let log = store
        .audit_log(AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let actions: Vec<&str> = log.iter().map(|row| row.entry.action.as_str()).collect();
    assert_eq!(actions, ["submit", "retry", "cancel"]);
    let older = store
        .audit_log(AuditFilter {
            before: Some(log[0].seq),
            actor: Some("ops@example".into()),
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .expect("page");
    assert_eq!(older[0].entry.action, "retry", "the next page");
    let since = store
        .audit_log(AuditFilter {
            since: Some(NOW + 1),
            action: Some("cancel".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("since");
    assert!(since.is_empty());
    // The cancel and the submit were made at NOW, the retry later.
    assert_eq!(store.trim_audit(NOW + 1).await.expect("trim"), 2);
}
