//! The [`Store`] both backends share: one [`SqlStore`] over a [`Dialect`]. The statements (in
//! [`sql`]) and the binding code are the same for SQLite and PostgreSQL pools; a dialect
//! supplies only what differs: migrations, the claim, row locks, notifications and upkeep.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::TryStreamExt;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type,
};
use taskplane_api::TaskStatus;
use tokio::sync::Notify;
use uuid::Uuid;

use super::controls::write_audit;
use super::decode::TaskRow as _;
use super::{
    AuditEntry, BoxFuture, CancelOutcome, ClaimedTask, EventRow, FinishedFilter, LeaseState,
    ListFilter, MinuteCount, NewLogLine, Publishable, QueueCount, Result, RetryOutcome, Store,
    StoreError, StoredLogLine, StoredTask, WorkerRow, WriteHealth, decode, sql,
};
use crate::domain::labels::Selector;
use crate::domain::lifecycle::Settlement;
use crate::domain::validate::NewTask;

/// What a backend's SQL dialect supplies to [`SqlStore`]; everything else is shared.
pub trait Dialect: Sized + Send + Sync + 'static {
    type Db: Database;

    /// What the dialect keeps beside the pools for its hot writes: SQLite's writer rounds
    /// ([`super::sqlite`]); nothing on PostgreSQL, whose connections write side by side.
    type Writer: Send + Sync + 'static;

    /// How statements that change many task rows lock them (see [`sql::Locks`]).
    const LOCKS: sql::Locks;

    /// The statement that tells other processes' `--broker db` workers that work is ready,
    /// delivered when the submit commits (None: they find it by polling).
    const NOTIFY_READY: Option<&'static str>;

    /// The statement that serializes gated claims and queue changes across processes, at
    /// the start of their transactions (None: one write connection serializes them).
    const GATE_LOCK: Option<&'static str>;

    /// Whether a page of one status names the index that holds it (`INDEXED BY`): SQLite
    /// plans without statistics and would otherwise walk every id (see [`sql::list`]).
    const NAMES_LIST_INDEX: bool;

    /// Whether [`Dialect::Writer`] gathers the hot writes into rounds itself (see
    /// [`Store::groups_writes`]).
    const WRITES_IN_ROUNDS: bool;

    /// How many rows a statement changed.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Applies the schema's migrations not yet applied, answering their versions.
    fn migrate(store: &SqlStore<Self>) -> impl Future<Output = Result<Vec<i64>>> + Send;

    /// Inserts tasks (see [`Store::insert`]).
    fn insert(
        store: &SqlStore<Self>,
        tasks: Vec<NewTask>,
    ) -> impl Future<Output = Result<Vec<(StoredTask, bool)>>> + Send + '_;

    /// Settles attempts (see [`Store::settle_many`]).
    fn settle_many<'a>(
        store: &'a SqlStore<Self>,
        worker: &'a str,
        items: &'a [(Uuid, Settlement)],
        now: i64,
    ) -> impl Future<Output = Result<Vec<bool>>> + Send + 'a;

    /// Claims up to `limit` ready tasks of `queues`, in priority order.
    fn claim<'a>(
        store: &'a SqlStore<Self>,
        worker: &'a str,
        queues: &'a [String],
        kinds: Option<&'a [String]>,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> impl Future<Output = Result<Vec<ClaimedTask>>> + Send + 'a;

    /// Claims these tasks (deliveries from a broker) where they are still queued.
    fn claim_ids<'a>(
        store: &'a SqlStore<Self>,
        worker: &'a str,
        ids: &'a [Uuid],
        kinds: Option<&'a [String]>,
        now: i64,
        lease_until: i64,
    ) -> impl Future<Output = Result<Vec<ClaimedTask>>> + Send + 'a;

    /// Locks these task rows in id order, for a transaction that then changes them in
    /// several statements.
    fn lock_rows<'a, 't>(
        tx: &'a mut Transaction<'t, Self::Db>,
        ids: &'a [String],
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Wakes `wake` whenever another process notifies that work is ready; runs for good.
    fn listen_ready(store: &SqlStore<Self>, wake: Arc<Notify>) -> BoxFuture<'static, ()>;

    /// Keeps the database's plans good (vacuum, statistics), answering what it tended.
    fn tend(store: &SqlStore<Self>) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Gives space freed by retention deletes back, where the database does not by itself.
    fn reclaim(store: &SqlStore<Self>) -> impl Future<Output = Result<()>> + Send;
}

