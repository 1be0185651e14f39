//! The worker role: claims ready tasks, runs each under its timeout and cancellation token,
//! records the outcome, renews its leases, and hands the due and the orphaned back to the
//! queue.

mod settle;
pub mod upkeep;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{Broker, Claimant, Receipt};
use crate::domain::backoff::Backoff;
use crate::domain::lifecycle::{self, AttemptOutcome};
use crate::domain::workflow;
use crate::executors::{Registry, TaskContext};
use crate::log_gate::worth_logging;
use crate::output::{self as logs, LogWriter};
use crate::store::{ClaimedTask, Store, WorkerRow};
use crate::util::now_ms;
use upkeep::{Heartbeat, Reaper, Retention, Tender, Upkeep};

/// How often the worker looks for cancel requests, due tasks and expired leases, and for
/// new work when nothing woke it.
const TICK: Duration = Duration::from_millis(200);

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
    /// Audit log entries older than this are deleted.
    pub audit_retention: Duration,
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

/// The RabbitMQ prefetch of a worker with `slots`: the messages it holds unacknowledged, a
/// quarter more than its slots. A message is held from its arrival until the outcome of
/// each task it names is stored, and names up to [`TASKS_PER_MESSAGE`] tasks published
/// together, so under load the window in tasks grows with the batches (a message a task
/// when submits come one by one), while what waits here for a slot, where a later, higher
/// priority cannot overtake it and another worker cannot take it, stays bounded. A
/// single-slot worker holds one message.
///
/// [`TASKS_PER_MESSAGE`]: crate::broker::amqp::TASKS_PER_MESSAGE
fn prefetch(slots: u32) -> u16 {
    u16::try_from(slots.max(1) + slots / 4).unwrap_or(u16::MAX)
}

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
        let mut upkeep = Upkeep::new(
            Heartbeat::new(
                this.store.clone(),
                WorkerRow {
                    id: this.config.id.clone(),
                    host: hostname(),
                    pid: std::process::id(),
                    queues: this.config.queues.join(","),
                    concurrency: this.config.concurrency,
                    busy: 0,
                    started_at: now_ms(),
                    heartbeat_at: 0,
                    kinds: this.registry.kinds().join(","),
                    remote: false,
                },
            ),
            Reaper::new(this.store.clone(), this.broker.clone()),
            Retention::new(
                this.store.clone(),
                this.config.retention,
                this.config.audit_retention,
            ),
            Tender::new(this.store.clone()),
        );
        let mut grace_deadline: Option<tokio::time::Instant> = None;
        let mut intake = this.broker.intake(
            Claimant {
                store: this.store.clone(),
                worker: this.config.id.clone(),
                queues: this.config.queues.clone(),
                kinds: this.registry.kinds(),
                lease: this.config.lease,
                metrics: this.metrics.clone(),
            },
            prefetch(this.config.concurrency),
        );
        tracing::info!(
            worker = %this.config.id,
            queues = %this.config.queues.join(","),
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
            if !draining && free > 0 {
                // Read only for the claim spans (traces on).
                let claim_started = crate::telemetry::on().then(std::time::SystemTime::now);
                let tasks = intake.take(free).await;
                claimed_all = tasks.len() == free;
                for (task, receipt) in tasks {
                    if let Some(started) = claim_started {
                        crate::telemetry::claimed(started, &task, &this.config.id);
                    }
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
                        receipt,
                    ));
                }
            }
            if claimed_all {
                // Every free slot got work: there may be more, but first let results in.
                tokio::task::yield_now().await;
            }

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
                _ = intake.wait(), if !draining && free > 0 => {}
                _ = handlers.freed.notified(), if !draining => {}
                _ = shutdown.cancelled(), if !draining => {}
                _ = grace_over, if !hard_stop.is_cancelled() => {
                    tracing::warn!(running = running.len(), "grace period over: stopping running tasks and requeueing them");
                    hard_stop.cancel();
                }
                _ = ticker.tick() => {
                    this.own_leases(&slots, &mut last_renew, renew_every).await;
                    upkeep.tick(handlers.busy(), now_ms()).await;
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

    /// The chores of this worker's own tasks: cancel requests and lease renewal.
    async fn own_leases(
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
    }

    /// The task's own backoff bounds where it has them, this worker's otherwise.
    fn backoff_for(&self, task: &ClaimedTask) -> Backoff {
        self.config
            .backoff
            .with_task(task.retry_base_ms, task.retry_max_ms)
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
        delivery: Receipt,
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
        // The attempt joins the trace its task was submitted in, however long ago and in
        // whichever process.
        crate::telemetry::join(&span, task.trace_parent.as_deref());
        tracing::Instrument::instrument(
            self.attempt(task, slot, cancel, hard_stop, log, settler, delivery),
            span,
        )
        .await
    }

    /// The payload this attempt runs with: a workflow step's, with the results of the steps
    /// it names put in (and written to its log); anything else's as it is.
    async fn resolve(
        &self,
        task: &ClaimedTask,
        log: &logs::LogSink,
    ) -> Result<String, AttemptOutcome> {
        match fill_in(self.store.as_ref(), task).await? {
            None => Ok(task.payload.clone()),
            Some(payload) => {
                log.line(
                    taskplane_api::LogStream::System,
                    format!("payload with the results of earlier steps: {payload}"),
                )
                .await;
                Ok(payload)
            }
        }
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
        delivery: Receipt,
    ) -> Uuid {
        let id = task.id;
        let began = now_ms();
        tracing::debug!("attempt started");
        let timeout = Duration::from_secs(task.timeout_secs);
        let payload = self.resolve(&task, &log).await;
        let outcome = match (self.registry.get(&task.kind), payload) {
            (_, Err(outcome)) => outcome,
            (None, _) => AttemptOutcome::Failed(format!(
                "this worker has no executor for kind '{}'",
                task.kind
            )),
            (Some(executor), Ok(payload)) => {
                // The handler's own token fires for any reason it must stop; it lets an
                // executor clean up even though the future is also dropped.
                let handler_token = CancellationToken::new();
                let traceparent = crate::telemetry::passed_on(task.trace_parent.as_deref());
                let ctx = TaskContext {
                    id,
                    attempt: task.attempt,
                    payload,
                    cancel: handler_token.clone(),
                    log: log.clone(),
                    traceparent,
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
        self.metrics.attempt_ended(
            &task.queue,
            &task.kind,
            status.as_str(),
            task.created_at,
            began,
            now_ms(),
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
            match crate::telemetry::traced(
                "task.settle",
                Some(id),
                settler.settle(id, settlement.clone()),
            )
            .await
            {
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
        if settled {
            delivery.ack().await;
        } else {
            delivery.requeue().await;
        }
        id
    }
}

/// A workflow step's payload with the results of the steps it names put in; None for a task
/// whose payload names none. A field a result lacks, or a filled-in payload its kind refuses,
/// is [`AttemptOutcome::Rejected`] (another attempt would fail the same way). Local workers
/// call it before the handler runs, the lease protocol before it hands a task out.
pub async fn fill_in(
    store: &dyn Store,
    task: &ClaimedTask,
) -> Result<Option<String>, AttemptOutcome> {
    let Some(workflow) = task
        .workflow_id
        .as_deref()
        .filter(|_| workflow::has_references(&task.payload))
    else {
        return Ok(None);
    };
    let rejected = |message: String| {
        AttemptOutcome::Rejected(format!("the payload cannot be filled in: {message}"))
    };
    let unavailable = |error: crate::store::StoreError| {
        AttemptOutcome::Failed(format!(
            "reading the results of earlier steps failed: {error}"
        ))
    };
    let workflow: Uuid = workflow
        .parse()
        .map_err(|_| rejected(format!("'{workflow}' is not a workflow id")))?;
    let template: serde_json::Value =
        serde_json::from_str(&task.payload).map_err(|e| rejected(e.to_string()))?;
    let succeeded: std::collections::HashSet<String> = store
        .succeeded_steps(workflow)
        .await
        .map_err(unavailable)?
        .into_iter()
        .collect();
    let used = workflow::used_steps(&template, &succeeded).map_err(rejected)?;
    let results: HashMap<String, serde_json::Value> = store
        .step_results(workflow, used)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|(step, result)| {
            let value = serde_json::from_str(&result).unwrap_or(serde_json::Value::String(result));
            (step, value)
        })
        .collect();
    let filled = workflow::substitute(&template, &results).map_err(rejected)?;
    // Its shape could not be checked at submit; another attempt would fail the same way.
    crate::domain::validate::check_payload(&task.kind, &filled).map_err(|e| rejected(e.message))?;
    Ok(Some(filled.to_string()))
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn the_prefetch_is_a_quarter_above_the_slots() {
        assert_eq!(super::prefetch(1), 1);
        assert_eq!(super::prefetch(4), 5);
        assert_eq!(super::prefetch(64), 80);
        assert_eq!(super::prefetch(10_000), 12_500);
    }
}
