//! Schedules on a store: the scheduler's rounds driven at chosen instants, so that fire
//! times, downtimes and races are exact.

use std::sync::Arc;

use taskd::broker::Broker;
use taskd::domain::labels::Selector;
use taskd::domain::lifecycle::Settlement;
use taskd::events::EventHub;
use taskd::metrics::Metrics;
use taskd::scheduler::{self, Scheduler, Triggered};
use taskd::store::{ListFilter, ScheduleRow, Store};
use taskplane_api::{FIRE_AT_LABEL, ScheduleSpec, TaskStatus};

use super::kinds;

/// 2027-01-15T08:00:00Z, a whole hour.
const T0: i64 = 1_800_000_000_000;

fn scheduler(store: &Arc<dyn Store>) -> Arc<Scheduler> {
    Scheduler::new(
        store.clone(),
        Arc::new(Broker::db()),
        Arc::new(Metrics::default()),
        EventHub::new(store.clone()),
        Arc::new(kinds()),
    )
}

/// Creates the schedule `spec` (JSON) describes as the API does, at `now`.
async fn create(store: &Arc<dyn Store>, spec: serde_json::Value, now: i64) -> ScheduleRow {
    let spec: ScheduleSpec = serde_json::from_value(spec).expect("a spec");
    let name = spec.name.clone();
    let checked = scheduler::check(spec, &kinds(), now).expect("a valid spec");
    let row = ScheduleRow {
        name,
        spec: checked.spec_json(),
        paused: false,
        next_run_at: checked.first_after(now),
        last_run_at: None,
        last_task_id: None,
        last_status: None,
        created_at: now,
        updated_at: now,
    };
    assert!(store.create_schedule(&row, None).await.expect("create"));
    assert!(
        !store
            .create_schedule(&row, None)
            .await
            .expect("create again"),
        "a name is unique"
    );
    row
}

/// The fire times (labels) of the tasks schedule `name` made, earliest first.
async fn fire_times(store: &Arc<dyn Store>, name: &str) -> Vec<String> {
    let tasks = store
        .list(ListFilter {
            labels: vec![Selector::Equals("schedule".into(), name.into())],
            limit: 1000,
            ..ListFilter::default()
        })
        .await
        .expect("list");
    let mut times: Vec<String> = tasks
        .iter()
        .map(|task| {
            let labels: serde_json::Value = serde_json::from_str(&task.labels).expect("labels");
            labels[FIRE_AT_LABEL]
                .as_str()
                .expect("a fire time")
                .to_owned()
        })
        .collect();
    times.sort();
    times
}

fn at(ms: i64) -> String {
    scheduler::rfc3339(ms)
}

/// Three schedulers (as three processes would) run every round at the same instant: each
/// fire time makes one task, and the schedule moves on once.
pub async fn schedules_fire_once_per_time_across_schedulers(store: Arc<dyn Store>) {
    create(
        &store,
        serde_json::json!({"name": "tick", "every_secs": 1, "task": {"kind": "noop"}}),
        T0,
    )
    .await;
    let schedulers = [scheduler(&store), scheduler(&store), scheduler(&store)];
    for second in 1..=10 {
        let now = T0 + second * 1000 + 5;
        let rounds = schedulers.iter().map(|s| s.round(now));
        for next in futures_util::future::join_all(rounds).await {
            let round = next.expect("a round");
            assert_eq!(
                round.next,
                Some(T0 + (second + 1) * 1000),
                "the next fire time"
            );
            assert!(!round.more);
        }
    }
    let times = fire_times(&store, "tick").await;
    let expected: Vec<String> = (1..=10).map(|s| at(T0 + s * 1000)).collect();
    assert_eq!(times, expected, "one task per second, none twice");
    let row = store.schedule("tick").await.expect("read").expect("exists");
    assert_eq!(row.next_run_at, Some(T0 + 11_000));
    assert_eq!(row.last_run_at, Some(T0 + 10_005));
    assert_eq!(row.last_status, Some(TaskStatus::Queued));
}

