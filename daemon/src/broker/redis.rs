//! Redis as the broker, on streams: one stream per queue (`taskplane:q:<queue>`), read by one
//! consumer group (`taskd`) with `XREADGROUP`.
//!
//! **The stream wakes; the database orders.** An entry names the tasks published together
//! (up to [`TASKS_PER_MESSAGE`], as a RabbitMQ message does) and is a wake-up for that many
//! tasks of its queue: the worker that reads it claims that many of the queue's *best* ready
//! tasks from the database (highest priority first, then oldest), so priorities hold exactly
//! as with `--broker db`, and a duplicate or stale entry can only claim what is ready. Wakes
//! are interchangeable, which is what makes every failure cheap:
//!
//! - An entry is acknowledged (`XACK`) once the outcomes of the tasks claimed on it are
//!   committed; one that claimed nothing is acknowledged at once.
//! - A worker that reads more wakes than it has free slots claims what fits and passes the
//!   rest on (a new entry), so an idle worker wakes for them.
//! - Entries a dead consumer held are not delivered again (no `XAUTOCLAIM`): the tasks it
//!   claimed come back by the database's lease expiry (and are published anew), and the ones
//!   it had not claimed are still ready in the database. Every worker with a free slot looks
//!   in the database at least once a second without a wake, and at once again while its last
//!   look filled every slot, so a lost wake (a dead consumer, a Redis restart without AOF, a
//!   trimmed entry) costs at most a second, never a task.
//! - Streams stay small: every dispatcher trims from each stream what has been delivered
//!   (`XTRIM MINID`: a delivered wake has done its work; its id stays pending until acked),
//!   forgets the consumers of workers that stopped beating, and `XADD` caps a stream nobody
//!   reads at about [`MAX_ENTRIES`] entries.
//! - Nothing waits on Redis on a worker's loop: acknowledgements and passed-on wakes go out
//!   on tasks of their own, and a connection that just failed fails at once for a second
//!   instead of each caller waiting out its own connect.
//!
//! Needs Redis 7.0 or later (`XTRIM MINID`, a group's `lag`); an older server is refused
//! with that reason.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::{
    StreamInfoConsumersReply, StreamInfoGroupsReply, StreamReadOptions, StreamReadReply,
};
use ::redis::{AsyncCommands, AsyncConnectionConfig, RedisError, RedisResult};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::amqp::TASKS_PER_MESSAGE;
use super::intake::{Answer, Reconnect};
use super::{BrokerError, Claimant, GatedTaker, Gates, Intake, Receipt, Transport, messages};
use crate::log_gate::worth_logging;
use crate::store::{ClaimedTask, Publishable, Store};
use crate::util::{BoxFuture, now_ms, redact_url};

/// The consumer group every taskd worker reads each stream in.
pub const GROUP: &str = "taskd";
/// The set of queues that have a stream (what the housekeeping tends).
pub const QUEUES_KEY: &str = "taskplane:queues";
/// The field of an entry that lists its tasks (a JSON array of ids).
const TASKS_FIELD: &str = "tasks";
/// About how many entries a stream keeps when nobody reads it (`XADD … MAXLEN ~`). Entries
/// are wake-ups, so dropping the oldest loses no task: the workers' own looks find them.
pub const MAX_ENTRIES: usize = 100_000;
/// How long one `XREADGROUP` blocks before it is issued again.
const BLOCK: Duration = Duration::from_secs(5);
/// How long a command may take before the connection is taken for dead (a blocking read
/// gets [`BLOCK`] more).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (TLS and AUTH included) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connect, how long callers are refused at once instead of connecting.
const RETRY_CONNECT: Duration = Duration::from_secs(1);
/// The oldest Redis taskd works with.
const MIN_VERSION: (u32, u32) = (7, 0);
/// How long a liveness check (`PING`) may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// A worker with a free slot looks in the database at least this often without a wake.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A consumer idle this long whose worker no longer beats is forgotten, with the entries it
/// held (their tasks are in the database).
const DEAD_AFTER: Duration = Duration::from_secs(60);

/// Whether `--broker` names Redis.
pub fn is_redis_url(url: &str) -> bool {
    url.starts_with("redis://") || url.starts_with("rediss://")
}

