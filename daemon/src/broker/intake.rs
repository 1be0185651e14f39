//! How a worker gets its tasks, whatever the broker: an [`Intake`] waits for work and claims
//! it, answering each task with the [`Receipt`] to give once its outcome is stored. With
//! `--broker db` it claims ready rows (woken by submits) and the receipts do nothing; with
//! RabbitMQ it consumes deliveries, claims the tasks they name and acks or requeues each
//! delivery by its receipt (Redis's intake, in `redis.rs`, answers its stream entries the
//! same way). No lapin type leaves this module; the consumer reconnects by itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::broker::amqp::{self, Deliveries};
use crate::broker::{Amqp, BrokerError, GatedTaker, Gates};
use crate::log_gate::worth_logging;
use crate::metrics::Metrics;
use crate::store::{ClaimedTask, Store};
use crate::util::{BoxFuture, now_ms};

/// A worker's source of tasks.
pub trait Intake: Send {
    /// Waits until work may be ready: a delivery arrived, or a submit woke this worker.
    /// Cancel-safe: dropping it loses nothing.
    fn wait(&mut self) -> BoxFuture<'_, ()>;

    /// Claims up to `max` ready tasks for this worker without waiting for more, each with
    /// the receipt to answer once its outcome is stored. Failures are logged and answer
    /// nothing (the worker's loop tries again). Claims in the database, so it is to be
    /// awaited to its end.
    fn take(&mut self, max: usize) -> BoxFuture<'_, Vec<(ClaimedTask, Receipt)>>;
}

/// Whom tasks are claimed for, and where.
pub struct Claimant {
    pub store: Arc<dyn Store>,
    pub worker: String,
    pub queues: Vec<String>,
    /// The kinds it runs (its registry's): a claim from the database leaves a task of
    /// another kind to the remote workers that serve it. (RabbitMQ never delivers one:
    /// `broker::leased`.)
    pub kinds: Vec<String>,
    /// How long a claim holds a task without renewal.
    pub lease: Duration,
    pub metrics: Arc<Metrics>,
}

impl Claimant {
    pub(super) fn lease_from(&self, now: i64) -> i64 {
        now + self.lease.as_millis() as i64
    }

    /// Adds what the gated claim starts (gated queues, keyed tasks) to `tasks`, up to `max`
    /// in all.
    pub(super) async fn add_gated(
        &self,
        taker: &mut GatedTaker,
        gates: &Gates,
        tasks: &mut Vec<(ClaimedTask, Receipt)>,
        max: usize,
    ) {
        let room = u32::try_from(max.saturating_sub(tasks.len())).unwrap_or(u32::MAX);
        let gated = taker
            .take(
                gates,
                self.store.as_ref(),
                &self.worker,
                &self.queues,
                Some(&self.kinds),
                room,
                self.lease,
            )
            .await;
        tasks.extend(gated.into_iter().map(|t| (t, Receipt::none())));
    }
}

/// Answers the broker for one delivered task, once the database holds what became of it;
/// with the db broker there is nobody to answer, and both do nothing. A message that names
/// several tasks is answered when the last of them is: acked, or returned to the queue if
/// any of them must run again (the others, delivered again, are no longer ready and are
/// dropped by the guarded claim).
pub struct Receipt(Option<Arc<Message>>);

/// How a broker is answered for one delivery, once each of its tasks is done with.
pub(super) trait Answer: Send + Sync {
    /// Every task is done with; `again` when one of them must run again.
    fn answer(&self, again: bool) -> BoxFuture<'_, ()>;
}

/// One delivered message and its tasks not answered yet.
struct Message {
    answer: Box<dyn Answer>,
    open: AtomicUsize,
    again: AtomicBool,
}

/// A RabbitMQ delivery: acked, or returned to its queue.
struct AmqpAnswer(Acker);

impl Answer for AmqpAnswer {
    fn answer(&self, again: bool) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if again {
                let options = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                if let Err(error) = self.0.nack(options).await {
                    tracing::debug!(%error, "returning a delivery to the queue failed");
                }
            } else if let Err(error) = self.0.ack(BasicAckOptions::default()).await {
                tracing::debug!(%error, "acknowledging a delivery failed");
            }
        })
    }
}

impl Receipt {
    /// The receipt of a task claimed from the database.
    pub fn none() -> Receipt {
        Receipt(None)
    }