/// After a downtime, the passed fire times follow catch_up: none skips them (the latest
/// only if it is recent), one runs one, all runs each (the latest 100 at most).
pub async fn schedules_catch_up_after_downtime(store: Arc<dyn Store>) {
    for (name, catch_up) in [("none", "none"), ("one", "one"), ("all", "all")] {
        create(
            &store,
            serde_json::json!({"name": format!("every-{name}"), "every_secs": 600,
                               "catch_up": catch_up, "task": {"kind": "noop"}}),
            T0,
        )
        .await;
        create(
            &store,
            serde_json::json!({"name": format!("hourly-{name}"), "cron": "0 * * * *",
                               "catch_up": catch_up, "task": {"kind": "noop"}}),
            T0,
        )
        .await;
    }
    create(
        &store,
        serde_json::json!({"name": "many-all", "every_secs": 60, "catch_up": "all",
                           "task": {"kind": "noop"}}),
        T0,
    )
    .await;
    // Nothing ran for 3 h 15 min: the ten-minute ones passed 19 times (the latest 5 minutes
    // ago), the hourly ones 3 times (the latest 15 minutes ago), the minutely one 195.
    let now = T0 + 195 * 60_000;
    let scheduler = scheduler(&store);
    scheduler.round(now).await.expect("a round");
    for (name, every, hourly) in [("none", 0, 0), ("one", 1, 1), ("all", 19, 3)] {
        let every_times = fire_times(&store, &format!("every-{name}")).await;
        let hourly_times = fire_times(&store, &format!("hourly-{name}")).await;
        assert_eq!(
            every_times.len(),
            every,
            "every 10 minutes, catch_up {name}"
        );
        assert_eq!(hourly_times.len(), hourly, "hourly, catch_up {name}");
    }
    // One runs for the latest; all runs each, in order.
    assert_eq!(
        fire_times(&store, "every-one").await,
        [at(T0 + 190 * 60_000)]
    );
    assert_eq!(
        fire_times(&store, "hourly-one").await,
        [at(T0 + 3 * 3_600_000)]
    );
    assert_eq!(
        fire_times(&store, "hourly-all").await,
        [at(T0 + 3_600_000), at(T0 + 7_200_000), at(T0 + 10_800_000)]
    );
    let many = fire_times(&store, "many-all").await;
    assert_eq!(many.len(), 100, "the latest 100");
    assert_eq!(many.first(), Some(&at(T0 + 96 * 60_000)));
    assert_eq!(many.last(), Some(&at(T0 + 195 * 60_000)));
    // Every schedule goes on at its next time after now, and a second round fires nothing.
    for name in ["every-none", "every-one", "every-all"] {
        let row = store.schedule(name).await.expect("read").expect("exists");
        assert_eq!(row.next_run_at, Some(T0 + 200 * 60_000), "{name}");
    }
    for name in ["hourly-none", "hourly-one", "hourly-all"] {
        let row = store.schedule(name).await.expect("read").expect("exists");
        assert_eq!(row.next_run_at, Some(T0 + 4 * 3_600_000), "{name}");
    }
    scheduler.round(now + 1).await.expect("a round");
    assert_eq!(fire_times(&store, "many-all").await.len(), 100);
    // A fire time found 30 s late is on time, for none too.
    scheduler
        .round(T0 + 200 * 60_000 + 30_000)
        .await
        .expect("a round");
    assert_eq!(
        fire_times(&store, "every-none").await,
        [at(T0 + 200 * 60_000)]
    );
}