/// Checks a Redis URL without connecting; the error names the URL with its password hidden.
pub fn check_url(url: &str) -> Result<(), String> {
    let client = ::redis::Client::open(url).map_err(|error| {
        format!(
            "{}: {}",
            redact_url(url),
            error.detail().unwrap_or("invalid")
        )
    })?;
    // `redis://` alone parses (host defaults); a broker URL names its host.
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, host)| host))
        .unwrap_or("");
    if host.is_empty() || host.starts_with('/') || host.starts_with(':') {
        return Err(format!(
            "{}: name the host: redis://[user:pass@]host:6379[/db]",
            redact_url(url)
        ));
    }
    drop(client);
    Ok(())
}

/// The stream of a taskd queue.
pub fn stream_key(queue: &str) -> String {
    format!("taskplane:q:{queue}")
}

/// The queue of a stream.
fn queue_of(key: &str) -> &str {
    key.strip_prefix("taskplane:q:").unwrap_or(key)
}

/// Whether an error means the connection is no use any more (it is gone, or its server is
/// no longer a primary that can take writes), as opposed to a command Redis refused.
fn lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(
            error.code(),
            Some("READONLY" | "UNBLOCKED" | "MASTERDOWN" | "LOADING")
        )
}

/// `redis_version` from `INFO server`, as (major, minor).
fn server_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))?;
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Refuses a server older than [`MIN_VERSION`].
async fn check_version(conn: &mut MultiplexedConnection) -> Result<(), BrokerError> {
    let info: String = ::redis::cmd("INFO").arg("server").query_async(conn).await?;
    match server_version(&info) {
        Some(found) if found < MIN_VERSION => Err(BrokerError::Refused(format!(
            "Redis {}.{} or later is needed (this server is {}.{})",
            MIN_VERSION.0, MIN_VERSION.1, found.0, found.1
        ))),
        _ => Ok(()),
    }
}

/// Whether Redis answered that a stream or its group does not exist.
fn missing(error: &RedisError) -> bool {
    error.code() == Some("NOGROUP")
        || error
            .detail()
            .is_some_and(|detail| detail.contains("no such key"))
}

/// The smallest stream id after `id` (`ms-seq`).
fn next_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

/// Creates the consumer group of `queue`'s stream (and the stream) if missing, reading from
/// its first entry, and records the queue for the housekeeping.
async fn declare(conn: &mut MultiplexedConnection, queue: &str) -> RedisResult<()> {
    let created: RedisResult<()> = conn
        .xgroup_create_mkstream(stream_key(queue), GROUP, "0")
        .await;
    match created {
        Err(error) if error.code() != Some("BUSYGROUP") => return Err(error),
        _ => {}
    }
    let _: usize = conn.sadd(QUEUES_KEY, queue).await?;
    Ok(())
}

/// Redis through one multiplexed connection per process for publishing, acknowledging and
/// housekeeping (re-established on the next use after it fails), and one per worker for its
/// blocking reads.
pub struct Redis {
    client: ::redis::Client,
    redacted: String,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Queues whose group this connection has made sure of.
    declared: std::sync::Mutex<HashSet<String>>,
    connected: AtomicBool,
    /// Why the last connection attempt failed (logged once per new reason, shown by
    /// `/ready`); None once connected.
    problem: std::sync::Mutex<Option<String>>,
    /// Until when a connect is not tried again after one failed.
    retry_at: std::sync::Mutex<Option<Instant>>,
}

impl Redis {
    /// A client for `url` (checked, not connected: a process starts while Redis is down).
    pub fn open(url: &str) -> Result<Redis, BrokerError> {
        Ok(Redis {
            client: ::redis::Client::open(url)?,
            redacted: redact_url(url),
            connection: tokio::sync::Mutex::new(None),
            declared: std::sync::Mutex::new(HashSet::new()),
            connected: AtomicBool::new(false),
            problem: std::sync::Mutex::new(None),
            retry_at: std::sync::Mutex::new(None),
        })
    }

    /// Records why Redis cannot be used, logging a reason once (not at every retry).
    fn trouble(&self, reason: String) {
        let mut problem = self
            .problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if problem.as_deref() != Some(reason.as_str()) {
            tracing::warn!(broker = %self.redacted, error = %reason, "cannot connect to Redis; retrying");
            *problem = Some(reason);
        }
    }

