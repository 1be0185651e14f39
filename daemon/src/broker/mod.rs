//! How ready work reaches workers.
//!
//! With `--broker db` the database is the queue: workers claim ready rows, woken by the API
//! in the same process or (PostgreSQL) by NOTIFY. With `--broker amqp://…` every ready task is
//! published to a durable RabbitMQ queue and workers consume it; the database stays the
//! source of truth, so a task committed but never published is found and published by the
//! [`Dispatcher`].

pub mod amqp;
mod dispatch;

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::store::{Publishable, Store, StoredTask};
pub use amqp::Amqp;
pub use dispatch::Dispatcher;

/// How many freshly submitted batches may wait for the publisher before the API leaves them
/// to the dispatcher.
const SUBMIT_BACKLOG: usize = 1024;

pub struct Broker {
    /// Wakes this process's database-claiming worker.
    pub ready_wake: Arc<Notify>,
    amqp: Option<AmqpParts>,
}

struct AmqpParts {
    client: Arc<Amqp>,
    dispatch_wake: Arc<Notify>,
    submitted: mpsc::Sender<Vec<Publishable>>,
}

impl Broker {
    /// The database is the queue.
    pub fn db() -> Broker {
        Broker {
            ready_wake: Arc::new(Notify::new()),
            amqp: None,
        }
    }

    /// RabbitMQ at `url`, and the dispatcher that publishes for this process (to be run).
    /// Does not wait for the broker: a process starts while RabbitMQ is down and reports
    /// itself not ready until it connects.
    pub fn amqp(url: &str, store: Arc<dyn Store>) -> (Broker, Dispatcher) {
        let client = Arc::new(Amqp::new(url));
        let dispatch_wake = Arc::new(Notify::new());
        let (submitted, rx) = mpsc::channel(SUBMIT_BACKLOG);
        let dispatcher = Dispatcher::new(store, client.clone(), dispatch_wake.clone(), rx);
        let broker = Broker {
            ready_wake: Arc::new(Notify::new()),
            amqp: Some(AmqpParts {
                client,
                dispatch_wake,
                submitted,
            }),
        };
        (broker, dispatcher)
    }

    /// The RabbitMQ client, when that is the broker.
    pub fn amqp_client(&self) -> Option<&Arc<Amqp>> {
        self.amqp.as_ref().map(|parts| &parts.client)
    }

    /// Newly committed tasks: publish them (AMQP) or wake a worker (db).
    pub fn submitted(&self, tasks: &[&StoredTask]) {
        let Some(parts) = &self.amqp else {
            self.ready_wake.notify_one();
            return;
        };
        let ready: Vec<Publishable> = tasks
            .iter()
            .filter(|t| t.status == taskplane_api::TaskStatus::Queued)
            .map(|t| Publishable::from_task(t))
            .collect();
        if ready.is_empty() {
            return;
        }
        // A full backlog means the broker is slow or down; the dispatcher publishes these
        // from the database once it can.
        if parts.submitted.try_send(ready).is_err() {
            tracing::debug!("publish backlog full; leaving tasks to the dispatcher");
        }
    }

    /// Something became ready without a submit (a retry, a due task, a reaped lease).
    pub fn work_ready(&self) {
        match &self.amqp {
            None => self.ready_wake.notify_one(),
            Some(parts) => parts.dispatch_wake.notify_one(),
        }
    }

    /// `Ok` when work can flow; otherwise why not (for `/ready`).
    pub fn check(&self) -> Result<(), String> {
        match &self.amqp {
            None => Ok(()),
            Some(parts) if parts.client.is_connected() => Ok(()),
            Some(parts) => Err(format!(
                "not connected to RabbitMQ at {}",
                parts.client.redacted_url()
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        if self.amqp.is_some() { "amqp" } else { "db" }
    }
}
