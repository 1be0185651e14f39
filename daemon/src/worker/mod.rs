//! The worker role: claims ready tasks, runs each under its timeout and cancellation token,
//! records the outcome, renews its leases, and hands the due and the orphaned back to the
//! queue.

mod settle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{AmqpIntake, Broker, Delivered, Receipt};
use crate::domain::backoff::Backoff;
use crate::domain::lifecycle::{self, AttemptOutcome};
use crate::executors::{Registry, TaskContext};
use crate::output::{self as logs, LogWriter};
use crate::store::{ClaimedTask, FinishedFilter, Store, WorkerRow};
use crate::util::now_ms;
use taskplane_api::TaskStatus;

/// How often the worker looks for cancel requests, due tasks and expired leases, and for
/// new work when nothing woke it.
const TICK: Duration = Duration::from_millis(200);
use crate::domain::HEARTBEAT_EVERY;
/// How long the change feed behind `/api/v1/events` keeps events (the resume window).
const EVENT_RETENTION: Duration = Duration::from_secs(600);

/// How often the worker looks whether the database's tables need a vacuum it does not get
/// (see [`Store::tend`]).
const TEND_EVERY: Duration = Duration::from_secs(10);

/// How often finished tasks past their retention are deleted (more often if the retention
/// itself is shorter).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique per process: `host-pid-xxxx`.
    pub id: String,
    pub queues: Vec<String>,
    pub concurrency: u32,
    /// How long a claim holds a task without renewal; renewed every third of it.
    pub lease: Duration,
    pub backoff: Backoff,
    /// How long shutdown waits for running tasks before stopping and requeueing them.
    pub grace: Duration,
    /// Finished tasks older than this are deleted.
    pub retention: Duration,
}