/// A store on a pool of connections to one database: `write` takes the writes (one
/// connection on SQLite), `read` the reads (the same pool on PostgreSQL).
pub struct SqlStore<D: Dialect> {
    pub(super) write: Pool<D::Db>,
    pub(super) read: Pool<D::Db>,
    pub(super) health: Arc<WriteHealth>,
    pub(super) writer: D::Writer,
}

impl<D> Store for SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    for<'q> String: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> i32: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> bool: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<String>: Encode<'q, D::Db> + Decode<'q, D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db>,
    for<'q> Option<i64>: Encode<'q, D::Db> + Decode<'q, D::Db>,
    for<'a> &'a str: ColumnIndex<<D::Db as Database>::Row>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    fn migrate(&self) -> BoxFuture<'_, Result<Vec<i64>>> {
        Box::pin(D::migrate(self))
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.read).await?;
            // Reads may work while writes are refused (a full disk, a read-only
            // file). A recent refusal answers; after an older one, only a write
            // can tell whether it is over.
            if let Some(reason) = self.health.refusal() {
                return Err(StoreError::WritesRefused(reason));
            }
            if self.health.refused() {
                let probe = self
                    .health
                    .track(async {
                        sqlx::query(sql::PROBE_WRITE).execute(&self.write).await?;
                        Ok(())
                    })
                    .await;
                match probe {
                    Err(error) if error.is_unavailable() => return Err(error),
                    // Refused for its own reasons (say, a role that may not write
                    // that table): the database took the write, so writes work.
                    Err(error) => {
                        tracing::debug!(%error, "the write probe failed; not a refusal");
                        self.health.accepted();
                    }
                    Ok(()) => {}
                }
            }
            Ok(())
        })
    }

    fn insert(&self, tasks: Vec<NewTask>) -> BoxFuture<'_, Result<Vec<(StoredTask, bool)>>> {
        Box::pin(self.health.track(D::insert(self, tasks)))
    }

    fn get(&self, id: Uuid) -> BoxFuture<'_, Result<Option<StoredTask>>> {
        Box::pin(async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql::select_by_id()))
                .bind(id.to_string())
                .fetch_optional(&self.read)
                .await?;
            row.as_ref().map(decode::task).transpose()
        })
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<StoredTask>>> {
        Box::pin(async move {
            // Row by row, so a page of large tasks stops at the byte budget instead
            // of being read whole first; in statements of growing size (32, 64, …),
            // so the database does not send (and sqlx drain) rows past the budget.
            let mut tasks: Vec<StoredTask> = Vec::new();
            let mut bytes = 0;
            let mut before = filter.before;
            let mut chunk: u32 = 32;
            let driver = self.label_driver(&filter.labels).await?;
            'pages: while tasks.len() < filter.limit as usize {
                let want = chunk.min(filter.limit - tasks.len() as u32);
                // The statement names only the filters given; the first page may have no
                // `before`, the next ones do.
                let statement = sql::list(&filter, before.is_some(), driver, D::NAMES_LIST_INDEX);
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                if let Some(queue) = filter.queue.as_deref() {
                    query = query.bind(queue);
                }
                if let Some(kind) = filter.kind.as_deref() {
                    query = query.bind(kind);
                }
                if let Some(before) = before {
                    query = query.bind(before.to_string());
                }
                for selector in &filter.labels {
                    query = query.bind(selector.key());
                    if let Some(value) = selector.value() {
                        query = query.bind(value);
                    }
                }
                let mut rows = query.bind(i64::from(want)).fetch(&self.read);
                let mut got = 0;
                while let Some(row) = rows.try_next().await? {
                    let task = decode::task(&row)?;
                    got += 1;
                    bytes += task.size();
                    before = Some(task.id);
                    tasks.push(task);
                    if bytes >= filter.max_bytes {
                        break 'pages;
                    }
                }
                if got < want {
                    break;
                }
                chunk = chunk.saturating_mul(2);
            }
            Ok(tasks)
        })
    }

    fn cancel_by<'a>(
        &'a self,
        id: Uuid,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<CancelOutcome>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(sql::cancel()))
                .bind(id.to_string())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let (Some(_), Some(audit)) = (&row, audit) {
                write_audit(&mut *tx, audit, now).await?;
            }
            tx.commit().await?;
            if let Some(row) = row {
                let task = decode::task(&row)?;
                return Ok(if task.status == TaskStatus::Running {
                    CancelOutcome::Requested(task)
                } else {
                    CancelOutcome::Cancelled(task)
                });
            }
            Ok(match self.get(id).await? {
                Some(task) => CancelOutcome::Finished(task),
                None => CancelOutcome::NotFound,
            })
        }))
    }

    fn retry_by<'a>(
        &'a self,
        id: Uuid,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<RetryOutcome>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(sql::retry()))
                .bind(now)
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if let (Some(_), Some(audit)) = (&row, audit) {
                write_audit(&mut *tx, audit, now).await?;
            }
            tx.commit().await?;
            if let Some(row) = row {
                return Ok(RetryOutcome::Requeued(decode::task(&row)?));
            }
            Ok(match self.get(id).await? {
                Some(task) => RetryOutcome::NotRetryable(task),
                None => RetryOutcome::NotFound,
            })
        }))
    }

    fn retry_failed<'a>(
        &'a self,
        kind: Option<String>,
        queue: Option<String>,
        skip_privileged: bool,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            let done = sqlx::query(sqlx::AssertSqlSafe(sql::retry_failed(D::LOCKS)))
                .bind(now)
                .bind(kind)
                .bind(queue)
                .bind(skip_privileged.then(crate::domain::kinds::admin_list))
                .execute(&mut *tx)
                .await?;
            if let Some(audit) = audit.filter(|_| D::rows_affected(&done) > 0) {
                write_audit(&mut *tx, audit, now).await?;
            }
            tx.commit().await?;
            Ok(D::rows_affected(&done))
        }))
    }

    fn delete_finished_by<'a>(
        &'a self,
        filter: FinishedFilter,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let total = self
                .health
                .track(async {
                    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
                    let statuses = statuses.join(",");
                    let mut total = 0;
                    let mut audit = audit;
                    loop {
                        let mut tx = self.write.begin().await?;
                        let done = sqlx::query(sqlx::AssertSqlSafe(sql::delete_finished(D::LOCKS)))
                            .bind(&statuses)
                            .bind(filter.finished_before)
                            .bind(&filter.kind)
                            .bind(&filter.queue)
                            .bind(i64::from(filter.steps))
                            .execute(&mut *tx)
                            .await?;
                        if D::rows_affected(&done) > 0
                            && let Some(entry) = audit.take()
                        {
                            write_audit(&mut *tx, entry, crate::util::now_ms()).await?;
                        }
                        tx.commit().await?;
                        total += D::rows_affected(&done);
                        if D::rows_affected(&done) < 1000 {
                            break;
                        }
                    }
                    // A workflow goes once the last of its steps has gone.
                    if total > 0 {
                        sqlx::query(sql::DELETE_EMPTY_WORKFLOWS)
                            .bind(filter.finished_before)
                            .execute(&self.write)
                            .await?;
                    }
                    Ok(total)
                })
                .await?;
            // The deletes are committed whatever happens here: a reclaim that fails
            // (the file busy, the disk full) is retried after the next deletes.
            if total > 0
                && let Err(error) = D::reclaim(self).await
            {
                tracing::warn!(%error, "returning free pages to the file system failed");
            }
            Ok(total)
        })
    }

    fn claim_of<'a>(
        &'a self,
        worker: &'a str,
        queues: &'a [String],
        kinds: Option<&'a [String]>,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Vec<ClaimedTask>>> {
        Box::pin(self.health.track(D::claim(
            self,
            worker,
            queues,
            kinds,
            limit,
            now,
            lease_until,
        )))
    }

    fn claim_ids_of<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [Uuid],
        kinds: Option<&'a [String]>,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Vec<ClaimedTask>>> {
        Box::pin(
            self.health
                .track(D::claim_ids(self, worker, ids, kinds, now, lease_until)),
        )
    }

    fn settle_many<'a>(
        &'a self,
        worker: &'a str,
        items: &'a [(Uuid, Settlement)],
        now: i64,
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(self.health.track(D::settle_many(self, worker, items, now)))
    }

    fn renew_leases<'a>(&'a self, worker: &'a str, until: i64) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.health.track(async move {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql::renew(D::LOCKS)))
                .bind(worker)
                .bind(until)
                .execute(&self.write)
                .await?;
            Ok(D::rows_affected(&done))
        }))
    }

    fn release_leases<'a>(&'a self, worker: &'a str, now: i64) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.health.track(async move {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql::release_leases(D::LOCKS)))
                .bind(worker)
                .bind(now)
                .execute(&self.write)
                .await?;
            Ok(D::rows_affected(&done))
        }))
    }

    fn cancel_requests<'a>(&'a self, worker: &'a str) -> BoxFuture<'a, Result<Vec<Uuid>>> {
        Box::pin(async move {
            let ids: Vec<String> = sqlx::query_scalar(sql::CANCEL_REQUESTS)
                .bind(worker)
                .fetch_all(&self.read)
                .await?;
            ids.iter().map(|id| decode::parse_id(id)).collect()
        })
    }

    fn promote_due(&self, now: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.health.track(async move {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql::promote(D::LOCKS)))
                .bind(now)
                .execute(&self.write)
                .await?;
            Ok(D::rows_affected(&done))
        }))
    }

    fn reap_expired(&self, now: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.health.track(async move {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql::reap(D::LOCKS)))
                .bind(now)
                .execute(&self.write)
                .await?;
            Ok(D::rows_affected(&done))
        }))
    }

    fn append_logs(&self, lines: Vec<NewLogLine>) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            for line in &lines {
                sqlx::query(sql::APPEND_LOG)
                    .bind(line.task_id.to_string())
                    .bind(i64::from(line.attempt))
                    .bind(line.stream.as_str())
                    .bind(line.ts)
                    .bind(&line.line)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }))
    }

    fn logs(&self, id: Uuid, after: i64, limit: u32) -> BoxFuture<'_, Result<Vec<StoredLogLine>>> {
        Box::pin(async move {
            let id = id.to_string();
            let rows = sqlx::query(sql::LOGS)
                .bind(&id)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
            rows.iter().map(|row| decode::log_line(row, &id)).collect()
        })
    }

    fn event_rows(
        &self,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<EventRow>>> {
        Box::pin(async move {
            let query = if upto == i64::MAX {
                sqlx::query(sql::EVENTS_AFTER)
                    .bind(after)
                    .bind(i64::from(limit))
            } else {
                sqlx::query(sql::EVENTS)
                    .bind(after)
                    .bind(upto)
                    .bind(i64::from(limit))
            };
            let rows = query.fetch_all(&self.read).await?;
            rows.iter().map(decode::event_row).collect()
        })
    }

    fn event_rows_before(&self, before: i64, limit: u32) -> BoxFuture<'_, Result<Vec<EventRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(sql::EVENTS_BEFORE)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
            rows.iter().map(decode::event_row).collect()
        })
    }

    fn first_event_since(&self, at: i64) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let seq: Option<i64> = sqlx::query_scalar(sql::FIRST_EVENT_SINCE)
                .bind(at)
                .fetch_one(&self.read)
                .await?;
            Ok(seq)
        })
    }

    fn tend(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(D::tend(self))
    }

    fn latest_event(&self) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move {
            let seq: i64 = sqlx::query_scalar(sql::LATEST_EVENT)
                .fetch_one(&self.read)
                .await?;
            Ok(seq)
        })
    }

    fn trim_events(&self, before: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.health.track(async move {
            let done = sqlx::query(sql::TRIM_EVENTS)
                .bind(before)
                .execute(&self.write)
                .await?;
            Ok(D::rows_affected(&done))
        }))
    }

    fn queue_counts(&self, finished_since: Option<i64>) -> BoxFuture<'_, Result<Vec<QueueCount>>> {
        Box::pin(async move {
            let rows = match finished_since {
                Some(since) => {
                    sqlx::query(sql::FINISHED_SINCE)
                        .bind(since)
                        .fetch_all(&self.read)
                        .await?
                }
                None => sqlx::query(sql::QUEUE_COUNTS).fetch_all(&self.read).await?,
            };
            rows.iter().map(decode::queue_count).collect()
        })
    }

    fn finished_by_minute(&self, since: i64) -> BoxFuture<'_, Result<Vec<MinuteCount>>> {
        Box::pin(async move {
            let rows = sqlx::query(sql::FINISHED_BY_MINUTE)
                .bind(since)
                .fetch_all(&self.read)
                .await?;
            rows.iter().map(decode::minute_count).collect()
        })
    }

    fn heartbeat<'a>(&'a self, worker: &'a WorkerRow) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.health.track(async move {
            sqlx::query(sql::HEARTBEAT)
                .bind(&worker.id)
                .bind(&worker.host)
                .bind(i64::from(worker.pid))
                .bind(&worker.queues)
                .bind(i64::from(worker.concurrency))
                .bind(i64::from(worker.busy))
                .bind(worker.started_at)
                .bind(worker.heartbeat_at)
                .bind(&worker.kinds)
                .bind(worker.remote)
                .execute(&self.write)
                .await?;
            Ok(())
        }))
    }

    fn touch_worker<'a>(&'a self, id: &'a str, now: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.health.track(async move {
            sqlx::query(sql::TOUCH_WORKER)
                .bind(id)
                .bind(now)
                .execute(&self.write)
                .await?;
            Ok(())
        }))
    }

    fn renew_lease<'a>(
        &'a self,
        id: Uuid,
        owner: &'a str,
        attempt: u32,
        until: i64,
    ) -> BoxFuture<'a, Result<Option<LeaseState>>> {
        Box::pin(self.health.track(async move {
            let row = sqlx::query(sql::RENEW_ONE)
                .bind(id.to_string())
                .bind(owner)
                .bind(i64::from(attempt))
                .bind(until)
                .fetch_optional(&self.write)
                .await?;
            row.map(|row| {
                Ok(LeaseState {
                    cancel_requested: row.flag("cancel_requested")?,
                    expires_at: row.int("lease_expires_at")?,
                })
            })
            .transpose()
        }))
    }

    fn workers(&self, alive_since: i64) -> BoxFuture<'_, Result<Vec<WorkerRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(sql::WORKERS)
                .bind(alive_since)
                .fetch_all(&self.read)
                .await?;
            rows.iter().map(decode::worker).collect()
        })
    }

    fn remove_workers<'a>(
        &'a self,
        id: Option<&'a str>,
        before: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.health.track(async move {
            let done = match id {
                Some(id) => {
                    sqlx::query(sql::REMOVE_WORKER)
                        .bind(id)
                        .execute(&self.write)
                        .await?
                }
                None => {
                    sqlx::query(sql::PRUNE_WORKERS)
                        .bind(before)
                        .execute(&self.write)
                        .await?
                }
            };
            Ok(D::rows_affected(&done))
        }))
    }

    fn unpublished(&self, limit: u32) -> BoxFuture<'_, Result<Vec<Publishable>>> {
        Box::pin(async move {
            let rows = sqlx::query(sql::UNPUBLISHED)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
            rows.iter().map(decode::publishable).collect()
        })
    }

    fn publisher_beat(&self, token: i64, now: i64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.health.track(async move {
            sqlx::query(sql::PUBLISHER_BEAT)
                .bind(token)
                .bind(now)
                .execute(&self.write)
                .await?;
            Ok(())
        }))
    }

    fn hand_back<'a>(&'a self, mark: i64, ids: &'a [Uuid]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.health.track(async move {
            let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            ids.sort_unstable();
            let mut tx = self.write.begin().await?;
            let mut handed = 0;
            for chunk in ids.chunks(sql::ROWS_PER_STATEMENT) {
                let statement = sql::hand_back_rows(chunk.len(), D::LOCKS);
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(mark);
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                handed += D::rows_affected(&query.execute(&mut *tx).await?);
            }
            tx.commit().await?;
            Ok(handed)
        }))
    }

    fn reclaim_orphans(&self, stale_before: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.health.track(async move {
            let handed = sqlx::query(sqlx::AssertSqlSafe(sql::orphaned(D::LOCKS)))
                .bind(stale_before)
                .execute(&self.write)
                .await?;
            let handed = D::rows_affected(&handed);
            sqlx::query(sql::PRUNE_PUBLISHERS)
                .bind(stale_before - 3_600_000)
                .execute(&self.write)
                .await?;
            Ok(handed)
        }))
    }

    fn mark_published<'a>(
        &'a self,
        tasks: &'a [(Uuid, i64)],
        now: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.health.track(async move {
            // In id order across the statements too, so the transaction takes its
            // row locks in one order from start to end.
            let mut rows: Vec<(String, i64)> =
                tasks.iter().map(|(id, at)| (id.to_string(), *at)).collect();
            rows.sort_unstable();
            let mut tx = self.write.begin().await?;
            for chunk in rows.chunks(sql::ROWS_PER_STATEMENT) {
                let statement = sql::mark_published_rows(chunk.len(), D::LOCKS);
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(now);
                for (id, updated_at) in chunk {
                    query = query.bind(id.as_str()).bind(*updated_at);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }))
    }

    fn listen_ready(&self, wake: Arc<Notify>) -> BoxFuture<'static, ()> {
        D::listen_ready(self, wake)
    }

    fn groups_writes(&self) -> bool {
        D::WRITES_IN_ROUNDS
    }
}

