//! The worker's periodic chores that concern no task of its own, each a small service that
//! does one round when asked: the heartbeat, lease reaping (with due tasks), retention, and
//! tending the database. [`Upkeep`] asks each on its schedule from the worker's ticks; a
//! test asks one directly.

use std::sync::Arc;
use std::time::Duration;

use taskplane_api::TaskStatus;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::domain::HEARTBEAT_EVERY;
use crate::log_gate::worth_logging;
use crate::store::{FinishedFilter, Result, Store, WorkerRow};

/// How long the change feed behind `/api/v1/events` keeps events (the resume window).
pub const EVENT_RETENTION: Duration = Duration::from_secs(600);

/// How often the worker looks whether the database's tables need a vacuum it does not get
/// (see [`Store::tend`]).
const TEND_EVERY: Duration = Duration::from_secs(10);

/// How often finished tasks past their retention are deleted (more often if the retention
/// itself is shorter).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// How long the row of a worker that stopped beating is kept (it shows as gone meanwhile).
const DEPARTED_KEPT_MS: i64 = 3_600_000;

/// Records that a worker is alive and how busy it is (`taskctl workers`).
pub struct Heartbeat {
    store: Arc<dyn Store>,
    row: WorkerRow,
}

impl Heartbeat {
    /// For the worker described by `row` (its `busy` and `heartbeat_at` are set per beat).
    pub fn new(store: Arc<dyn Store>, row: WorkerRow) -> Heartbeat {
        Heartbeat { store, row }
    }

    pub async fn beat(&self, busy: usize, now: i64) -> Result<()> {
        let row = WorkerRow {
            busy: u32::try_from(busy).unwrap_or(u32::MAX),
            heartbeat_at: now,
            ..self.row.clone()
        };
        self.store.heartbeat(&row).await
    }
}

/// Hands back to the queue what nobody will run otherwise: tasks whose `run_at` has come
/// (scheduled and retrying ones) and tasks whose worker stopped renewing its lease.
pub struct Reaper {
    store: Arc<dyn Store>,
    broker: Arc<Broker>,
}

/// What one round of the [`Reaper`] handed back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    pub due: u64,
    pub expired: u64,
}

impl Reaper {
    pub fn new(store: Arc<dyn Store>, broker: Arc<Broker>) -> Reaper {
        Reaper { store, broker }
    }

    /// One round; tells the broker when something became ready. A failed step is logged
    /// (once per run of the same error) and counts nothing.
    pub async fn round(&self, now: i64) -> Reaped {
        let mut reaped = Reaped::default();
        match self.store.promote_due(now).await {
            Ok(n) => reaped.due = n,
            Err(error) => {
                if worth_logging("promote", &error) {
                    tracing::warn!(%error, "promoting due tasks failed");
                }
            }
        }
        match self.store.reap_expired(now).await {
            Ok(n) => reaped.expired = n,
            Err(error) => {
                if worth_logging("reap", &error) {
                    tracing::warn!(%error, "reaping expired leases failed");
                }
            }
        }
        if reaped.due > 0 {
            tracing::debug!(tasks = reaped.due, "due tasks are ready");
        }
        if reaped.expired > 0 {
            tracing::warn!(
                tasks = reaped.expired,
                "took back tasks whose worker stopped renewing its lease"
            );
        }
        if reaped.due + reaped.expired > 0 {
            self.broker.work_ready();
        }
        reaped
    }
}

/// Deletes finished tasks older than the retention period, events past the resume window
/// and the rows of workers long gone.
pub struct Retention {
    store: Arc<dyn Store>,
    /// Finished tasks older than this are deleted.
    keep: Duration,
    /// Audit entries older than this are deleted.
    audit: Duration,
}

impl Retention {
    pub fn new(store: Arc<dyn Store>, keep: Duration, audit: Duration) -> Retention {
        Retention { store, keep, audit }
    }

