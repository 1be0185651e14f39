//! The publisher of a process: sends freshly submitted tasks to the broker (RabbitMQ or
//! Redis) as soon as they are committed, sweeps the database for ready tasks that no one
//! published (requeued, due, retried, handed back, or left by a publisher that died), and
//! runs the broker's own housekeeping.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Outbox, Transport};
use crate::store::{Publishable, Store};
use crate::util::now_ms;

/// How often the sweep runs when nothing wakes it.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often this process's publisher heartbeat is written.
const BEAT_EVERY: Duration = Duration::from_secs(2);
/// A publisher silent this long is taken for dead: its ready tasks are handed to the sweep.
const PUBLISHER_TIMEOUT_MS: i64 = 10_000;
/// How often the dispatcher looks for dead publishers' tasks.
const ORPHANS_EVERY: Duration = Duration::from_secs(5);
/// The most tasks one sweep publishes.
const SWEEP_LIMIT: u32 = 1000;
/// How often the broker's housekeeping runs ([`Transport::tend`]).
const TEND_EVERY: Duration = Duration::from_secs(5);
/// The most freshly submitted tasks published in one go.
const BATCH_LIMIT: usize = 2000;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    broker: Arc<dyn Transport>,
    wake: Arc<Notify>,
    submitted: mpsc::Receiver<Vec<Publishable>>,
    outbox: Arc<Outbox>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        broker: Arc<dyn Transport>,
        wake: Arc<Notify>,
        submitted: mpsc::Receiver<Vec<Publishable>>,
        outbox: Arc<Outbox>,
    ) -> Dispatcher {
        Dispatcher {
            store,
            broker,
            wake,
            submitted,
            outbox,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(BEAT_EVERY);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut orphans = tokio::time::interval(ORPHANS_EVERY);
        orphans.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tend = tokio::time::interval(TEND_EVERY);
        tend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(first) = self.submitted.recv() => {
                    let mut batch = first;
                    while batch.len() < BATCH_LIMIT {
                        match self.submitted.try_recv() {
                            Ok(more) => batch.extend(more),
                            Err(_) => break,
                        }
                    }
                    self.publish_submitted(&batch).await;
                }
                _ = beat.tick() => {
                    match self.store.publisher_beat(self.outbox.token(), now_ms()).await {
                        Ok(()) => self.outbox.registered(),
                        Err(error) => tracing::debug!(%error, "the publisher heartbeat failed"),
                    }
                }
                _ = orphans.tick() => {
                    match self.store.reclaim_orphans(now_ms() - PUBLISHER_TIMEOUT_MS).await {
                        Ok(0) => {}
                        Ok(tasks) => {
                            tracing::info!(tasks, "taking over the ready tasks of a publisher that stopped");
                            self.sweep().await;
                        }
                        Err(error) => tracing::debug!(%error, "looking for orphaned tasks failed"),
                    }
                }
                _ = self.wake.notified() => self.sweep().await,
                _ = tend.tick() => {
                    if self.broker.is_connected() {
                        self.broker.tend(self.store.as_ref()).await;
                    }
                }
                _ = sweep.tick() => {
                    if self.broker.ensure_connected().await {
                        self.sweep().await;
                    } else {
                        // Handed back even while the broker is away, so that another
                        // process's dispatcher can publish them.
                        self.outbox.hand_back(self.store.as_ref()).await;
                    }
                }
            }
        }
    }

    async fn sweep(&self) {
        self.outbox.hand_back(self.store.as_ref()).await;
        match self.store.unpublished(SWEEP_LIMIT).await {
            Ok(tasks) if tasks.is_empty() => {}
            Ok(tasks) => {
                tracing::debug!(tasks = tasks.len(), "dispatching unpublished tasks");
                let (leased, published): (Vec<_>, Vec<_>) = tasks
                    .into_iter()
                    .partition(|t| super::leased(&t.kind) || t.keyed);
                if !leased.is_empty() {
                    // Remote workers lease them, or the gated claim takes them, from the
                    // database: nothing to publish.
                    let versions: Vec<_> = leased.iter().map(|t| (t.id, t.updated_at)).collect();
                    if let Err(error) = self.store.mark_published(&versions, now_ms()).await {
                        tracing::warn!(%error, "marking leased kinds' tasks failed");
                    }
                }
                if !published.is_empty() {
                    self.publish(&published).await;
                }
            }
            Err(error) => tracing::warn!(%error, "reading unpublished tasks failed"),
        }
    }

    /// Publishes what this process submitted (stamped with its mark): nothing is written
    /// when the broker confirms; what it does not is handed back to the sweep.
    async fn publish_submitted(&self, tasks: &[Publishable]) {
        let publish = crate::telemetry::traced("broker.publish", None, self.broker.publish(tasks));
        let failed: Vec<uuid::Uuid> = match publish.await {
            Ok(confirmed) if confirmed.len() == tasks.len() => return,
            Ok(confirmed) => {
                let confirmed: std::collections::HashSet<uuid::Uuid> =
                    confirmed.into_iter().map(|(id, _)| id).collect();
                tasks
                    .iter()
                    .map(|t| t.id)
                    .filter(|id| !confirmed.contains(id))
                    .collect()
            }
            Err(error) => {
                tracing::warn!(%error, tasks = tasks.len(), "publishing failed; the dispatcher will retry");
                tasks.iter().map(|t| t.id).collect()
            }
        };
        self.outbox.give_back(failed);
        self.outbox.hand_back(self.store.as_ref()).await;
    }

    /// Publishes tasks the dispatcher owns, then records what the broker confirmed.
    /// Whatever fails stays unpublished in the database and is swept up later.
    async fn publish(&self, tasks: &[Publishable]) {
        match crate::telemetry::traced("broker.publish", None, self.broker.publish(tasks)).await {
            Ok(confirmed) => {
                if let Err(error) = self.store.mark_published(&confirmed, now_ms()).await {
                    // Harmless: the sweep publishes them again and the duplicate delivery
                    // is dropped by the guarded claim.
                    tracing::warn!(%error, "recording published tasks failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, tasks = tasks.len(), "publishing failed; the dispatcher will retry");
            }
        }
    }
}