impl<D> SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    for<'q> String: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> i32: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> bool: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<String>: Encode<'q, D::Db> + Decode<'q, D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db>,
    for<'q> Option<i64>: Encode<'q, D::Db> + Decode<'q, D::Db>,
    for<'a> &'a str: ColumnIndex<<D::Db as Database>::Row>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    /// Inserts tasks in statements of up to [`sql::ROWS_PER_STATEMENT`] rows: one
    /// committed on its own where it can be, else a transaction.
    pub(super) async fn insert_statements(
        &self,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<(StoredTask, bool)>> {
        // Workers that claim from the database wake on a notification. With a
        // broker (the tasks carry a publisher's mark) nobody listens, and on
        // PostgreSQL a notifying commit takes a lock every other notifying
        // commit waits for: two API processes' submits queued behind each other.
        let notify = D::NOTIFY_READY.filter(|_| {
            tasks
                .iter()
                .any(|task| task.published_at == Some(0) && task.status == TaskStatus::Queued)
        });
        let labelled = tasks.iter().any(|task| !task.label_pairs.is_empty());
        let keyed = tasks.iter().any(|task| task.idempotency_key.is_some());
        let audited = tasks.iter().any(|task| task.audit.is_some());
        if tasks.len() <= sql::ROWS_PER_STATEMENT
            && !labelled
            && !audited
            && (notify.is_none() || !keyed)
        {
            // The common case is one statement, committed on its own: one round
            // trip instead of three (BEGIN and COMMIT are two more, and on
            // SQLite each is a hop to its writer thread); the notification, if any,
            // goes in the same statement. A replayed key's task is committed by then
            // (the insert waited for it), so reading it after sees it.
            let mut conn = self.write.acquire().await?;
            let inserted: HashSet<String> = Self::insert_chunk(&mut conn, &tasks, notify)
                .await?
                .into_iter()
                .collect();
            return Self::answer(&mut conn, &tasks, &inserted).await;
        }
        let mut tx = self.write.begin().await?;
        let out = Self::insert_in(&mut tx, &tasks).await?;
        if let Some(notify) = notify {
            sqlx::query(notify).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Inserts tasks and their label rows in the caller's transaction.
    pub(super) async fn insert_in(
        tx: &mut <D::Db as Database>::Connection,
        tasks: &[NewTask],
    ) -> Result<Vec<(StoredTask, bool)>> {
        let mut inserted = HashSet::with_capacity(tasks.len());
        for chunk in tasks.chunks(sql::ROWS_PER_STATEMENT) {
            inserted.extend(Self::insert_chunk(&mut *tx, chunk, None).await?);
        }
        // The audit entries of the inserted tasks (a replayed key's submit changed nothing).
        for task in tasks {
            if let Some(audit) = &task.audit
                && inserted.contains(&task.id.to_string())
            {
                write_audit(&mut *tx, audit, task.created_at_ms).await?;
            }
        }
        // The inserted tasks' labels, as rows a selector finds by index.
        let mut labels: Vec<(String, &str, &str)> = Vec::new();
        for task in tasks.iter().filter(|task| !task.label_pairs.is_empty()) {
            let id = task.id.to_string();
            if inserted.contains(&id) {
                for (key, value) in &task.label_pairs {
                    labels.push((id.clone(), key, value));
                }
            }
        }
        for chunk in labels.chunks(sql::ROWS_PER_STATEMENT) {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql::insert_labels(chunk.len())));
            for (id, key, value) in chunk {
                query = query.bind(id.as_str()).bind(*key).bind(*value);
            }
            query.execute(&mut *tx).await?;
        }
        Self::answer(&mut *tx, tasks, &inserted).await
    }

    /// Settles attempts: successes in statements of many rows, every other outcome a
    /// statement of its own, all in one transaction unless a single statement does.
    pub(super) async fn settle_statements(
        &self,
        worker: &str,
        items: &[(Uuid, Settlement)],
        now: i64,
    ) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // Successes, the common case, are one statement per chunk; every other outcome
        // is one statement.
        let mut success_at: Vec<usize> = Vec::new();
        let mut successes: Vec<(String, &str)> = Vec::new();
        for (i, (id, settlement)) in items.iter().enumerate() {
            if let Settlement::Succeeded { result } = settlement {
                success_at.push(i);
                successes.push((id.to_string(), result.as_str()));
            }
        }
        // A few successes are one statement committed on its own (one round trip; a
        // transaction adds three: BEGIN, the lock, COMMIT).
        if successes.len() == items.len() && items.len() <= sql::ROWS_PER_STATEMENT {
            let mut conn = self.write.acquire().await?;
            return Self::settle_successes(&mut conn, worker, now, &successes).await;
        }
        // One transaction for the lot: one commit (one WAL append, one fsync on
        // PostgreSQL) however many tasks ended together.
        let mut tx = self.write.begin().await?;
        // The rows are locked in id order before any changes: the statements
        // below group them by outcome, in no one order.
        let ids: Vec<String> = items.iter().map(|(id, _)| id.to_string()).collect();
        D::lock_rows(&mut tx, &ids).await?;
        let mut settled = vec![false; items.len()];
        for (i, (id, settlement)) in items.iter().enumerate() {
            let (statement, text, at) = match settlement {
                Settlement::Succeeded { .. } => continue,
                Settlement::Retrying { error, run_at_ms } => (
                    sql::settle_retrying(),
                    Some(error.as_str()),
                    Some(*run_at_ms),
                ),
                Settlement::Failed { error } => (sql::settle_failed(), Some(error.as_str()), None),
                Settlement::Cancelled => (sql::settle_cancelled(), None, None),
                Settlement::Requeued => (sql::settle_requeued(), None, None),
            };
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(id.to_string())
                .bind(worker)
                .bind(now);
            if let Some(text) = text {
                query = query.bind(text);
            }
            if let Some(at) = at {
                query = query.bind(at);
            }
            let done = query.execute(&mut *tx).await?;
            settled[i] = D::rows_affected(&done) == 1;
        }
        let chunks = success_at
            .chunks(sql::ROWS_PER_STATEMENT)
            .zip(successes.chunks(sql::ROWS_PER_STATEMENT));
        for (places, rows) in chunks {
            let done = Self::settle_successes(&mut tx, worker, now, rows).await?;
            for (i, done) in places.iter().zip(done) {
                settled[*i] = done;
            }
        }
        tx.commit().await?;
        Ok(settled)
    }

    /// Settles these successes (id, result) in one statement, answering for each whether
    /// the worker still held it. The count answers the common case, all of them; otherwise
    /// one read tells which.
    async fn settle_successes(
        conn: &mut <D::Db as Database>::Connection,
        worker: &str,
        now: i64,
        rows: &[(String, &str)],
    ) -> Result<Vec<bool>> {
        let statement = sql::settle_succeeded_rows(rows.len(), D::LOCKS, sql::Params::Numbered);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(now)
            .bind(worker);
        for (id, result) in rows {
            query = query.bind(id.as_str()).bind(*result);
        }
        let done = query.execute(&mut *conn).await?;
        if D::rows_affected(&done) == rows.len() as u64 {
            return Ok(vec![true; rows.len()]);
        }
        let mut check = sqlx::query(sqlx::AssertSqlSafe(sql::settled_check(
            rows.len(),
            sql::Params::Numbered,
        )));
        for (id, _) in rows {
            check = check.bind(id.as_str());
        }
        let settled: HashSet<String> = check
            .bind(worker)
            .bind(now)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .filter_map(|row| sqlx::Row::try_get::<String, _>(row, 0).ok())
            .collect();
        Ok(rows.iter().map(|(id, _)| settled.contains(id)).collect())
    }

    /// One chunk's multi-row insert, answering the ids it inserted; a task the statement
    /// skipped had an idempotency key that exists. With `then` (a statement that reads
    /// nothing, for a chunk without keys) the same statement runs it after the insert.
    async fn insert_chunk(
        conn: &mut <D::Db as Database>::Connection,
        chunk: &[NewTask],
        then: Option<&str>,
    ) -> Result<Vec<String>> {
        let keyed = chunk.iter().any(|task| task.idempotency_key.is_some());
        let mut statement = sql::insert_rows(chunk.len(), sql::Params::Numbered, keyed);
        if let Some(then) = then.filter(|_| !keyed) {
            statement = format!("WITH inserted AS ({statement}) {then}");
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
        for task in chunk {
            query = query
                .bind(task.id.to_string())
                .bind(&task.kind)
                .bind(&task.queue)
                .bind(task.priority)
                .bind(&task.payload)
                .bind(task.status.as_str())
                .bind(i64::from(task.max_attempts))
                .bind(task.timeout_secs as i64)
                .bind(task.run_at_ms)
                .bind(task.created_at_ms)
                // updated_at starts as created_at.
                .bind(task.created_at_ms)
                .bind(&task.idempotency_key)
                .bind(&task.labels)
                .bind(task.retry_base_ms.map(|ms| ms as i64))
                .bind(task.retry_max_ms.map(|ms| ms as i64))
                .bind(task.published_at)
                .bind(task.workflow_id.map(|id| id.to_string()))
                .bind(task.step.as_deref())
                .bind(task.concurrency_key.as_deref())
                .bind(task.concurrency_limit.map(i64::from))
                .bind(task.trace_parent.as_deref());
        }
        if !keyed {
            // Nothing to skip: the statement inserted every row or failed.
            query.execute(&mut *conn).await?;
            return Ok(chunk.iter().map(|task| task.id.to_string()).collect());
        }
        let mut ids = Vec::with_capacity(chunk.len());
        for row in query.fetch_all(&mut *conn).await? {
            ids.push(sqlx::Row::try_get::<String, _>(&row, 0)?);
        }
        Ok(ids)
    }

    /// Each task as stored: the inserted ones as given, and for one skipped for an existing
    /// idempotency key, that key's first task, read back.
    async fn answer(
        conn: &mut <D::Db as Database>::Connection,
        tasks: &[NewTask],
        inserted: &HashSet<String>,
    ) -> Result<Vec<(StoredTask, bool)>> {
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            if inserted.contains(&task.id.to_string()) {
                out.push((StoredTask::from_new(task), true));
                continue;
            }
            let row = sqlx::query(sqlx::AssertSqlSafe(sql::select_by_key()))
                .bind(&task.idempotency_key)
                .fetch_one(&mut *conn)
                .await?;
            out.push((decode::task(&row)?, false));
        }
        Ok(out)
    }
    /// Which label selector finds a list's tasks through the label index (see
    /// [`sql::list`](sql::list)): the `key=value` one with the fewest
    /// tasks, else the first `key` one, else none.
    async fn label_driver(&self, selectors: &[Selector]) -> Result<Option<usize>> {
        let equals: Vec<(usize, &str, &str)> = selectors
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Selector::Equals(key, value) => Some((i, key.as_str(), value.as_str())),
                _ => None,
            })
            .collect();
        if equals.len() < 2 {
            return Ok(equals.first().map(|(i, _, _)| *i).or_else(|| {
                selectors
                    .iter()
                    .position(|s| matches!(s, Selector::Exists(_)))
            }));
        }
        let mut fewest: Option<(i64, usize)> = None;
        for (i, key, value) in equals {
            let count: i64 = sqlx::query_scalar(sql::LABEL_PROBE)
                .bind(key)
                .bind(value)
                .fetch_one(&self.read)
                .await?;
            if fewest.is_none_or(|(least, _)| count < least) {
                fewest = Some((count, i));
            }
        }
        Ok(fewest.map(|(_, i)| i))
    }
}
