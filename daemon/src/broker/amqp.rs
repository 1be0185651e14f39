//! RabbitMQ through lapin: one connection per process, re-established with backoff when it
//! drops; durable queues with priorities; persistent messages with pipelined publisher
//! confirms; consumers with manual acks and a prefetch tied to the worker's slots.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::stream::SelectAll;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::store::Publishable;
use crate::util::redact_url;

/// RabbitMQ keeps ten priority levels per queue (more costs memory and CPU in the broker).
const MAX_PRIORITY: u8 = 9;

/// What can go wrong with the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The connection or a channel failed (the broker is down, restarting, or refused us).
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused a published message.
    #[error("RabbitMQ refused to store task {0}")]
    Nacked(Uuid),
    /// Starting a consumer ended without an answer (its task was cancelled or panicked).
    #[error("starting a RabbitMQ consumer failed: {0}")]
    Stopped(String),
}

/// The broker's name for a taskd queue.
pub fn queue_name(queue: &str) -> String {
    format!("taskplane.{queue}")
}

/// Maps a task priority (-1000..=1000, higher first) onto RabbitMQ's 0..=9 levels, with 0
/// in the middle: -4 and below share the lowest level, 5 and above the highest.
pub fn amqp_priority(priority: i32) -> u8 {
    (priority.clamp(-4, 5) + 4) as u8
}

fn queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-max-priority".into(),
        AMQPValue::ShortShortUInt(MAX_PRIORITY),
    );
    arguments
}

struct Publisher {
    channel: Channel,
    declared: HashSet<String>,
}

pub struct Amqp {
    url: String,
    redacted: String,
    connection: Mutex<Option<Arc<Connection>>>,
    publisher: Mutex<Option<Publisher>>,
    connected: AtomicBool,
}

/// The deliveries of every queue a worker consumes, as one stream.
pub type Deliveries = SelectAll<Consumer>;

impl Amqp {
    pub fn new(url: &str) -> Amqp {
        Amqp {
            url: url.to_owned(),
            redacted: redact_url(url),
            connection: Mutex::new(None),
            publisher: Mutex::new(None),
            connected: AtomicBool::new(false),
        }
    }

    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The live connection, connecting if there is none.
    async fn connection(&self) -> Result<Arc<Connection>, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        *slot = None;
        self.connected.store(false, Ordering::Relaxed);
        let properties = ConnectionProperties::default().with_connection_name("taskd".into());
        let connection = Arc::new(Connection::connect(&self.url, properties).await?);
        tracing::info!(broker = %self.redacted, "connected to RabbitMQ");
        self.connected.store(true, Ordering::Relaxed);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets a connection that failed, so the next use reconnects.
    pub async fn reset(&self) {
        let mut slot = self.connection.lock().await;
        if slot.is_some() {
            tracing::warn!(broker = %self.redacted, "lost the RabbitMQ connection; reconnecting");
        }
        *slot = None;
        self.connected.store(false, Ordering::Relaxed);
        *self.publisher.lock().await = None;
    }

    /// Connects if there is no live connection; answers whether there is one now. Keeps
    /// `/ready` true to the broker's state and the connection warm for the next publish.
    pub async fn ensure_connected(&self) -> bool {
        match self.connection().await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, "RabbitMQ is not reachable");
                false
            }
        }
    }

    /// Declares a taskd queue (idempotent: the same arguments everywhere) and answers the
    /// broker's view of it.
    async fn declare(channel: &Channel, queue: &str) -> Result<lapin::Queue, BrokerError> {
        let declared = channel
            .queue_declare(
                queue_name(queue).into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                queue_arguments(),
            )
            .await?;
        Ok(declared)
    }

    /// Publishes persistent messages with confirms, many in flight at once. Answers the
    /// `(id, updated_at)` of the tasks the broker confirmed; on a connection failure the
    /// connection is reset and the error returned (the dispatcher retries from the database).
    pub async fn publish(&self, tasks: &[Publishable]) -> Result<Vec<(Uuid, i64)>, BrokerError> {
        let result = self.publish_inner(tasks).await;
        if let Err(BrokerError::Amqp(_)) = &result {
            self.reset().await;
        }
        result
    }

    async fn publish_inner(&self, tasks: &[Publishable]) -> Result<Vec<(Uuid, i64)>, BrokerError> {
        let mut slot = self.publisher.lock().await;
        let publisher = match slot.as_mut() {
            Some(publisher) if publisher.channel.status().connected() => publisher,
            _ => {
                let channel = self.connection().await?.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                slot.insert(Publisher {
                    channel,
                    declared: HashSet::new(),
                })
            }
        };
        let mut pending = Vec::with_capacity(tasks.len());
        for task in tasks {
            if !publisher.declared.contains(&task.queue) {
                Self::declare(&publisher.channel, &task.queue).await?;
                publisher.declared.insert(task.queue.clone());
            }
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(task.id.to_string().into())
                .with_type(task.kind.clone().into())
                .with_content_type("application/json".into())
                .with_priority(amqp_priority(task.priority));
            let confirm = publisher
                .channel
                .basic_publish(
                    "".into(),
                    queue_name(&task.queue).into(),
                    BasicPublishOptions::default(),
                    task.payload.as_bytes(),
                    properties,
                )
                .await?;
            pending.push((task, confirm));
        }
        let mut confirmed = Vec::with_capacity(pending.len());
        for (task, confirm) in pending {
            let confirmation = confirm.await?;
            if confirmation.is_nack() {
                return Err(BrokerError::Nacked(task.id));
            }
            confirmed.push((task.id, task.updated_at));
        }
        Ok(confirmed)
    }

    /// The broker's message and consumer counts for a queue.
    pub async fn queue_stats(
        &self,
        queue: &str,
    ) -> Result<taskplane_api::BrokerQueue, BrokerError> {
        let channel = self.connection().await?.create_channel().await?;
        let declared = Self::declare(&channel, queue).await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(taskplane_api::BrokerQueue {
            messages: u64::from(declared.message_count()),
            consumers: u64::from(declared.consumer_count()),
        })
    }

    /// Starts consuming `queues` with at most `prefetch` unacknowledged deliveries in all.
    pub async fn consume(
        &self,
        queues: &[String],
        prefetch: u16,
        tag: &str,
    ) -> Result<Deliveries, BrokerError> {
        let channel = self.connection().await?.create_channel().await?;
        let started = async {
            channel
                .basic_qos(prefetch, BasicQosOptions { global: true })
                .await?;
            let mut deliveries = SelectAll::new();
            for queue in queues {
                Self::declare(&channel, queue).await?;
                let consumer = channel
                    .basic_consume(
                        queue_name(queue).into(),
                        format!("{tag}.{queue}").into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                deliveries.push(consumer);
            }
            Ok::<_, BrokerError>(deliveries)
        }
        .await;
        if started.is_err() {
            // A consumer already started on it would hold deliveries nobody reads.
            let _ = channel.close(200, "consumer setup failed".into()).await;
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_spread_over_ten_levels_around_zero() {
        assert_eq!(amqp_priority(0), 4);
        assert_eq!(amqp_priority(1), 5);
        assert_eq!(amqp_priority(-1), 3);
        assert_eq!(amqp_priority(5), 9);
        assert_eq!(amqp_priority(1000), 9);
        assert_eq!(amqp_priority(-1000), 0);
        assert!(amqp_priority(1000) <= MAX_PRIORITY);
    }
}
