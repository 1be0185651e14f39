//! How ready work reaches workers.
//!
//! With `--broker db` the database is the queue: workers claim ready rows, woken by the API
//! in the same process or (PostgreSQL) by NOTIFY. With `--broker amqp://…` every ready task is
//! published to a durable RabbitMQ queue and workers consume it; with `--broker redis://…`
//! every ready task is announced on its queue's Redis stream, which wakes a worker to claim
//! the best ready tasks of that queue from the database. Either way the database stays the
//! source of truth, so a task committed but never published is found and published by the
//! [`Dispatcher`]. Both brokers sit behind [`Transport`]; only this module names lapin or
//! redis.
//!
//! The outbox costs no write per publish: a submitting process stamps its tasks with its
//! publisher mark in the insert (`published_at = -token`) and publishes them; only what it
//! could not publish is handed back to the dispatcher (`published_at = NULL`), and a
//! publisher that stops beating has its ready tasks handed back by any dispatcher.

pub mod amqp;
mod dispatch;
mod gates;
mod intake;
pub mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::domain::validate::NewTask;
use crate::store::{Publishable, Store, StoredTask};
use crate::util::BoxFuture;
pub use amqp::Amqp;
pub use dispatch::Dispatcher;
pub use gates::{GatedTaker, Gates};
pub use intake::{AmqpIntake, Claimant, DbIntake, Intake, Receipt};
pub use redis::Redis;

/// What can go wrong with a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The connection or a channel failed (the broker is down, restarting, or refused us).
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// A Redis command or connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The broker refused a published message.
    #[error("RabbitMQ refused to store task {0}")]
    Nacked(Uuid),
    /// Starting a consumer ended without an answer (its task was cancelled or panicked).
    #[error("starting a consumer failed: {0}")]
    Stopped(String),
    /// The broker took the TCP connection but did not finish the handshake in time.
    #[error("{0} did not answer the connection handshake within {1:?}")]
    ConnectTimeout(&'static str, Duration),
    /// The broker is not one taskd works with (e.g. too old a version).
    #[error("{0}")]
    Refused(String),
    /// A connect failed a moment ago; the next is tried shortly.
    #[error("{0} did not answer a moment ago; retrying")]
    Retrying(&'static str),
}

/// A broker taskd publishes ready tasks to: RabbitMQ ([`Amqp`]) or Redis ([`Redis`]). The
/// [`Dispatcher`] publishes through it, `/ready` asks it, and each worker consumes from it
/// through the [`Intake`] it makes.
pub trait Transport: Send + Sync {
    /// The broker's name for messages: "RabbitMQ", "Redis".
    fn name(&self) -> &'static str;

    /// The broker's URL with its password hidden.
    fn redacted_url(&self) -> &str;

    /// Whether the last use found the broker reachable.
    fn is_connected(&self) -> bool;

    /// Why the broker is not reachable, when known (for `/ready`).
    fn problem(&self) -> Option<String> {
        None
    }

    /// Connects if there is no live connection (or it no longer answers); answers whether
    /// there is one now. Keeps `/ready` true to the broker's state.
    fn ensure_connected(&self) -> BoxFuture<'_, bool>;

    /// Publishes ready tasks; answers the `(id, updated_at)` of those the broker took. On a
    /// connection failure the connection is reset and the error returned (the dispatcher
    /// publishes them again from the database).
    fn publish<'a>(
        &'a self,
        tasks: &'a [Publishable],
    ) -> BoxFuture<'a, Result<Vec<(Uuid, i64)>, BrokerError>>;

    /// The broker's view of a queue: its messages not yet acknowledged and its consumers.
    fn queue_stats<'a>(
        &'a self,
        queue: &'a str,
    ) -> BoxFuture<'a, Result<taskplane_api::BrokerQueue, BrokerError>>;

    /// The broker's housekeeping, which every dispatcher runs now and then (Redis trims its
    /// streams and forgets dead consumers; RabbitMQ needs none).
    fn tend<'a>(&'a self, _store: &'a dyn Store) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// A worker's intake on this broker, with `prefetch` (RabbitMQ: unacknowledged messages;
    /// Redis: stream entries read at once) at most.
    fn intake(
        self: Arc<Self>,
        claimant: Claimant,
        prefetch: u16,
        gates: Arc<Gates>,
    ) -> Box<dyn Intake>;
}

/// The messages that publish `tasks`: consecutive tasks of one queue and priority share
/// one, up to [`amqp::TASKS_PER_MESSAGE`].
fn messages(tasks: &[Publishable]) -> impl Iterator<Item = &[Publishable]> {
    tasks
        .chunk_by(|a, b| {
            a.queue == b.queue && amqp::amqp_priority(a.priority) == amqp::amqp_priority(b.priority)
        })
        .flat_map(|run| run.chunks(amqp::TASKS_PER_MESSAGE))
}

/// Whether tasks of `kind` are leased by remote workers: every kind that is not built in.
/// They are never published to RabbitMQ (a lease request is an HTTP call that can end at any
/// moment: it claims ready rows itself), whatever a process was told with `--kinds`, so
/// taskd's own workers, which claim only what RabbitMQ delivers, never meet one.
pub fn leased(kind: &str) -> bool {
    crate::domain::kinds::builtin(kind).is_none()
}