/// overlap: skip fires nothing while the last task runs; a paused schedule fires nothing,
/// but a trigger runs it; fires leave `fired` events naming the schedule.
pub async fn schedules_skip_overlaps_pause_and_trigger(store: Arc<dyn Store>) {
    create(
        &store,
        serde_json::json!({"name": "one-at-a-time", "every_secs": 10, "overlap": "skip",
                           "task": {"kind": "noop", "queue": "sched"}}),
        T0,
    )
    .await;
    let scheduler = scheduler(&store);
    let before = store.latest_event().await.expect("latest");
    scheduler.round(T0 + 10_000).await.expect("a round");
    assert_eq!(fire_times(&store, "one-at-a-time").await.len(), 1);
    // Its task is claimed and runs: the next fire time passes without a task.
    let claimed = store
        .claim("w1", &["sched".to_owned()], 10, T0 + 10_100, T0 + 60_000)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    scheduler.round(T0 + 20_000).await.expect("a round");
    assert_eq!(
        fire_times(&store, "one-at-a-time").await.len(),
        1,
        "skipped"
    );
    let row = store
        .schedule("one-at-a-time")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(row.last_status, Some(TaskStatus::Running));
    assert_eq!(
        row.next_run_at,
        Some(T0 + 30_000),
        "the skipped time passed"
    );
    // Once it ends, the next time fires.
    let done = Settlement::Succeeded {
        result: "null".into(),
    };
    assert!(
        store
            .settle(claimed[0].id, "w1", &done, T0 + 25_000)
            .await
            .expect("settle")
    );
    scheduler.round(T0 + 30_000).await.expect("a round");
    assert_eq!(fire_times(&store, "one-at-a-time").await.len(), 2);

    // Paused: no fire; a trigger still submits one, and changes no fire time.
    let mut paused = store
        .schedule("one-at-a-time")
        .await
        .expect("read")
        .expect("exists");
    paused.paused = true;
    assert!(store.update_schedule(&paused, None).await.expect("pause"));
    scheduler.round(T0 + 40_000).await.expect("a round");
    assert_eq!(fire_times(&store, "one-at-a-time").await.len(), 2, "paused");
    let Triggered::Submitted(task) = scheduler
        .trigger("one-at-a-time", None)
        .await
        .expect("trigger")
    else {
        panic!("the trigger found no schedule");
    };
    assert_eq!(task.queue, "sched");
    let row = store
        .schedule("one-at-a-time")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        row.next_run_at,
        Some(T0 + 40_000),
        "a trigger changes no fire time"
    );
    assert_eq!(row.last_task_id, Some(task.id.to_string()));
    assert!(matches!(
        scheduler.trigger("nope", None).await.expect("trigger"),
        Triggered::NotFound
    ));

    // Each fire and the trigger left a `fired` event naming the schedule.
    let rows = store
        .event_rows(before, i64::MAX, 1000)
        .await
        .expect("events");
    let fired: Vec<_> = rows
        .iter()
        .flat_map(|row| row.events.iter())
        .filter(|event| event.event == "fired")
        .collect();
    assert_eq!(fired.len(), 3, "two fires and a trigger");
    assert!(
        fired
            .iter()
            .all(|e| e.schedule.as_deref() == Some("one-at-a-time") && e.queue == "sched")
    );
    assert_eq!(fired[2].task_id, task.id);

    // Deleted: its tasks stay, and it fires no more.
    assert!(
        store
            .delete_schedule("one-at-a-time", None)
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_schedule("one-at-a-time", None)
            .await
            .expect("delete")
    );
    scheduler.round(T0 + 3_600_000).await.expect("a round");
    assert_eq!(fire_times(&store, "one-at-a-time").await.len(), 3);
}

/// A process that refuses a schedule's task (its kind is disabled there) leaves the fire
/// time to a process that takes it, instead of using it up.
pub async fn schedules_refused_here_are_left_to_another_process(store: Arc<dyn Store>) {
    create(
        &store,
        serde_json::json!({"name": "backup", "every_secs": 60,
                           "task": {"kind": "shell", "payload": {"argv": ["true"]}}}),
        T0,
    )
    .await;
    let without_shell = Scheduler::new(
        store.clone(),
        Arc::new(Broker::db()),
        Arc::new(Metrics::default()),
        EventHub::new(store.clone()),
        Arc::new(taskd::domain::validate::Kinds {
            shell_enabled: false,
            ..kinds()
        }),
    );
    let round = without_shell.round(T0 + 60_000).await.expect("a round");
    assert_eq!(
        round.next,
        Some(T0 + 60_000),
        "still due: left for another process"
    );
    assert!(fire_times(&store, "backup").await.is_empty());
    scheduler(&store).round(T0 + 60_500).await.expect("a round");
    assert_eq!(fire_times(&store, "backup").await, [at(T0 + 60_000)]);
}