    /// Forgets the reason Redis could not be used: it answers again.
    fn fine(&self) {
        *self
            .problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// A new connection (checked for the server's version), or why not; a failure is
    /// recorded for `/ready` and logged once.
    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, BrokerError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        let connected = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            check_version(&mut conn).await?;
            Ok::<_, BrokerError>(conn)
        }
        .await;
        match connected {
            Ok(conn) => {
                self.fine();
                Ok(conn)
            }
            Err(error) => {
                self.trouble(error.to_string());
                Err(error)
            }
        }
    }

    /// The shared connection, connecting if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        // A connect that just failed is not tried again by every caller in turn (each would
        // wait out its own timeout, one after the other, behind this lock).
        let now = Instant::now();
        {
            let retry_at = self
                .retry_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if retry_at.is_some_and(|at| now < at) {
                return Err(BrokerError::Retrying("Redis"));
            }
        }
        let connection = match self.connect(RESPONSE_TIMEOUT).await {
            Ok(connection) => connection,
            Err(error) => {
                *self
                    .retry_at
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Some(Instant::now() + RETRY_CONNECT);
                return Err(error);
            }
        };
        tracing::info!(broker = %self.redacted, "connected to Redis");
        self.connected.store(true, Ordering::Relaxed);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets the shared connection after `error` if it means the connection is gone.
    async fn failed(&self, error: &BrokerError) {
        if let BrokerError::Redis(error) = error
            && !lost(error)
        {
            return;
        }
        let mut slot = self.connection.lock().await;
        if slot.take().is_some() {
            tracing::warn!(broker = %self.redacted, %error, "lost the Redis connection; reconnecting");
        }
        self.connected.store(false, Ordering::Relaxed);
        self.declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Passes `result` through, resetting the shared connection first if it failed because
    /// the connection is gone.
    async fn checked<T>(&self, result: Result<T, BrokerError>) -> Result<T, BrokerError> {
        if let Err(error) = &result {
            self.failed(error).await;
        }
        result
    }

    /// Appends entries that wake workers for `tasks`, several tasks of one queue to an entry.
    async fn publish_inner(&self, tasks: &[Publishable]) -> Result<Vec<(Uuid, i64)>, BrokerError> {
        let result = async {
            let conn = &mut self.connection().await?;
            let new: Vec<String> = {
                let declared = self
                    .declared
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut new: Vec<String> = tasks
                    .iter()
                    .filter(|t| !declared.contains(&t.queue))
                    .map(|t| t.queue.clone())
                    .collect();
                new.sort_unstable();
                new.dedup();
                new
            };
            for queue in new {
                declare(conn, &queue).await?;
                self.declared
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(queue);
            }
            Ok(())
        }
        .await;
        self.checked(result).await?;
        let mut pipe = ::redis::pipe();
        for message in messages(tasks) {
            let ids: Vec<Uuid> = message.iter().map(|t| t.id).collect();
            add_entry(&mut pipe, &message[0].queue, &ids);
        }
        self.send(&pipe).await?;
        Ok(tasks.iter().map(|t| (t.id, t.updated_at)).collect())
    }

    /// Sends `pipe` on the shared connection (reset if that fails because it is gone).
    async fn send(&self, pipe: &::redis::Pipeline) -> Result<(), BrokerError> {
        let result = async {
            let () = pipe.query_async(&mut self.connection().await?).await?;
            Ok(())
        }
        .await;
        self.checked(result).await
    }

    /// Acknowledges stream entries, `(stream, id)` each.
    async fn ack(&self, entries: &[(String, String)]) {
        let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, id) in entries {
            by_key.entry(key).or_default().push(id);
        }
        let mut pipe = ::redis::pipe();
        for (key, ids) in &by_key {
            pipe.xack(*key, GROUP, ids).ignore();
        }
        if let Err(error) = self.send(&pipe).await {
            // The entries stay pending until the housekeeping forgets them; their tasks'
            // outcomes are committed.
            tracing::debug!(%error, "acknowledging stream entries failed");
        }
    }

    /// [`Redis::ack`] on a task of its own: a worker's loop never waits on Redis.
    fn ack_later(self: &Arc<Self>, entries: Vec<(String, String)>) {
        let redis = self.clone();
        tokio::spawn(async move { redis.ack(&entries).await });
    }

    /// Wakes workers again for tasks a worker could not take (see [`RedisIntake::take`]).
    async fn pass_on(&self, wakes: &[(String, Vec<Uuid>)]) {
        let mut pipe = ::redis::pipe();
        for (queue, ids) in wakes {
            for chunk in ids.chunks(TASKS_PER_MESSAGE) {
                add_entry(&mut pipe, queue, chunk);
            }
        }
        if let Err(error) = self.send(&pipe).await {
            // The tasks stay ready in the database, where the workers' own looks find them.
            tracing::debug!(%error, "passing wakes on failed");
        }
    }

    /// The housekeeping of one stream: forgets the consumers of workers that stopped (idle
    /// for `dead_after` and no longer beating), then trims what has been delivered. Answers
    /// how many entries it trimmed.
    async fn tend_stream(
        conn: &mut MultiplexedConnection,
        queue: &str,
        live: &HashSet<String>,
        dead_after: Duration,
    ) -> Result<usize, BrokerError> {
        let key = stream_key(queue);
        let groups: StreamInfoGroupsReply = match conn.xinfo_groups(&key).await {
            Ok(groups) => groups,
            Err(error) if missing(&error) => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        let Some(group) = groups.groups.iter().find(|g| g.name == GROUP) else {
            return Ok(0);
        };
        let consumers: StreamInfoConsumersReply = conn.xinfo_consumers(&key, GROUP).await?;
        for consumer in &consumers.consumers {
            if consumer.idle as u128 >= dead_after.as_millis() && !live.contains(&consumer.name) {
                let _: usize = conn.xgroup_delconsumer(&key, GROUP, &consumer.name).await?;
                if consumer.pending > 0 {
                    tracing::info!(
                        queue,
                        consumer = %consumer.name,
                        entries = consumer.pending,
                        "forgot a stopped worker's stream entries (their tasks are in the database)"
                    );
                }
            }
        }
        // Everything up to the last delivered entry has done its work: a delivered wake is
        // in its reader's hands (its id stays pending until it is acknowledged, and an
        // acknowledgement needs no entry). What no one has read yet stays.
        let Some(keep_from) = next_id(&group.last_delivered_id) else {
            return Ok(0);
        };
        let trimmed: usize = ::redis::cmd("XTRIM")
            .arg(&key)
            .arg("MINID")
            .arg(&keep_from)
            .query_async(conn)
            .await?;
        Ok(trimmed)
    }

    /// The housekeeping of every stream ([`Transport::tend`]), forgetting the consumers idle
    /// for `dead_after` whose worker has not beaten in `store` for [`DEAD_AFTER`]. Answers
    /// how many entries it trimmed; does nothing while the database cannot say who is alive.
    pub async fn tend_with(
        &self,
        store: &dyn Store,
        dead_after: Duration,
    ) -> Result<usize, BrokerError> {
        let live: HashSet<String> = match store
            .workers(now_ms() - DEAD_AFTER.as_millis() as i64)
            .await
        {
            Ok(workers) => workers.into_iter().map(|w| w.id).collect(),
            Err(_) => return Ok(0),
        };
        let result = async {
            let conn = &mut self.connection().await?;
            let queues: Vec<String> = conn.smembers(QUEUES_KEY).await?;
            let mut trimmed = 0;
            for queue in queues {
                // One stream's trouble (a key of another type, a refused command) does not
                // stop the others' housekeeping; a lost connection does.
                match Redis::tend_stream(conn, &queue, &live, dead_after).await {
                    Ok(entries) => trimmed += entries,
                    Err(BrokerError::Redis(error)) if !lost(&error) => {
                        tracing::warn!(queue, %error, "tending a Redis stream failed");
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok::<_, BrokerError>(trimmed)
        }
        .await;
        self.checked(result).await
    }
}

/// Appends to `pipe` the entry that wakes workers for `ids` of `queue`.
fn add_entry(pipe: &mut ::redis::Pipeline, queue: &str, ids: &[Uuid]) {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let body = serde_json::to_string(&ids).expect("a list of strings is JSON");
    pipe.cmd("XADD")
        .arg(stream_key(queue))
        .arg("MAXLEN")
        .arg("~")
        .arg(MAX_ENTRIES)
        .arg("*")
        .arg(TASKS_FIELD)
        .arg(body)
        .ignore();
}

impl Transport for Redis {
    fn name(&self) -> &'static str {
        "Redis"
    }

    fn redacted_url(&self) -> &str {
        &self.redacted
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn ensure_connected(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let result = async {
                let conn = &mut self.connection().await?;
                let command = ::redis::cmd("PING");
                let ping = command.query_async::<String>(conn);
                match tokio::time::timeout(PING_TIMEOUT, ping).await {
                    Ok(answer) => Ok(answer?),
                    Err(_) => Err(BrokerError::ConnectTimeout("Redis", PING_TIMEOUT)),
                }
            }
            .await;
            match self.checked(result).await {
                Ok(_) => {
                    self.connected.store(true, Ordering::Relaxed);
                    true
                }
                Err(error) => {
                    tracing::debug!(%error, "Redis is not reachable");
                    if !matches!(error, BrokerError::Retrying(_)) {
                        self.trouble(error.to_string());
                    }
                    self.connected.store(false, Ordering::Relaxed);
                    false
                }
            }
        })
    }

    fn publish<'a>(
        &'a self,
        tasks: &'a [Publishable],
    ) -> BoxFuture<'a, Result<Vec<(Uuid, i64)>, BrokerError>> {
        Box::pin(self.publish_inner(tasks))
    }

    fn queue_stats<'a>(
        &'a self,
        queue: &'a str,
    ) -> BoxFuture<'a, Result<taskplane_api::BrokerQueue, BrokerError>> {
        Box::pin(async move {
            let result = async {
                let conn = &mut self.connection().await?;
                let groups: StreamInfoGroupsReply = match conn.xinfo_groups(stream_key(queue)).await
                {
                    Ok(groups) => groups,
                    Err(error) if missing(&error) => StreamInfoGroupsReply::default(),
                    Err(error) => return Err(error.into()),
                };
                let group = groups.groups.iter().find(|g| g.name == GROUP);
                Ok(taskplane_api::BrokerQueue {
                    // Entries not delivered yet (as RabbitMQ's count is of messages ready).
                    messages: group.map_or(0, |g| g.lag.unwrap_or(0) as u64),
                    consumers: group.map_or(0, |g| g.consumers as u64),
                })
            }
            .await;
            self.checked(result).await
        })
    }

    fn tend<'a>(&'a self, store: &'a dyn Store) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match self.tend_with(store, DEAD_AFTER).await {
                Ok(0) => {}
                Ok(entries) => tracing::debug!(entries, "trimmed acknowledged stream entries"),
                Err(error) => tracing::debug!(%error, "tending the Redis streams failed"),
            }
        })
    }

    fn intake(
        self: Arc<Self>,
        claimant: Claimant,
        prefetch: u16,
        gates: Arc<Gates>,
    ) -> Box<dyn Intake> {
        Box::new(RedisIntake::new(claimant, self, prefetch, gates))
    }
}