pub struct Worker {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub config: WorkerConfig,
    /// How work arrives, and whom to tell when work becomes ready.
    pub broker: Arc<Broker>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A running task, as the loop tracks it.
struct Slot {
    /// Fires on a user's cancel request.
    cancel: CancellationToken,
}

/// How many handlers are running. A slot is free again as soon as its handler returns:
/// recording the outcome (and acking the delivery) goes on beside the next claim, so claims
/// and settles overlap instead of taking turns.
#[derive(Default)]
struct Handlers {
    busy: std::sync::atomic::AtomicUsize,
    freed: tokio::sync::Notify,
}

/// One running handler; frees its slot when dropped (also if the attempt panics).
struct HandlerSlot(Arc<Handlers>);

impl Handlers {
    fn busy(&self) -> usize {
        self.busy.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl HandlerSlot {
    fn take(handlers: &Arc<Handlers>) -> HandlerSlot {
        handlers
            .busy
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        HandlerSlot(handlers.clone())
    }
}

impl Drop for HandlerSlot {
    fn drop(&mut self) {
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.freed.notify_one();
    }
}

/// Attempts whose outcome is still being recorded, at most this many times the slots.
const SETTLING_PER_SLOT: usize = 4;

impl Worker {
    /// Runs until `shutdown` fires and the running tasks have finished or been requeued.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let logs = LogWriter::start(this.store.clone());
        let settler = settle::Settler::start(this.store.clone(), this.config.id.clone());
        // Fires when the grace period is over: every handler still running is stopped.
        let hard_stop = CancellationToken::new();
        let mut running: JoinSet<Uuid> = JoinSet::new();
        let handlers = Arc::new(Handlers::default());
        let mut slots: HashMap<Uuid, Slot> = HashMap::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let renew_every = (this.config.lease / 3).max(TICK);
        let mut last_renew = tokio::time::Instant::now();
        let mut last_retention: Option<tokio::time::Instant> = None;
        let mut last_heartbeat: Option<tokio::time::Instant> = None;
        let mut last_tend = tokio::time::Instant::now();
        let mut tended_before = false;
        let started_at = now_ms();
        let mut grace_deadline: Option<tokio::time::Instant> = None;
        let mut amqp = this.broker.amqp_client().map(|client| {
            AmqpIntake::new(
                client.clone(),
                this.config.queues.clone(),
                // A quarter more than the slots: room for deliveries whose outcome is being
                // recorded beside full slots, while few messages wait here unordered (what
                // sits in the prefetch cannot be overtaken by a higher priority; a
                // single-slot worker keeps strict priority order).
                u16::try_from(this.config.concurrency + this.config.concurrency / 4)
                    .unwrap_or(u16::MAX),
                this.config.id.clone(),
            )
        });
        tracing::info!(
            worker = %this.config.id,
            queues = ?this.config.queues,
            concurrency = this.config.concurrency,
            "worker started"
        );

        loop {
            let draining = shutdown.is_cancelled();
            if draining && grace_deadline.is_none() {
                tracing::info!(
                    running = running.len(),
                    grace = ?this.config.grace,
                    "shutting down: no new work; waiting for running tasks"
                );
                grace_deadline = Some(tokio::time::Instant::now() + this.config.grace);
            }
            if draining && running.is_empty() {
                break;
            }

            let slots_total = this.config.concurrency as usize;
            let busy = handlers.busy();
            let free = (slots_total - busy.min(slots_total))
                .min((slots_total * SETTLING_PER_SLOT).saturating_sub(running.len()));
            let mut claimed_all = false;
            if amqp.is_none() && !draining && free > 0 {
                match this.claim(free as u32).await {
                    Ok(tasks) => {
                        claimed_all = tasks.len() == free;
                        for task in tasks {
                            let cancel = CancellationToken::new();
                            slots.insert(
                                task.id,
                                Slot {
                                    cancel: cancel.clone(),
                                },
                            );
                            let sink = logs.sink(task.id, task.attempt);
                            running.spawn(this.clone().execute(
                                task,
                                HandlerSlot::take(&handlers),
                                cancel,
                                hard_stop.clone(),
                                sink,
                                settler.clone(),
                                None,
                            ));
                        }
                    }
                    Err(error) => {
                        if worth_logging("claim", &error) {
                            tracing::warn!(%error, "claiming tasks failed; will retry");
                        }
                    }
                }
            }
            if claimed_all {
                // Every free slot got work: there may be more, but first let results in.
                tokio::task::yield_now().await;
            }

            let from_db = amqp.is_none();
            let delivered = async {
                match amqp.as_mut() {
                    Some(intake) if !draining && free > 0 => intake.next(free).await,
                    _ => std::future::pending().await,
                }
            };
            let grace_over = async {
                match grace_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = running.join_next(), if !running.is_empty() => {
                    // Reap every task that has ended (outcomes are committed in groups, so
                    // they end together), then claim for all the free slots at once.
                    let mut next = Some(done);
                    while let Some(done) = next {
                        match done {
                            Ok(id) => { slots.remove(&id); }
                            Err(error) => tracing::error!(%error, "a task runner panicked"),
                        }
                        next = running.try_join_next();
                    }
                }
                batch = delivered => {
                    for (task, acker) in this.claim_delivered(batch).await {
                        let cancel = CancellationToken::new();
                        slots.insert(task.id, Slot { cancel: cancel.clone() });
                        let sink = logs.sink(task.id, task.attempt);
                        running.spawn(this.clone().execute(task, HandlerSlot::take(&handlers), cancel, hard_stop.clone(), sink, settler.clone(), Some(acker)));
                    }
                }
                _ = handlers.freed.notified(), if !draining => {}
                _ = this.broker.ready_wake.notified(), if from_db && !draining && free > 0 => {}
                _ = shutdown.cancelled(), if !draining => {}
                _ = grace_over, if !hard_stop.is_cancelled() => {
                    tracing::warn!(running = running.len(), "grace period over: stopping running tasks and requeueing them");
                    hard_stop.cancel();
                }
                _ = ticker.tick() => {
                    this.maintain(&slots, &mut last_renew, renew_every).await;
                    if last_heartbeat.is_none_or(|at| at.elapsed() >= HEARTBEAT_EVERY) {
                        this.heartbeat(started_at, handlers.busy()).await;
                        last_heartbeat = Some(tokio::time::Instant::now());
                    }
                    if last_tend.elapsed() >= TEND_EVERY {
                        last_tend = tokio::time::Instant::now();
                        match this.store.tend().await {
                            Ok(tables) if !tables.is_empty() => {
                                if !tended_before {
                                    tracing::info!(?tables, "the database's autovacuum is off: taskd vacuums and analyzes its own tables");
                                    tended_before = true;
                                }
                                tracing::debug!(?tables, "vacuumed and analyzed");
                            }
                            Ok(_) => {}
                            Err(error) => tracing::debug!(%error, "tending the database failed"),
                        }
                    }
                    let every = this.config.retention.clamp(Duration::from_secs(1), RETENTION_EVERY);
                    if last_retention.is_none_or(|at| at.elapsed() >= every) {
                        this.apply_retention().await;
                        last_retention = Some(tokio::time::Instant::now());
                    }
                }
            }
            if running.is_empty() {
                slots.clear();
            }
            this.metrics.set_busy(handlers.busy());
        }
        if let Err(error) = this.store.remove_workers(Some(&this.config.id), 0).await {
            tracing::debug!(%error, "could not remove this worker from the live list");
        }
        tracing::info!(worker = %this.config.id, "worker stopped");
    }

    async fn claim(&self, limit: u32) -> crate::store::Result<Vec<ClaimedTask>> {
        let now = now_ms();
        let lease_until = now + self.config.lease.as_millis() as i64;
        self.store
            .claim(
                &self.config.id,
                &self.config.queues,
                limit,
                now,
                lease_until,
            )
            .await
    }

    /// Claims the tasks RabbitMQ delivered. Deliveries of tasks that are not ready (a
    /// duplicate, a cancelled task) are acknowledged and dropped; if the database cannot be
    /// reached they go back to the queue.
    async fn claim_delivered(&self, batch: Vec<Delivered>) -> Vec<(ClaimedTask, Receipt)> {
        let mut by_id: HashMap<Uuid, Receipt> = HashMap::with_capacity(batch.len());
        for delivery in batch {
            match delivery.task_id {
                Some(id) => {
                    if let Some(duplicate) = by_id.insert(id, delivery.receipt) {
                        self.metrics.delivery_dropped();
                        duplicate.ack().await;
                    }
                }
                None => {
                    tracing::warn!("dropping a RabbitMQ message without a task id");
                    delivery.receipt.ack().await;
                }
            }
        }
        let ids: Vec<Uuid> = by_id.keys().copied().collect();
        let now = now_ms();
        let lease_until = now + self.config.lease.as_millis() as i64;
        match self
            .store
            .claim_ids(&self.config.id, &ids, now, lease_until)
            .await
        {
            Ok(claimed) => {
                let mut out = Vec::with_capacity(claimed.len());
                for task in claimed {
                    if let Some(receipt) = by_id.remove(&task.id) {
                        out.push((task, receipt));
                    }
                }
                for (id, receipt) in by_id {
                    tracing::debug!(task_id = %id, "delivery of a task that is not ready; dropped");
                    self.metrics.delivery_dropped();
                    receipt.ack().await;
                }
                out
            }
            Err(error) => {
                tracing::warn!(%error, "claiming delivered tasks failed; returning them to the queue");
                // Not at once: the database is likely down, and an instant redelivery would
                // spin.
                tokio::time::sleep(Duration::from_millis(500)).await;
                for receipt in by_id.values() {
                    receipt.requeue().await;
                }
                Vec::new()
            }
        }
    }

    /// Records that this worker is alive and how busy it is.
    async fn heartbeat(&self, started_at: i64, busy: usize) {
        let row = WorkerRow {
            id: self.config.id.clone(),
            host: hostname(),
            pid: std::process::id(),
            queues: self.config.queues.join(","),
            concurrency: self.config.concurrency,
            busy: busy as u32,
            started_at,
            heartbeat_at: now_ms(),
        };
        if let Err(error) = self.store.heartbeat(&row).await {
            tracing::warn!(%error, "recording the heartbeat failed");
        }
    }

    /// Deletes finished tasks older than the retention period, old events and the rows of
    /// workers that have long been gone.
    async fn apply_retention(&self) {
        let now = now_ms();
        if let Err(error) = self
            .store
            .trim_events(now - EVENT_RETENTION.as_millis() as i64)
            .await
        {
            tracing::warn!(%error, "trimming the event feed failed");
        }
        if let Err(error) = self.store.remove_workers(None, now - 3_600_000).await {
            tracing::warn!(%error, "forgetting departed workers failed");
        }
        let filter = FinishedFilter {
            statuses: vec![
                TaskStatus::Succeeded,
                TaskStatus::Failed,
                TaskStatus::Cancelled,
            ],
            finished_before: now_ms() - self.config.retention.as_millis() as i64,
            kind: None,
            queue: None,
        };
        match self.store.delete_finished(filter).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(tasks = n, retention = ?self.config.retention, "deleted finished tasks past their retention")
            }
            Err(error) => tracing::warn!(%error, "applying the retention period failed"),
        }
    }