/// Whether a task of `kind`, keyed or not, is left in the database for the claims that read
/// it there (remote workers' leases, the gated claim) and never published.
fn unpublished(kind: &str, keyed: bool) -> bool {
    keyed || leased(kind)
}

/// How many freshly submitted batches may wait for the publisher before the API leaves them
/// to the dispatcher.
const SUBMIT_BACKLOG: usize = 1024;

pub struct Broker {
    /// Wakes this process's database-claiming worker.
    pub ready_wake: Arc<Notify>,
    /// What this process knows of the queue controls and keyed tasks.
    gates: Arc<Gates>,
    /// Wakes every lease request waiting in this process (`notify_waiters`).
    leases: Arc<Notify>,
    remote: Option<Remote>,
}

/// The parts of a broker other than the database.
struct Remote {
    transport: Arc<dyn Transport>,
    dispatch_wake: Arc<Notify>,
    submitted: mpsc::Sender<Vec<Publishable>>,
    outbox: Arc<Outbox>,
}

/// This process's publisher identity: the tasks it submits carry its mark until the
/// dispatcher is told otherwise.
pub struct Outbox {
    token: i64,
    /// Set once the first heartbeat is in the database; until then submits are left to the
    /// dispatcher (a mark no heartbeat vouches for would look like a dead publisher's).
    registered: AtomicBool,
    /// Tasks it could not publish, to be handed back to the dispatcher (see
    /// [`Store::hand_back`]); kept until the database takes them.
    returns: std::sync::Mutex<Vec<uuid::Uuid>>,
}