/// A stream entry a worker read: wakes for its tasks' queue.
struct Entry {
    key: String,
    id: String,
    /// The tasks it was published for (how many it wakes for).
    tasks: Vec<Uuid>,
}

impl Entry {
    fn queue(&self) -> &str {
        queue_of(&self.key)
    }
}

/// What one read answers: the connection to read on next (None after a failure), and the
/// entries.
type Read = (
    Option<MultiplexedConnection>,
    Result<Vec<Entry>, BrokerError>,
);

/// Reads up to `count` new entries of `keys` for `consumer`, blocking up to [`BLOCK`];
/// makes the groups first on a new connection, and again if Redis lost them.
async fn read(
    redis: Arc<Redis>,
    connection: Option<MultiplexedConnection>,
    keys: Vec<String>,
    consumer: String,
    count: usize,
) -> Read {
    let fresh = connection.is_none();
    let mut conn = match connection {
        Some(conn) => conn,
        None => match redis.connect(RESPONSE_TIMEOUT + BLOCK).await {
            Ok(conn) => conn,
            Err(error) => return (None, Err(error)),
        },
    };
    let declare_all = async |conn: &mut MultiplexedConnection| -> RedisResult<()> {
        for key in &keys {
            declare(conn, queue_of(key)).await?;
        }
        Ok(())
    };
    if fresh && let Err(error) = declare_all(&mut conn).await {
        return (None, Err(error.into()));
    }
    let options = StreamReadOptions::default()
        .group(GROUP, &consumer)
        .count(count.max(1))
        .block(BLOCK.as_millis() as usize);
    let after: Vec<&str> = keys.iter().map(|_| ">").collect();
    let mut answer: RedisResult<Option<StreamReadReply>> =
        conn.xread_options(&keys, &after, &options).await;
    if let Err(error) = &answer
        && missing(error)
    {
        // Redis restarted without its data: the groups are made again, from the start of
        // whatever the publishers added since.
        tracing::info!("the Redis consumer groups are gone; making them again");
        answer = match declare_all(&mut conn).await {
            Ok(()) => conn.xread_options(&keys, &after, &options).await,
            Err(error) => Err(error),
        };
    }
    match answer {
        Ok(reply) => {
            let entries = reply
                .map(|reply| reply.keys)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|stream| {
                    let key = stream.key;
                    stream.ids.into_iter().map(move |entry| Entry {
                        tasks: entry
                            .get::<String>(TASKS_FIELD)
                            .and_then(|body| serde_json::from_str(&body).ok())
                            .unwrap_or_default(),
                        key: key.clone(),
                        id: entry.id,
                    })
                })
                .collect();
            (Some(conn), Ok(entries))
        }
        Err(error) => {
            let keep = (!lost(&error)).then_some(conn);
            (keep, Err(error.into()))
        }
    }
}

