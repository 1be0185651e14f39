//! A worker's RabbitMQ consumer: deliveries become task ids with a [`Receipt`], so the worker
//! never sees a lapin type (with `--broker db` it claims from the database and has no
//! receipts). It reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::time::Instant;
use uuid::Uuid;

use crate::broker::Amqp;
use crate::broker::amqp::Deliveries;

/// One delivered message: the task it names (None for a message without a valid task id)
/// and how to answer the broker for it.
pub struct Delivered {
    pub task_id: Option<Uuid>,
    pub receipt: Receipt,
}

impl Delivered {
    fn from_delivery(delivery: Delivery) -> Delivered {
        let task_id = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok());
        Delivered {
            task_id,
            receipt: Receipt(delivery.acker),
        }
    }
}

/// Answers the broker for one delivery, once the database holds what became of it.
pub struct Receipt(Acker);

impl Receipt {
    /// Done with: the broker forgets the message. A failure means the channel is gone; the
    /// broker then redelivers the message and the guarded claim drops it.
    pub async fn ack(&self) {
        if let Err(error) = self.0.ack(BasicAckOptions::default()).await {
            tracing::debug!(%error, "acknowledging a delivery failed");
        }
    }

    /// Not done with: back to the queue for any worker.
    pub async fn requeue(&self) {
        let options = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        if let Err(error) = self.0.nack(options).await {
            tracing::debug!(%error, "returning a delivery to the queue failed");
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct AmqpIntake {
    amqp: Arc<Amqp>,
    queues: Vec<String>,
    prefetch: u16,
    tag: String,
    deliveries: Option<Deliveries>,
    /// A consumer being started, on a task of its own: `next` may be dropped at any await
    /// (the worker's loop selects over it), and a consumer the broker had started but this
    /// side dropped would keep its prefetched deliveries unacked, and unseen, for good.
    starting: Option<tokio::task::JoinHandle<Result<Deliveries, crate::broker::amqp::BrokerError>>>,
    retry_at: Instant,
    backoff: Duration,
}

impl AmqpIntake {
    pub fn new(amqp: Arc<Amqp>, queues: Vec<String>, prefetch: u16, tag: String) -> AmqpIntake {
        AmqpIntake {
            amqp,
            queues,
            prefetch,
            tag,
            deliveries: None,
            starting: None,
            retry_at: Instant::now(),
            backoff: Duration::from_millis(250),
        }
    }

    /// Waits for at least one delivery (connecting and reconnecting as needed), then takes
    /// whatever else is already there, up to `max` in all. Cancel-safe: dropping the future
    /// loses no delivery.
    pub async fn next(&mut self, max: usize) -> Vec<Delivered> {
        loop {
            let Some(deliveries) = self.deliveries.as_mut() else {
                tokio::time::sleep_until(self.retry_at).await;
                let starting = self.starting.get_or_insert_with(|| {
                    let (amqp, queues, prefetch, tag) = (
                        self.amqp.clone(),
                        self.queues.clone(),
                        self.prefetch,
                        self.tag.clone(),
                    );
                    tokio::spawn(async move { amqp.consume(&queues, prefetch, &tag).await })
                });
                let started = starting.await;
                self.starting = None;
                let started = match started {
                    Ok(result) => result,
                    Err(error) => Err(crate::broker::amqp::BrokerError::Stopped(error.to_string())),
                };
                match started {
                    Ok(deliveries) => {
                        tracing::info!(queues = ?self.queues, "consuming from RabbitMQ");
                        self.deliveries = Some(deliveries);
                        self.backoff = Duration::from_millis(250);
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?self.backoff, "cannot consume from RabbitMQ");
                        self.amqp.reset().await;
                        self.retry_at = Instant::now() + self.backoff;
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            match deliveries.next().await {
                Some(Ok(first)) => {
                    let mut batch = vec![Delivered::from_delivery(first)];
                    while batch.len() < max {
                        match deliveries.next().now_or_never() {
                            Some(Some(Ok(delivery))) => {
                                batch.push(Delivered::from_delivery(delivery))
                            }
                            _ => break,
                        }
                    }
                    return batch;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "the RabbitMQ consumer failed; reconnecting");
                    self.lost().await;
                }
                None => {
                    tracing::warn!("the RabbitMQ consumer ended; reconnecting");
                    self.lost().await;
                }
            }
        }
    }

    async fn lost(&mut self) {
        self.deliveries = None;
        self.amqp.reset().await;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}
