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

use super::{BrokerError, Claimant, Gates, Intake, Transport, messages};
use crate::store::Publishable;
use crate::util::{BoxFuture, redact_url};

/// RabbitMQ keeps ten priority levels per queue (more costs memory and CPU in the broker).
const MAX_PRIORITY: u8 = 9;

/// The most tasks one message names. RabbitMQ's cost is per message (a persistent publish,
/// its confirm, a delivery and an ack), so tasks published together to one queue at one
/// priority share a message; a worker claims them as slots free and acks the message once
/// each has its outcome. Few enough that one worker holds little that another could run,
/// and that a later, higher priority waits behind little.
pub const TASKS_PER_MESSAGE: usize = 16;

/// The `type` of a message that names its tasks in its body (a JSON array of ids). A
/// message of any other type names one task by its `message_id` (as taskd published before
/// messages carried several).
pub const TASKS_MESSAGE_TYPE: &str = "taskplane.tasks";

/// How long a connection attempt may take, handshake included.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
        // Bounded: the lock is held meanwhile, and a broker that accepts TCP but never
        // answers the handshake (still starting, or a black-holed route) would hold every
        // caller, `/ready` included, for as long as the kernel keeps the socket open.
        let connect = Connection::connect(&self.url, properties);
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(connected) => Arc::new(connected?),
            Err(_) => return Err(BrokerError::ConnectTimeout("RabbitMQ", CONNECT_TIMEOUT)),
        };
        tracing::info!(broker = %self.redacted, "connected to RabbitMQ");
        self.connected.store(true, Ordering::Relaxed);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets a connection that failed, so the next use reconnects.
    ///
    /// Takes one lock at a time: a publish holds the publisher's lock while it waits for the
    /// connection's, so holding the connection's while waiting for the publisher's deadlocks.
    pub async fn reset(&self) {
        {
            let mut slot = self.connection.lock().await;
            if slot.is_some() {
                tracing::warn!(broker = %self.redacted, "lost the RabbitMQ connection; reconnecting");
            }
            *slot = None;
            self.connected.store(false, Ordering::Relaxed);
        }
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
        let mut pending = Vec::new();
        for message in messages(tasks) {
            let first = &message[0];
            if !publisher.declared.contains(&first.queue) {
                Self::declare(&publisher.channel, &first.queue).await?;
                publisher.declared.insert(first.queue.clone());
            }
            let ids: Vec<String> = message.iter().map(|task| task.id.to_string()).collect();
            let body = serde_json::to_vec(&ids).expect("a list of strings is JSON");
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(ids[0].clone().into())
                .with_type(TASKS_MESSAGE_TYPE.into())
                .with_content_type("application/json".into())
                .with_priority(amqp_priority(first.priority));
            let confirm = publisher
                .channel
                .basic_publish(
                    "".into(),
                    queue_name(&first.queue).into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?;
            pending.push((message, confirm));
        }
        let mut confirmed = Vec::with_capacity(tasks.len());
        for (message, confirm) in pending {
            let confirmation = confirm.await?;
            if confirmation.is_nack() {
                return Err(BrokerError::Nacked(message[0].id));
            }
            confirmed.extend(message.iter().map(|task| (task.id, task.updated_at)));
        }
        Ok(confirmed)
    }

    /// The broker's message and consumer counts for a queue (a message names up to
    /// [`TASKS_PER_MESSAGE`] tasks).
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

impl Transport for Amqp {
    fn name(&self) -> &'static str {
        "RabbitMQ"
    }

    fn redacted_url(&self) -> &str {
        Amqp::redacted_url(self)
    }

    fn is_connected(&self) -> bool {
        Amqp::is_connected(self)
    }

    fn ensure_connected(&self) -> BoxFuture<'_, bool> {
        Box::pin(Amqp::ensure_connected(self))
    }

    fn publish<'a>(
        &'a self,
        tasks: &'a [Publishable],
    ) -> BoxFuture<'a, Result<Vec<(Uuid, i64)>, BrokerError>> {
        Box::pin(Amqp::publish(self, tasks))
    }

    fn queue_stats<'a>(
        &'a self,
        queue: &'a str,
    ) -> BoxFuture<'a, Result<taskplane_api::BrokerQueue, BrokerError>> {
        Box::pin(Amqp::queue_stats(self, queue))
    }

    fn intake(
        self: Arc<Self>,
        claimant: Claimant,
        prefetch: u16,
        gates: Arc<Gates>,
    ) -> Box<dyn Intake> {
        Box::new(super::AmqpIntake::new(claimant, self, prefetch, gates))
    }
}