/// Acknowledges a round's entries once the outcome of every task claimed on them is
/// committed. A task that must run again needs nothing from Redis: the database hands it
/// back when its lease expires, and the dispatcher publishes it anew.
struct RedisAnswer {
    redis: Arc<Redis>,
    entries: Vec<(String, String)>,
}

impl Answer for RedisAnswer {
    fn answer(&self, _again: bool) -> BoxFuture<'_, ()> {
        Box::pin(self.redis.ack(&self.entries))
    }
}

/// Redis wakes: a blocking `XREADGROUP` on a connection of its own (on a task of its own, so
/// a dropped [`Intake::wait`] loses no entry), and claims of the woken queues' best ready
/// tasks from the database.
pub struct RedisIntake {
    claimant: Claimant,
    redis: Arc<Redis>,
    gates: Arc<Gates>,
    gated: GatedTaker,
    keys: Vec<String>,
    /// The most entries one read takes.
    prefetch: usize,
    /// The worker's free slots when it last took: what the next read asks for.
    free: usize,
    reading: Option<JoinHandle<Read>>,
    connection: Option<MultiplexedConnection>,
    /// Entries read and not used yet.
    held: Vec<Entry>,
    /// The last look filled every slot: look again without a wake.
    momentum: bool,
    next_look: Instant,
    reconnect: Reconnect,
}