    /// The periodic chores: cancel requests, lease renewal, due tasks, expired leases.
    async fn maintain(
        &self,
        slots: &HashMap<Uuid, Slot>,
        last_renew: &mut tokio::time::Instant,
        renew_every: Duration,
    ) {
        let store = self.store.as_ref();
        if !slots.is_empty() {
            match store.cancel_requests(&self.config.id).await {
                Ok(ids) => {
                    for id in ids {
                        if let Some(slot) = slots.get(&id)
                            && !slot.cancel.is_cancelled()
                        {
                            tracing::info!(task_id = %id, "cancel requested: stopping the handler");
                            slot.cancel.cancel();
                        }
                    }
                }
                Err(error) => {
                    if worth_logging("cancel requests", &error) {
                        tracing::warn!(%error, "reading cancel requests failed");
                    }
                }
            }
            if last_renew.elapsed() >= renew_every {
                let until = now_ms() + self.config.lease.as_millis() as i64;
                match store.renew_leases(&self.config.id, until).await {
                    Ok(_) => *last_renew = tokio::time::Instant::now(),
                    Err(error) => {
                        if worth_logging("renew", &error) {
                            tracing::warn!(%error, "renewing leases failed");
                        }
                    }
                }
            }
        }
        let now = now_ms();
        match store.promote_due(now).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(tasks = n, "due tasks are ready");
                self.broker.work_ready();
            }
            Err(error) => {
                if worth_logging("promote", &error) {
                    tracing::warn!(%error, "promoting due tasks failed");
                }
            }
        }
        match store.reap_expired(now).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    tasks = n,
                    "took back tasks whose worker stopped renewing its lease"
                );
                self.broker.work_ready();
            }
            Err(error) => {
                if worth_logging("reap", &error) {
                    tracing::warn!(%error, "reaping expired leases failed");
                }
            }
        }
    }

    /// The task's own backoff bounds where it has them, this worker's otherwise.
    fn backoff_for(&self, task: &ClaimedTask) -> Backoff {
        let ms = Duration::from_millis;
        let max = task.retry_max_ms.map_or(self.config.backoff.max, ms);
        let base = task
            .retry_base_ms
            .map_or(self.config.backoff.base, ms)
            .min(max);
        Backoff { base, max }
    }

    /// Runs one attempt and records its outcome. Returns the task id.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        self: Arc<Self>,
        task: ClaimedTask,
        slot: HandlerSlot,
        cancel: CancellationToken,
        hard_stop: CancellationToken,
        log: logs::LogSink,
        settler: settle::Settler,
        delivery: Option<Receipt>,
    ) -> Uuid {
        // Every log line of this attempt carries the task's identity.
        let span = tracing::info_span!(
            "task",
            task_id = %task.id,
            kind = %task.kind,
            queue = %task.queue,
            attempt = task.attempt,
            worker = %self.config.id
        );
        tracing::Instrument::instrument(
            self.attempt(task, slot, cancel, hard_stop, log, settler, delivery),
            span,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        self: Arc<Self>,
        task: ClaimedTask,
        slot: HandlerSlot,
        cancel: CancellationToken,
        hard_stop: CancellationToken,
        log: logs::LogSink,
        settler: settle::Settler,
        delivery: Option<Receipt>,
    ) -> Uuid {
        let id = task.id;
        let began = now_ms();
        tracing::debug!("attempt started");
        let timeout = Duration::from_secs(task.timeout_secs);
        let outcome = match self.registry.get(&task.kind) {
            None => AttemptOutcome::Failed(format!(
                "this worker has no executor for kind '{}'",
                task.kind
            )),
            Some(executor) => {
                // The handler's own token fires for any reason it must stop; it lets an
                // executor clean up even though the future is also dropped.
                let handler_token = CancellationToken::new();
                let ctx = TaskContext {
                    id,
                    attempt: task.attempt,
                    payload: task.payload.clone(),
                    cancel: handler_token.clone(),
                    log: log.clone(),
                };
                let run = executor.run(ctx);
                let outcome = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => AttemptOutcome::Cancelled,
                    _ = hard_stop.cancelled() => AttemptOutcome::Interrupted,
                    result = tokio::time::timeout(timeout, run) => match result {
                        Ok(Ok(value)) => AttemptOutcome::Succeeded(value.to_string()),
                        Ok(Err(error)) => AttemptOutcome::Failed(error.to_string()),
                        Err(_) => AttemptOutcome::Failed(format!(
                            "timed out after {}s", task.timeout_secs
                        )),
                    },
                };
                handler_token.cancel();
                outcome
            }
        };
        log.flush().await;
        drop(slot);

        let delay = self.backoff_for(&task).delay(task.attempt, fastrand::f64());
        let settlement = lifecycle::settle(
            outcome,
            task.attempt,
            task.max_attempts,
            now_ms(),
            delay.as_millis() as u64,
        );
        let status = settlement.status();
        let ended = now_ms();
        self.metrics.finished(
            &task.queue,
            &task.kind,
            status.as_str(),
            (ended - began).max(0) as f64 / 1000.0,
            (began - task.created_at).max(0) as f64 / 1000.0,
        );
        match &settlement {
            lifecycle::Settlement::Failed { error }
            | lifecycle::Settlement::Retrying { error, .. } => {
                tracing::info!(%status, %error, "attempt failed");
            }
            _ => tracing::debug!(%status, "attempt ended"),
        }
        // Keep trying while the lease would still be ours: a database restart should not
        // cost the outcome. Past that, the task runs again elsewhere.
        let give_up = tokio::time::Instant::now() + self.config.lease;
        let mut wait = Duration::from_millis(100);
        let settled = loop {
            match settler.settle(id, settlement.clone()).await {
                Ok(true) => {
                    tracing::debug!(task_id = %id, kind = %task.kind, %status, "task settled");
                    break true;
                }
                Ok(false) => {
                    tracing::warn!(task_id = %id, "outcome dropped: this worker no longer holds the task (its lease expired)");
                    break true;
                }
                Err(error) if tokio::time::Instant::now() + wait < give_up => {
                    tracing::warn!(task_id = %id, %error, "recording the outcome failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::error!(task_id = %id, %error, "recording the outcome failed; the task will run again when its lease expires");
                    break false;
                }
            }
        };
        // The broker hears of the task only once the database holds its outcome.
        if let Some(receipt) = delivery {
            if settled {
                receipt.ack().await;
            } else {
                receipt.requeue().await;
            }
        }
        id
    }
}

/// Whether a chore's failure is worth a log line: the first of a run of the same error, then
/// once a minute while it lasts. The loop retries every tick, and a database that refuses
/// writes would otherwise add a dozen lines a second to a disk that may be the full one.
fn worth_logging(chore: &'static str, error: &dyn std::fmt::Display) -> bool {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static LAST: Mutex<BTreeMap<&'static str, (String, std::time::Instant)>> =
        Mutex::new(BTreeMap::new());
    let Ok(mut last) = LAST.lock() else {
        return true;
    };
    let text = error.to_string();
    let now = std::time::Instant::now();
    match last.get(chore) {
        Some((seen, at)) if *seen == text && now.duration_since(*at) < Duration::from_secs(60) => {
            false
        }
        _ => {
            last.insert(chore, (text, now));
            true
        }
    }
}

/// Now, in Unix milliseconds.
/// A worker id that is unique across hosts and restarts: `host-pid-xxxx`.
pub fn worker_id() -> String {
    format!(
        "{}-{}-{:04x}",
        hostname(),
        std::process::id(),
        fastrand::u16(..)
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