/// The tasks a delivered message names: its body's ids, or (a message of another type) the
/// one its `message_id` names; None for a message that names none.
pub fn delivered_ids(
    kind: Option<&str>,
    message_id: Option<&str>,
    body: &[u8],
) -> Option<Vec<Uuid>> {
    if kind == Some(TASKS_MESSAGE_TYPE) {
        let ids: Vec<Uuid> = serde_json::from_slice(body).ok()?;
        return (!ids.is_empty()).then_some(ids);
    }
    Some(vec![Uuid::parse_str(message_id?).ok()?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(queue: &str, priority: i32) -> Publishable {
        Publishable {
            kind: "noop".into(),
            id: Uuid::now_v7(),
            queue: queue.into(),
            priority,
            updated_at: 0,
            keyed: false,
        }
    }

    /// A publish holds the publisher's lock while it waits for the connection's; a reset
    /// that kept the connection's lock while waiting for the publisher's would stop both for
    /// good (and `/ready` with them, since it needs the connection's lock too).
    #[tokio::test]
    async fn a_reset_waiting_for_a_publish_leaves_the_connection_free() {
        let amqp = Arc::new(Amqp::new("amqp://127.0.0.1:1"));
        let publishing = amqp.publisher.lock().await;
        let resetting = tokio::spawn({
            let amqp = amqp.clone();
            async move { amqp.reset().await }
        });
        // One turn of this single-threaded runtime runs the reset until it waits.
        tokio::task::yield_now().await;
        assert!(!resetting.is_finished(), "the reset waits for the publish");
        assert!(
            amqp.connection.try_lock().is_ok(),
            "the reset holds the connection's lock while it waits for the publisher's"
        );
        drop(publishing);
        resetting
            .await
            .expect("the reset ends once the publish lets go");
    }

    #[test]
    fn tasks_of_one_queue_and_priority_share_messages_of_at_most_sixteen() {
        let mut tasks: Vec<Publishable> = (0..40).map(|_| task("default", 0)).collect();
        tasks.push(task("default", 5));
        tasks.push(task("other", 5));
        tasks.push(task("other", 5));
        let sizes: Vec<usize> = messages(&tasks).map(<[Publishable]>::len).collect();
        assert_eq!(sizes, [16, 16, 8, 1, 2]);
        let ids: Vec<Uuid> = messages(&tasks).flatten().map(|t| t.id).collect();
        assert_eq!(
            ids,
            tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
            "each once, in order"
        );
    }

    #[test]
    fn a_message_names_its_tasks_in_its_body_or_one_by_its_id() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let body = serde_json::to_vec(&[a.to_string(), b.to_string()]).expect("json");
        assert_eq!(
            delivered_ids(Some(TASKS_MESSAGE_TYPE), Some("x"), &body),
            Some(vec![a, b])
        );
        let one = a.to_string();
        assert_eq!(
            delivered_ids(Some("noop"), Some(&one), b"{}"),
            Some(vec![a])
        );
        assert_eq!(delivered_ids(Some(TASKS_MESSAGE_TYPE), None, b"[]"), None);
        assert_eq!(
            delivered_ids(Some(TASKS_MESSAGE_TYPE), None, b"nonsense"),
            None
        );
        assert_eq!(delivered_ids(None, Some("not-a-uuid"), b""), None);
    }

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