impl RedisIntake {
    pub fn new(
        claimant: Claimant,
        redis: Arc<Redis>,
        prefetch: u16,
        gates: Arc<Gates>,
    ) -> RedisIntake {
        let keys = claimant.queues.iter().map(|q| stream_key(q)).collect();
        RedisIntake {
            claimant,
            redis,
            gates,
            gated: GatedTaker::default(),
            keys,
            prefetch: usize::from(prefetch.max(1)),
            free: 1,
            reading: None,
            connection: None,
            held: Vec::new(),
            momentum: false,
            next_look: Instant::now() + LOOK_EVERY,
            reconnect: Reconnect::new(),
        }
    }

    /// Takes in what a finished read answered; true when it brought entries.
    fn finish(&mut self, done: Result<Read, tokio::task::JoinError>) -> bool {
        let (connection, result) = match done {
            Ok(read) => read,
            Err(error) => (None, Err(BrokerError::Stopped(error.to_string()))),
        };
        self.connection = connection;
        match result {
            Ok(entries) => {
                self.reconnect.succeeded();
                let any = !entries.is_empty();
                self.held.extend(entries);
                any
            }
            Err(error) => {
                // Logged once per reason (the publisher's connection meets the same).
                if !matches!(error, BrokerError::Retrying(_)) {
                    self.redis.trouble(format!("reading: {error}"));
                }
                self.reconnect.failed();
                false
            }
        }
    }

