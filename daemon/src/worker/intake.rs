//! Where a worker's tasks come from: claimed straight from the database (`--broker db`), or
//! delivered by RabbitMQ and then claimed by id. The RabbitMQ side reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use tokio::time::Instant;

use crate::broker::Amqp;
use crate::broker::amqp::Deliveries;

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
    pub async fn next(&mut self, max: usize) -> Vec<Delivery> {
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
                    let mut batch = vec![first];
                    while batch.len() < max {
                        match deliveries.next().now_or_never() {
                            Some(Some(Ok(delivery))) => batch.push(delivery),
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
