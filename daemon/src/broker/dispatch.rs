//! The publisher of a process: sends freshly submitted tasks to RabbitMQ as soon as they are
//! committed, and sweeps the database for ready tasks that no one published (requeued, due,
//! retried, or submitted while the broker was down).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::amqp::Amqp;
use crate::store::{Publishable, Store};
use crate::worker::now_ms;

/// How often the sweep runs when nothing wakes it.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// A task its submitter was to publish is swept up after this long unrecorded.
const SUBMITTER_GRACE_MS: i64 = 5_000;
/// The most tasks one sweep publishes.
const SWEEP_LIMIT: u32 = 1000;
/// The most freshly submitted tasks published in one go.
const BATCH_LIMIT: usize = 2000;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    amqp: Arc<Amqp>,
    wake: Arc<Notify>,
    submitted: mpsc::Receiver<Vec<Publishable>>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        amqp: Arc<Amqp>,
        wake: Arc<Notify>,
        submitted: mpsc::Receiver<Vec<Publishable>>,
    ) -> Dispatcher {
        Dispatcher {
            store,
            amqp,
            wake,
            submitted,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    self.publish(&batch).await;
                }
                _ = self.wake.notified() => self.sweep().await,
                _ = sweep.tick() => {
                    if self.amqp.ensure_connected().await {
                        self.sweep().await;
                    }
                }
            }
        }
    }

    async fn sweep(&self) {
        let before = now_ms() - SUBMITTER_GRACE_MS;
        match self.store.unpublished(before, SWEEP_LIMIT).await {
            Ok(tasks) if tasks.is_empty() => {}
            Ok(tasks) => {
                tracing::debug!(tasks = tasks.len(), "dispatching unpublished tasks");
                self.publish(&tasks).await;
            }
            Err(error) => tracing::warn!(%error, "reading unpublished tasks failed"),
        }
    }

    /// Publishes, then records what the broker confirmed. Whatever fails stays unpublished
    /// in the database and is swept up later.
    async fn publish(&self, tasks: &[Publishable]) {
        match self.amqp.publish(tasks).await {
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