    /// One round, answering how many finished tasks it deleted.
    pub async fn apply(&self, now: i64) -> Result<u64> {
        if let Err(error) = self
            .store
            .trim_events(now - EVENT_RETENTION.as_millis() as i64)
            .await
        {
            tracing::warn!(%error, "trimming the event feed failed");
        }
        if let Err(error) = self
            .store
            .remove_workers(None, now - DEPARTED_KEPT_MS)
            .await
        {
            tracing::warn!(%error, "forgetting departed workers failed");
        }
        match self
            .store
            .trim_audit(now.saturating_sub(self.audit.as_millis() as i64))
            .await
        {
            Ok(0) => {}
            Ok(trimmed) => {
                tracing::info!(entries = trimmed, retention = %humantime::format_duration(self.audit), "deleted audit entries past their retention")
            }
            Err(error) => tracing::warn!(%error, "trimming the audit log failed"),
        }
        let filter = FinishedFilter {
            statuses: vec![
                TaskStatus::Succeeded,
                TaskStatus::Failed,
                TaskStatus::Cancelled,
            ],
            finished_before: now - self.keep.as_millis() as i64,
            kind: None,
            queue: None,
            steps: true,
        };
        let deleted = self.store.delete_finished(filter).await?;
        if deleted > 0 {
            tracing::info!(tasks = deleted, retention = %humantime::format_duration(self.keep), "deleted finished tasks past their retention");
        }
        Ok(deleted)
    }
}

/// Vacuums and analyzes the database where nothing else does (see [`Store::tend`]).
pub struct Tender {
    store: Arc<dyn Store>,
    said: bool,
}

impl Tender {
    pub fn new(store: Arc<dyn Store>) -> Tender {
        Tender { store, said: false }
    }

    /// One round, answering the tables it tended.
    pub async fn round(&mut self) -> Result<Vec<String>> {
        let tables = self.store.tend().await?;
        if !tables.is_empty() {
            if !self.said {
                tracing::info!(
                    tables = %tables.join(","),
                    "the database's autovacuum is off: taskd vacuums and analyzes its own tables"
                );
                self.said = true;
            }
            tracing::debug!(tables = %tables.join(","), "vacuumed and analyzed");
        }
        Ok(tables)
    }
}

/// A chore's schedule: due at once, then every `period`.
pub struct Every {
    period: Duration,
    last: Option<Instant>,
}

impl Every {
    pub fn new(period: Duration) -> Every {
        Every { period, last: None }
    }

    /// Due a period from now rather than at once.
    pub fn later(period: Duration) -> Every {
        Every {
            period,
            last: Some(Instant::now()),
        }
    }

    /// True when the period has passed since the last `true` (or never was); then the
    /// period starts again.
    pub fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.period)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// The chores on their schedules, for the worker's loop to call on each tick.
pub struct Upkeep {
    heartbeat: Heartbeat,
    reaper: Reaper,
    retention: Retention,
    tender: Tender,
    heartbeat_every: Every,
    retention_every: Every,
    tend_every: Every,
}

impl Upkeep {
    pub fn new(
        heartbeat: Heartbeat,
        reaper: Reaper,
        retention: Retention,
        tender: Tender,
    ) -> Upkeep {
        let retention_every = Every::new(
            retention
                .keep
                .clamp(Duration::from_secs(1), RETENTION_EVERY),
        );
        Upkeep {
            heartbeat,
            reaper,
            retention,
            tender,
            heartbeat_every: Every::new(HEARTBEAT_EVERY),
            retention_every,
            // Not at start: nothing has changed yet.
            tend_every: Every::later(TEND_EVERY),
        }
    }