    /// A receipt for each of `tasks` tasks of one delivery, answered through `answer`.
    pub(super) fn of_delivery(answer: Box<dyn Answer>, tasks: usize) -> Vec<Receipt> {
        let message = Arc::new(Message {
            answer,
            open: AtomicUsize::new(tasks),
            again: AtomicBool::new(false),
        });
        (0..tasks).map(|_| Receipt(Some(message.clone()))).collect()
    }

    /// A receipt for each of `tasks` tasks of one delivered RabbitMQ message.
    fn of_message(acker: Acker, tasks: usize) -> Vec<Receipt> {
        Receipt::of_delivery(Box::new(AmqpAnswer(acker)), tasks)
    }

    /// Done with: the broker forgets the message once its every task is done with. A
    /// failure means the channel is gone; the broker then redelivers the message and the
    /// guarded claim drops what is no longer ready.
    pub async fn ack(self) {
        self.answer(false).await;
    }

    /// Not done with: the message goes back to the queue for any worker (once its other
    /// tasks are answered too).
    pub async fn requeue(self) {
        self.answer(true).await;
    }

    async fn answer(self, again: bool) {
        let Some(message) = self.0 else {
            return;
        };
        if again {
            message.again.store(true, Ordering::Release);
        }
        if message.open.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        message
            .answer
            .answer(message.again.load(Ordering::Acquire))
            .await;
    }
}

/// The database is the queue: claims ready rows in priority order.
pub struct DbIntake {
    claimant: Claimant,
    wake: Arc<Notify>,
    gates: Arc<Gates>,
    gated: GatedTaker,
}

impl DbIntake {
    pub fn new(claimant: Claimant, wake: Arc<Notify>, gates: Arc<Gates>) -> DbIntake {
        DbIntake {
            claimant,
            wake,
            gates,
            gated: GatedTaker::default(),
        }
    }
}

impl Intake for DbIntake {
    fn wait(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.gates.touched() => {}
            }
        })
    }

    fn take(&mut self, max: usize) -> BoxFuture<'_, Vec<(ClaimedTask, Receipt)>> {
        Box::pin(async move {
            let c = &self.claimant;
            let now = now_ms();
            let limit = u32::try_from(max).unwrap_or(u32::MAX);
            let mut tasks: Vec<(ClaimedTask, Receipt)> = match c
                .store
                .claim_of(
                    &c.worker,
                    &c.queues,
                    Some(&c.kinds),
                    limit,
                    now,
                    c.lease_from(now),
                )
                .await
            {
                Ok(tasks) => tasks.into_iter().map(|t| (t, Receipt::none())).collect(),
                Err(error) => {
                    if worth_logging("claim", &error) {
                        tracing::warn!(%error, "claiming tasks failed; will retry");
                    }
                    return Vec::new();
                }
            };
            if tasks.len() < max {
                c.add_gated(&mut self.gated, &self.gates, &mut tasks, max)
                    .await;
            }
            tasks
        })
    }
}

/// When a consumer may start again after failures: at once at first, then after a wait that
/// doubles with each failure in a row, from 250 ms up to 10 s.
pub(super) struct Reconnect {
    at: Instant,
    wait: Duration,
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(10);

    pub(super) fn new() -> Reconnect {
        Reconnect {
            at: Instant::now(),
            wait: Reconnect::FIRST,
        }
    }

    /// Waits until the next attempt may start (cancel-safe).
    pub(super) async fn due(&self) {
        tokio::time::sleep_until(self.at).await;
    }

    /// The next wait, for the log.
    pub(super) fn wait(&self) -> Duration {
        self.wait
    }

    /// An attempt failed: the next waits, and the one after it twice as long.
    pub(super) fn failed(&mut self) {
        self.at = Instant::now() + self.wait;
        self.wait = (self.wait * 2).min(Reconnect::MAX);
    }

    /// An attempt succeeded: the next failure waits the shortest time again.
    pub(super) fn succeeded(&mut self) {
        self.wait = Reconnect::FIRST;
    }
}