impl Outbox {
    fn new() -> Outbox {
        // Positive and below 2^53 (so that a mark reads the same everywhere), from the random
        // low bits of a UUIDv7.
        let token = ((uuid::Uuid::now_v7().as_u128() as i64) & ((1 << 53) - 1)).max(1);
        Outbox {
            token,
            registered: AtomicBool::new(false),
            returns: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn token(&self) -> i64 {
        self.token
    }

    /// The `published_at` of a task this process publishes itself.
    pub fn mark(&self) -> i64 {
        -self.token
    }

    pub fn registered(&self) {
        self.registered.store(true, Ordering::Release);
    }

    fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// Keeps tasks this process could not publish until they are handed back.
    fn give_back(&self, ids: impl IntoIterator<Item = uuid::Uuid>) {
        self.returns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(ids);
    }

    /// Hands back what [`Outbox::give_back`] kept; what the database refuses is kept for
    /// the next call.
    async fn hand_back(&self, store: &dyn Store) {
        let ids = std::mem::take(
            &mut *self
                .returns
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if ids.is_empty() {
            return;
        }
        if let Err(error) = store.hand_back(self.mark(), &ids).await {
            tracing::warn!(%error, tasks = ids.len(), "handing unpublished tasks to the dispatcher failed; retrying");
            self.give_back(ids);
        }
    }
}

impl Broker {
    /// The database is the queue.
    pub fn db() -> Broker {
        Broker {
            ready_wake: Arc::new(Notify::new()),
            gates: Arc::new(Gates::default()),
            leases: Arc::new(Notify::new()),
            remote: None,
        }
    }

    /// The broker `--broker` names: `db`, `amqp://…` or `redis://…` / `rediss://…`, and the
    /// dispatcher to run when it is not the database. Does not wait for the broker: a
    /// process starts while it is down and reports itself not ready until it connects.
    pub fn open(
        url: &str,
        store: Arc<dyn Store>,
    ) -> Result<(Broker, Option<Dispatcher>), BrokerError> {
        if url == "db" {
            return Ok((Broker::db(), None));
        }
        let transport: Arc<dyn Transport> = if redis::is_redis_url(url) {
            Arc::new(Redis::open(url)?)
        } else {
            Arc::new(Amqp::new(url))
        };
        let (broker, dispatcher) = Broker::remote(transport, store);
        Ok((broker, Some(dispatcher)))
    }

    /// A broker other than the database, and the dispatcher that publishes for this process
    /// (to be run).
    fn remote(client: Arc<dyn Transport>, store: Arc<dyn Store>) -> (Broker, Dispatcher) {
        let dispatch_wake = Arc::new(Notify::new());
        let outbox = Arc::new(Outbox::new());
        let (submitted, rx) = mpsc::channel(SUBMIT_BACKLOG);
        let dispatcher = Dispatcher::new(
            store,
            client.clone(),
            dispatch_wake.clone(),
            rx,
            outbox.clone(),
        );
        let broker = Broker {
            ready_wake: Arc::new(Notify::new()),
            gates: Arc::new(Gates::default()),
            leases: Arc::new(Notify::new()),
            remote: Some(Remote {
                transport: client,
                dispatch_wake,
                submitted,
                outbox,
            }),
        };
        (broker, dispatcher)
    }

    /// A worker's intake: claims from the database, or consumes the broker with `prefetch`
    /// deliveries at most.
    pub fn intake(&self, claimant: Claimant, prefetch: u16) -> Box<dyn Intake> {
        match &self.remote {
            None => Box::new(DbIntake::new(
                claimant,
                self.ready_wake.clone(),
                self.gates.clone(),
            )),
            Some(parts) => parts
                .transport
                .clone()
                .intake(claimant, prefetch, self.gates.clone()),
        }
    }

    /// The broker beside the database, if there is one.
    pub fn transport(&self) -> Option<&Arc<dyn Transport>> {
        self.remote.as_ref().map(|parts| &parts.transport)
    }

    /// The outbox mark a submit stamps on its tasks (see [`NewTask::published_at`]): 0 with
    /// the db broker, this process's publisher mark once it is registered, else None (the
    /// dispatcher publishes them).
    ///
    /// [`NewTask::published_at`]: crate::domain::validate::NewTask::published_at
    pub fn submit_mark(&self) -> Option<i64> {
        match &self.remote {
            None => Some(0),
            Some(parts) if parts.outbox.is_registered() => Some(parts.outbox.mark()),
            Some(_) => None,
        }
    }

    /// The `published_at` a task is inserted with: `mark` (from [`Broker::submit_mark`]),
    /// or 0 for a task nobody publishes: a kind remote workers lease, a task with a
    /// concurrency key, or (with a broker) a task of a queue this process knows to be gated
    /// (the gated claim takes those from the database; call [`Broker::know_gates`] first).
    /// A task of a queue gated since is published, and passed over by the claim of its
    /// delivery; one of a queue resumed since waits for the dispatcher's sweep of tasks
    /// nobody published.
    pub fn stamp(&self, task: &NewTask, mark: Option<i64>) -> Option<i64> {
        let gated = self.remote.is_some() && self.gates.holds(&task.queue);
        if gated || unpublished(&task.kind, task.concurrency_key.is_some()) {
            Some(0)
        } else {
            mark
        }
    }

    /// Brings what this process knows of the gated queues up to date (at most a second
    /// old), for [`Broker::stamp`]; nothing to do without a broker.
    pub async fn know_gates(&self, store: &dyn Store) {
        if self.remote.is_some() {
            self.gates.current(store).await;
        }
    }

    /// What tells this process's claims that the gates changed (see [`Gates`]).
    pub fn gates(&self) -> &Arc<Gates> {
        &self.gates
    }

    /// What lease requests wait on: woken whenever work may have become ready.
    pub fn lease_signal(&self) -> &Notify {
        &self.leases
    }

    /// Newly committed tasks, stamped with `mark` (from [`Broker::submit_mark`]): publish
    /// them (a broker) or wake a worker (db); wake the lease requests for a leased kind's.
    pub fn submitted(&self, tasks: &[&StoredTask], mark: Option<i64>) {
        if tasks.iter().any(|t| t.concurrency_key.is_some()) {
            self.gates.touch();
        }
        if tasks
            .iter()
            .any(|t| unpublished(&t.kind, t.concurrency_key.is_some()))
        {
            self.leases.notify_waiters();
            self.ready_wake.notify_one();
        }
        let Some(parts) = &self.remote else {
            self.ready_wake.notify_one();
            return;
        };
        if mark.is_none() {
            parts.dispatch_wake.notify_one();
            return;
        }
        let ready: Vec<Publishable> = tasks
            .iter()
            .filter(|t| {
                t.status == taskplane_api::TaskStatus::Queued
                    && !unpublished(&t.kind, t.concurrency_key.is_some())
                    && !self.gates.holds(&t.queue)
            })
            .map(|t| Publishable::from_task(t))
            .collect();
        if ready.is_empty() {
            return;
        }
        // A full backlog means the broker is slow or down: the tasks go back to the
        // dispatcher, which publishes them from the database once it can.
        if let Err(full) = parts.submitted.try_send(ready) {
            tracing::debug!("publish backlog full; handing tasks to the dispatcher");
            parts
                .outbox
                .give_back(full.into_inner().into_iter().map(|t| t.id));
            parts.dispatch_wake.notify_one();
        }
    }

    /// Passes every wake of `from` (the store's: another process, or its own writer, made
    /// work ready) on to what [`Broker::work_ready`] wakes, for good.
    pub async fn relay(self: Arc<Self>, from: Arc<Notify>) {
        loop {
            from.notified().await;
            self.work_ready();
        }
    }

    /// Something became ready without a submit (a retry, a due task, a reaped lease).
    pub fn work_ready(&self) {
        self.leases.notify_waiters();
        match &self.remote {
            None => self.ready_wake.notify_one(),
            Some(parts) => parts.dispatch_wake.notify_one(),
        }
    }

    /// `Ok` when work can flow; otherwise why not (for `/ready`).
    pub fn check(&self) -> Result<(), String> {
        match &self.remote {
            None => Ok(()),
            Some(parts) if parts.transport.is_connected() => Ok(()),
            Some(parts) => {
                let (name, url) = (parts.transport.name(), parts.transport.redacted_url());
                Err(match parts.transport.problem() {
                    Some(problem) => format!("not connected to {name} at {url}: {problem}"),
                    None => format!("not connected to {name} at {url}"),
                })
            }
        }
    }
}