    /// Waits for entries (connecting and reconnecting as needed). Cancel-safe: the read
    /// runs on a task of its own and is taken in by the next call.
    async fn receive(&mut self) {
        loop {
            if self.reading.is_none() {
                if self.free == 0 {
                    // No slot to read for: what frees one wakes the worker instead.
                    std::future::pending::<()>().await;
                }
                self.reconnect.due().await;
                self.reading = Some(tokio::spawn(read(
                    self.redis.clone(),
                    self.connection.take(),
                    self.keys.clone(),
                    self.claimant.worker.clone(),
                    // COUNT holds for each stream of the read.
                    (self.free / self.keys.len().max(1)).clamp(1, self.prefetch),
                )));
            }
            let Some(reading) = self.reading.as_mut() else {
                continue;
            };
            let done = reading.await;
            self.reading = None;
            if self.finish(done) {
                return;
            }
        }
    }

    /// Takes in a read that finished meanwhile, without waiting.
    async fn collect(&mut self) {
        if self.reading.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(reading) = self.reading.take()
        {
            let done = reading.await;
            self.finish(done);
        }
    }

    /// Claims for up to `max` slots: as many of the woken queues' best ready tasks as the
    /// held entries wake for, or of every queue when a look is due. Wakes beyond the free
    /// slots are passed on; the entries are acknowledged once the claimed tasks' outcomes
    /// are committed (at once when they claimed nothing).
    async fn claim(&mut self, max: usize) -> Vec<(ClaimedTask, Receipt)> {
        let now = Instant::now();
        let look = self.momentum || now >= self.next_look;
        let mut wakes: BTreeMap<String, usize> = BTreeMap::new();
        for entry in &self.held {
            *wakes.entry(entry.queue().to_owned()).or_default() += entry.tasks.len();
        }
        let woken: usize = wakes.values().sum();
        if woken == 0 && !look {
            self.drop_empty();
            return Vec::new();
        }
        let (queues, limit) = if look {
            (self.claimant.queues.clone(), max)
        } else {
            (wakes.keys().cloned().collect::<Vec<_>>(), max.min(woken))
        };
        let c = &self.claimant;
        let at = now_ms();
        let claimed = match c
            .store
            .claim_of(
                &c.worker,
                &queues,
                Some(&c.kinds),
                u32::try_from(limit).unwrap_or(u32::MAX),
                at,
                c.lease_from(at),
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                if worth_logging("claim", &error) {
                    tracing::warn!(%error, "claiming tasks failed; will retry");
                }
                // The wakes stay held for the next try.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Vec::new();
            }
        };
        if look {
            self.next_look = now + LOOK_EVERY;
        }
        let full = claimed.len() == limit;
        self.momentum = full && limit == max;
        let entries = std::mem::take(&mut self.held);
        // Passed on and acknowledged on tasks of their own: the worker's loop never waits on
        // Redis (it renews the leases).
        if full && woken > claimed.len() {
            let taken: Vec<(Uuid, &str)> =
                claimed.iter().map(|t| (t.id, t.queue.as_str())).collect();
            let wakes = leftovers(&entries, &taken);
            let redis = self.redis.clone();
            tokio::spawn(async move { redis.pass_on(&wakes).await });
        }
        let done: Vec<(String, String)> = entries.into_iter().map(|e| (e.key, e.id)).collect();
        if claimed.is_empty() {
            if !done.is_empty() {
                self.redis.ack_later(done);
            }
            return Vec::new();
        }
        if done.is_empty() {
            return claimed.into_iter().map(|t| (t, Receipt::none())).collect();
        }
        let receipts = Receipt::of_delivery(
            Box::new(RedisAnswer {
                redis: self.redis.clone(),
                entries: done,
            }),
            claimed.len(),
        );
        claimed.into_iter().zip(receipts).collect()
    }

    /// Acknowledges held entries that name no task (nothing to wake for).
    fn drop_empty(&mut self) {
        if self.held.is_empty() {
            return;
        }
        tracing::warn!("dropping Redis stream entries that name no task");
        let done: Vec<(String, String)> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|e| (e.key, e.id))
            .collect();
        self.redis.ack_later(done);
    }
}