/// RabbitMQ delivers: a consumer on the worker's queues, whose deliveries are claimed by id.
pub struct AmqpIntake {
    claimant: Claimant,
    amqp: Arc<Amqp>,
    gates: Arc<Gates>,
    gated: GatedTaker,
    prefetch: u16,
    deliveries: Option<Deliveries>,
    /// Delivered tasks not claimed yet, oldest first: what [`Intake::wait`] received, and
    /// what a message named beyond the free slots.
    waiting: VecDeque<(Uuid, Receipt)>,
    /// Delivered messages that name no task, to be acked away by the next [`Intake::take`].
    invalid: Vec<Receipt>,
    /// A consumer being started, on a task of its own: `wait` may be dropped at any await
    /// (the worker's loop selects over it), and a consumer the broker had started but this
    /// side dropped would keep its prefetched deliveries unacked, and unseen, for good.
    starting: Option<tokio::task::JoinHandle<Result<Deliveries, BrokerError>>>,
    reconnect: Reconnect,
}

impl AmqpIntake {
    /// Consumes the claimant's queues with `prefetch` unacknowledged deliveries at most.
    pub fn new(
        claimant: Claimant,
        amqp: Arc<Amqp>,
        prefetch: u16,
        gates: Arc<Gates>,
    ) -> AmqpIntake {
        AmqpIntake {
            claimant,
            amqp,
            gates,
            gated: GatedTaker::default(),
            prefetch,
            deliveries: None,
            waiting: VecDeque::new(),
            invalid: Vec::new(),
            starting: None,
            reconnect: Reconnect::new(),
        }
    }

    /// Keeps a delivered message's tasks for the next [`Intake::take`] (without waiting, so
    /// that a dropped [`Intake::wait`] loses none).
    fn accept(&mut self, delivery: Delivery) {
        let ids = amqp::delivered_ids(
            delivery
                .properties
                .kind()
                .as_ref()
                .map(|kind| kind.as_str()),
            delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str()),
            &delivery.data,
        );
        match ids {
            Some(ids) => {
                let receipts = Receipt::of_message(delivery.acker, ids.len());
                self.waiting.extend(ids.into_iter().zip(receipts));
            }
            None => {
                tracing::warn!("dropping a RabbitMQ message that names no task");
                self.invalid.extend(Receipt::of_message(delivery.acker, 1));
            }
        }
    }

    /// Waits for a delivery (connecting and reconnecting as needed) and keeps its tasks for
    /// the next [`Intake::take`]. Cancel-safe: dropping the future loses no delivery.
    async fn receive(&mut self) {
        if !self.waiting.is_empty() || !self.invalid.is_empty() {
            return;
        }
        loop {
            let Some(deliveries) = self.deliveries.as_mut() else {
                self.reconnect.due().await;
                let starting = self.starting.get_or_insert_with(|| {
                    let (amqp, queues, prefetch, tag) = (
                        self.amqp.clone(),
                        self.claimant.queues.clone(),
                        self.prefetch,
                        self.claimant.worker.clone(),
                    );
                    tokio::spawn(async move { amqp.consume(&queues, prefetch, &tag).await })
                });
                let started = starting.await;
                self.starting = None;
                let started = match started {
                    Ok(result) => result,
                    Err(error) => Err(BrokerError::Stopped(error.to_string())),
                };
                match started {
                    Ok(deliveries) => {
                        tracing::info!(queues = %self.claimant.queues.join(","), "consuming from RabbitMQ");
                        self.deliveries = Some(deliveries);
                        self.reconnect.succeeded();
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = %humantime::format_duration(self.reconnect.wait()), "cannot consume from RabbitMQ");
                        self.back_off().await;
                    }
                }
                continue;
            };
            match deliveries.next().await {
                Some(Ok(delivery)) => {
                    self.accept(delivery);
                    return;
                }
                Some(Err(error)) => self.lost(Some(error)).await,
                None => self.lost(None).await,
            }
        }
    }

    /// The tasks kept by [`AmqpIntake::receive`] and whatever else is already here, up to
    /// `max` in all (oldest first), without waiting; the rest stay for the next take.
    async fn received(&mut self, max: usize) -> Vec<(Uuid, Receipt)> {
        for receipt in std::mem::take(&mut self.invalid) {
            receipt.ack().await;
        }
        while self.waiting.len() < max {
            let Some(deliveries) = self.deliveries.as_mut() else {
                break;
            };
            match deliveries.next().now_or_never() {
                Some(Some(Ok(delivery))) => self.accept(delivery),
                Some(Some(Err(error))) => self.lost(Some(error)).await,
                Some(None) => self.lost(None).await,
                None => break,
            }
        }
        let take = max.min(self.waiting.len());
        self.waiting.drain(..take).collect()
    }

    /// Claims the tasks of these deliveries. Deliveries of tasks that are not ready (a
    /// duplicate, a cancelled task) are acknowledged and dropped; if the database cannot be
    /// reached they go back to the queue.
    async fn claim(&self, batch: Vec<(Uuid, Receipt)>) -> Vec<(ClaimedTask, Receipt)> {
        let c = &self.claimant;
        let mut by_id: HashMap<Uuid, Receipt> = HashMap::with_capacity(batch.len());
        for (id, receipt) in batch {
            if let Some(duplicate) = by_id.insert(id, receipt) {
                c.metrics.delivery_dropped();
                duplicate.ack().await;
            }
        }
        if by_id.is_empty() {
            return Vec::new();
        }
        let ids: Vec<Uuid> = by_id.keys().copied().collect();
        let now = now_ms();
        match c
            .store
            .claim_ids(&c.worker, &ids, now, c.lease_from(now))
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
                    c.metrics.delivery_dropped();
                    receipt.ack().await;
                }
                out
            }
            Err(error) => {
                tracing::warn!(%error, "claiming delivered tasks failed; returning them to the queue");
                // Not at once: the database is likely down, and an instant redelivery would
                // spin.
                tokio::time::sleep(Duration::from_millis(500)).await;
                for receipt in by_id.into_values() {
                    receipt.requeue().await;
                }
                Vec::new()
            }
        }
    }

    /// The consumer failed (with `error`) or ended: it is dropped, and a new one is started
    /// after the backoff.
    async fn lost(&mut self, error: Option<lapin::Error>) {
        match error {
            Some(error) => tracing::warn!(%error, "the RabbitMQ consumer failed; reconnecting"),
            None => tracing::warn!("the RabbitMQ consumer ended; reconnecting"),
        }
        self.deliveries = None;
        // Their messages were on the lost channel: the broker delivers them again.
        self.waiting.clear();
        self.invalid.clear();
        self.back_off().await;
    }

    /// Resets the connection and waits longer before the next consumer ([`Reconnect`]).
    async fn back_off(&mut self) {
        self.amqp.reset().await;
        self.reconnect.failed();
    }
}