    /// What is due now: the reaper every tick, the others on their schedules.
    pub async fn tick(&mut self, busy: usize, now: i64) {
        self.reaper.round(now).await;
        if self.heartbeat_every.due()
            && let Err(error) = self.heartbeat.beat(busy, now).await
        {
            tracing::warn!(%error, "recording the heartbeat failed");
        }
        if self.tend_every.due()
            && let Err(error) = self.tender.round().await
        {
            tracing::debug!(%error, "tending the database failed");
        }
        if self.retention_every.due()
            && let Err(error) = self.retention.apply(now).await
        {
            tracing::warn!(%error, "applying the retention period failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::Settlement;
    use crate::domain::validate::{self, Kinds};
    use crate::store::SqliteStore;
    use taskplane_api::SubmitTask;
    use uuid::Uuid;

    const NOW: i64 = 1_800_000_000_000;
    const MINUTE: i64 = 60_000;

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.path().join("upkeep.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        store.migrate().await.expect("migrate");
        Arc::new(store)
    }

    /// Submits a noop task at `at`, `delay_ms` before it is due.
    async fn submit(store: &dyn Store, at: i64, delay_ms: Option<u64>) -> Uuid {
        let kinds = Kinds::new(false, false, Vec::new());
        let request = SubmitTask {
            kind: "noop".into(),
            delay_ms,
            ..Default::default()
        };
        let task = validate::submit(request, &kinds, Uuid::now_v7(), at).expect("valid");
        let id = task.id;
        store.insert(vec![task]).await.expect("insert");
        id
    }

    async fn status(store: &dyn Store, id: Uuid) -> Option<TaskStatus> {
        store.get(id).await.expect("get").map(|task| task.status)
    }

    fn queues() -> Vec<String> {
        vec!["default".to_owned()]
    }

    #[tokio::test]
    async fn the_heartbeat_records_the_worker_and_how_busy_it_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let row = WorkerRow {
            id: "w1".into(),
            host: "host".into(),
            pid: 7,
            queues: "default".into(),
            concurrency: 8,
            busy: 0,
            started_at: NOW,
            heartbeat_at: 0,
            kinds: "noop,echo".into(),
            remote: false,
        };
        let heartbeat = Heartbeat::new(store.clone(), row);
        heartbeat.beat(3, NOW + 1000).await.expect("beat");
        let workers = store.workers(NOW).await.expect("workers");
        assert_eq!(workers.len(), 1);
        assert_eq!((workers[0].busy, workers[0].heartbeat_at), (3, NOW + 1000));
        heartbeat.beat(5, NOW + 2000).await.expect("beat");
        let workers = store.workers(NOW).await.expect("workers");
        assert_eq!(workers.len(), 1, "the same row, beaten again");
        assert_eq!((workers[0].busy, workers[0].heartbeat_at), (5, NOW + 2000));
    }

    #[tokio::test]
    async fn the_reaper_hands_back_due_tasks_and_expired_leases_and_wakes_the_broker() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let broker = Arc::new(Broker::db());
        let reaper = Reaper::new(store.clone(), broker.clone());

        let later = submit(store.as_ref(), NOW, Some(60_000)).await;
        let held = submit(store.as_ref(), NOW, None).await;
        let claimed = store
            .claim("gone", &queues(), 10, NOW, NOW + 30_000)
            .await
            .expect("claim");
        assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), [held]);

        assert_eq!(
            reaper.round(NOW + 1000).await,
            Reaped::default(),
            "nothing due yet"
        );
        let woken = broker.ready_wake.notified();
        assert_eq!(
            reaper.round(NOW + 61_000).await,
            Reaped { due: 1, expired: 1 }
        );
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("the reaper wakes the db broker's workers");
        assert_eq!(
            status(store.as_ref(), later).await,
            Some(TaskStatus::Queued)
        );
        assert_eq!(status(store.as_ref(), held).await, Some(TaskStatus::Queued));
    }

    #[tokio::test]
    async fn retention_deletes_only_what_finished_before_the_period() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let old = submit(store.as_ref(), NOW, None).await;
        let recent = submit(store.as_ref(), NOW, None).await;
        let waiting = submit(store.as_ref(), NOW, None).await;
        store
            .claim("w", &queues(), 2, NOW, NOW + 30_000)
            .await
            .expect("claim");
        let done = Settlement::Succeeded {
            result: "null".into(),
        };
        assert!(store.settle(old, "w", &done, NOW).await.expect("settle"));
        assert!(
            store
                .settle(recent, "w", &done, NOW + 50 * MINUTE)
                .await
                .expect("settle")
        );

        let retention = Retention::new(
            store.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(90 * 24 * 3600),
        );
        assert_eq!(retention.apply(NOW + 61 * MINUTE).await.expect("apply"), 1);
        assert_eq!(
            status(store.as_ref(), old).await,
            None,
            "finished over an hour ago"
        );
        assert_eq!(
            status(store.as_ref(), recent).await,
            Some(TaskStatus::Succeeded)
        );
        assert_eq!(
            status(store.as_ref(), waiting).await,
            Some(TaskStatus::Queued)
        );
        assert_eq!(retention.apply(NOW + 61 * MINUTE).await.expect("again"), 0);
    }

    #[tokio::test]
    async fn a_schedule_is_due_at_once_then_each_period() {
        let mut now = Every::new(Duration::from_secs(3600));
        assert!(now.due(), "due at once");
        assert!(!now.due(), "not again within the period");
        let mut later = Every::later(Duration::from_secs(3600));
        assert!(!later.due(), "not before its first period");
        let mut always = Every::new(Duration::ZERO);
        assert!(always.due() && always.due());
    }
}