/// The wakes a claim did not use, by queue: of each queue's woken tasks, those not claimed,
/// as many as the queue's wakes exceed its claims.
fn leftovers(entries: &[Entry], claimed: &[(Uuid, &str)]) -> Vec<(String, Vec<Uuid>)> {
    let taken: HashSet<Uuid> = claimed.iter().map(|(id, _)| *id).collect();
    let mut by_queue: BTreeMap<&str, (usize, Vec<Uuid>)> = BTreeMap::new();
    for entry in entries {
        let (woken, rest) = by_queue.entry(entry.queue()).or_default();
        *woken += entry.tasks.len();
        rest.extend(entry.tasks.iter().filter(|id| !taken.contains(id)));
    }
    by_queue
        .into_iter()
        .filter_map(|(queue, (woken, mut rest))| {
            let claimed_here = claimed.iter().filter(|(_, q)| *q == queue).count();
            let left = woken.saturating_sub(claimed_here);
            rest.truncate(left);
            (!rest.is_empty()).then(|| (queue.to_owned(), rest))
        })
        .collect()
}

impl Intake for RedisIntake {
    fn wait(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.held.is_empty() || self.momentum {
                return;
            }
            let gates = self.gates.clone();
            tokio::select! {
                _ = gates.touched() => {}
                _ = self.receive() => {}
            }
        })
    }

    fn take(&mut self, max: usize) -> BoxFuture<'_, Vec<(ClaimedTask, Receipt)>> {
        Box::pin(async move {
            self.collect().await;
            let mut tasks = self.claim(max).await;
            // Gated queues and keyed tasks are claimed from the database by the gated
            // claim: their tasks are not announced, and the claim above passes them over.
            if tasks.len() < max {
                self.claimant
                    .add_gated(&mut self.gated, &self.gates, &mut tasks, max)
                    .await;
            }
            // What the next read asks for: the slots still free.
            self.free = max.saturating_sub(tasks.len());
            tasks
        })
    }
}

impl Drop for RedisIntake {
    fn drop(&mut self) {
        // A read left running would take entries nobody claims for (until the housekeeping
        // forgets this consumer).
        if let Some(reading) = self.reading.take() {
            reading.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_leaking_the_password() {
        assert!(is_redis_url("redis://h") && is_redis_url("rediss://h"));
        assert!(!is_redis_url("amqp://h") && !is_redis_url("db"));
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("rediss://:pw@cache.internal").is_ok());
        for bad in [
            "redis://:pw@h:port",
            "redis://:pw@h/x",
            "redis://",
            "redis://:pw@",
        ] {
            let error = check_url(bad).expect_err(bad);
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn servers_older_than_7_0_are_refused() {
        let info = "# Server\r\nredis_version:6.0.16\r\nredis_mode:standalone\r\n";
        assert_eq!(server_version(info), Some((6, 0)));
        assert!(server_version(info) < Some(MIN_VERSION));
        assert_eq!(server_version("redis_version:7.0.15\n"), Some((7, 0)));
        assert!(Some((7, 2)) >= Some(MIN_VERSION));
        assert_eq!(server_version("nothing"), None);
    }

    #[test]
    fn stream_ids_step_to_the_next() {
        assert_eq!(
            next_id("1700000000000-5").as_deref(),
            Some("1700000000000-6")
        );
        assert_eq!(next_id("0-0").as_deref(), Some("0-1"));
        assert_eq!(next_id(&format!("7-{}", u64::MAX)).as_deref(), Some("8-0"));
        assert_eq!(next_id("nonsense"), None);
        assert_eq!(queue_of(&stream_key("mail")), "mail");
    }

    #[test]
    fn unused_wakes_are_passed_on_by_queue() {
        let ids: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
        let other = Uuid::now_v7();
        let entries = vec![
            Entry {
                key: stream_key("a"),
                id: "1-0".into(),
                tasks: ids[..4].to_vec(),
            },
            Entry {
                key: stream_key("b"),
                id: "1-1".into(),
                tasks: ids[4..].to_vec(),
            },
        ];
        // Three of queue a claimed, one of them a task the entries did not name: one of a's
        // four wakes is left, for a named task not claimed; b's two are left whole.
        let taken = [(ids[0], "a"), (ids[1], "a"), (other, "a")];
        let left = leftovers(&entries, &taken);
        assert_eq!(
            left,
            vec![
                ("a".to_owned(), vec![ids[2]]),
                ("b".to_owned(), ids[4..].to_vec())
            ]
        );
        let all: Vec<(Uuid, &str)> = ids.iter().map(|id| (*id, "a")).collect();
        assert_eq!(leftovers(&entries[..1], &all[..4]), vec![]);
    }
}