impl Intake for AmqpIntake {
    fn wait(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.receive())
    }

    fn take(&mut self, max: usize) -> BoxFuture<'_, Vec<(ClaimedTask, Receipt)>> {
        Box::pin(async move {
            let batch = self.received(max).await;
            let mut tasks = self.claim(batch).await;
            // Gated queues and keyed tasks are claimed from the database: RabbitMQ never
            // carries a keyed task, and a gated queue's deliveries are passed over.
            if tasks.len() < max {
                self.claimant
                    .add_gated(&mut self.gated, &self.gates, &mut tasks, max)
                    .await;
            }
            tasks
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validate::{self, Kinds};
    use crate::store::SqliteStore;
    use taskplane_api::SubmitTask;

    #[tokio::test]
    async fn the_db_intake_claims_up_to_its_max_and_wakes_on_a_submit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("intake.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        store.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(store);
        let kinds = Kinds::new(false, false, vec!["resize".into()]);
        let now = now_ms();
        // A task of a kind remote workers serve stays for them.
        let tasks = ["noop", "resize", "noop", "noop"]
            .into_iter()
            .map(|kind| {
                let request = SubmitTask {
                    kind: kind.into(),
                    ..Default::default()
                };
                validate::submit(request, &kinds, Uuid::now_v7(), now).expect("valid")
            })
            .collect();
        store.insert(tasks).await.expect("insert");
        let wake = Arc::new(Notify::new());
        let mut intake = DbIntake::new(
            Claimant {
                store: store.clone(),
                worker: "w".into(),
                queues: vec!["default".into()],
                kinds: vec!["noop".into()],
                lease: Duration::from_secs(30),
                metrics: Arc::new(Metrics::default()),
            },
            wake.clone(),
            Arc::new(Gates::default()),
        );
        assert_eq!(intake.take(2).await.len(), 2);
        let rest = intake.take(5).await;
        assert_eq!(rest.len(), 1, "what is left");
        assert_eq!(rest[0].0.attempt, 1);
        assert!(intake.take(5).await.is_empty());

        let mut waiting = intake.wait();
        assert!((&mut waiting).now_or_never().is_none(), "nothing woke it");
        wake.notify_one();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a submit's wake-up ends the wait");
    }
}
