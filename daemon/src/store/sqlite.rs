//! The embedded backend: one SQLite file in WAL mode.
//!
//! One connection writes (SQLite allows one writer at a time anyway, and queuing writers in
//! the pool is fairer and faster than letting them spin on the file lock); a small pool reads.
//! Another process on the same file (`--role api` beside `--role worker`) waits on the
//! busy timeout. `synchronous = NORMAL` in WAL mode survives a crash of the process (the
//! committed transaction is in the WAL file); only an OS crash or power loss can lose the
//! last commits, the trade-off most embedded queues make.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row};
use taskplane_api::{LogStream, TaskStatus};
use uuid::Uuid;

use super::{
    BoxFuture, CancelOutcome, ClaimedTask, ListFilter, NewLogLine, Result, RetryOutcome, Store,
    StoreError, StoredLogLine, StoredTask,
};
use crate::domain::lifecycle::Settlement;
use crate::domain::validate::NewTask;

/// The schema, in order. A version is applied once and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/sqlite/0001_tasks.sql"))];

const TASK_COLUMNS: &str = "id, kind, queue, priority, payload, status, attempts, max_attempts, \
     timeout_secs, run_at, created_at, updated_at, started_at, finished_at, result, last_error, \
     idempotency_key, labels, worker, cancel_requested";

pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .connect_with(options.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { write, read })
    }
}

fn corrupt(id: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        reason: reason.to_string(),
    }
}

fn parse_id(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| corrupt(text, e))
}

fn to_u32(id: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|e| corrupt(id, e))
}

fn task_from_row(row: &SqliteRow) -> Result<StoredTask> {
    let id_text: String = row.try_get("id")?;
    let status_text: String = row.try_get("status")?;
    let status = TaskStatus::from_str(&status_text).map_err(|e| corrupt(&id_text, e))?;
    Ok(StoredTask {
        id: parse_id(&id_text)?,
        kind: row.try_get("kind")?,
        queue: row.try_get("queue")?,
        priority: row.try_get("priority")?,
        payload: row.try_get("payload")?,
        status,
        attempts: to_u32(&id_text, row.try_get("attempts")?)?,
        max_attempts: to_u32(&id_text, row.try_get("max_attempts")?)?,
        timeout_secs: u64::try_from(row.try_get::<i64, _>("timeout_secs")?)
            .map_err(|e| corrupt(&id_text, e))?,
        run_at: row.try_get("run_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        result: row.try_get("result")?,
        last_error: row.try_get("last_error")?,
        idempotency_key: row.try_get("idempotency_key")?,
        labels: row.try_get("labels")?,
        worker: row.try_get("worker")?,
        cancel_requested: row.try_get("cancel_requested")?,
    })
}

fn stream_from_str(id: &str, text: &str) -> Result<LogStream> {
    match text {
        "stdout" => Ok(LogStream::Stdout),
        "stderr" => Ok(LogStream::Stderr),
        "system" => Ok(LogStream::System),
        other => Err(corrupt(id, format!("unknown log stream '{other}'"))),
    }
}

impl StoredTask {
    /// The row an insert creates, without reading it back.
    fn from_new(task: &NewTask) -> StoredTask {
        StoredTask {
            id: task.id,
            kind: task.kind.clone(),
            queue: task.queue.clone(),
            priority: task.priority,
            payload: task.payload.clone(),
            status: task.status,
            attempts: 0,
            max_attempts: task.max_attempts,
            timeout_secs: task.timeout_secs,
            run_at: task.run_at_ms,
            created_at: task.created_at_ms,
            updated_at: task.created_at_ms,
            started_at: None,
            finished_at: None,
            result: None,
            last_error: None,
            idempotency_key: task.idempotency_key.clone(),
            labels: task.labels.clone(),
            worker: None,
            cancel_requested: false,
        }
    }
}

impl SqliteStore {
    async fn get_task(&self, id: Uuid) -> Result<Option<StoredTask>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn do_migrate(&self) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        for (version, sql) in MIGRATIONS {
            // IMMEDIATE takes the write lock before reading the version, so two processes
            // starting on a fresh file cannot both apply a migration.
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            let applied = async {
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?1")
                        .bind(version)
                        .fetch_optional(&mut *conn)
                        .await?;
                if done.is_none() {
                    sqlx::raw_sql(*sql).execute(&mut *conn).await?;
                    sqlx::query(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    )
                    .bind(version)
                    .bind(chrono::Utc::now().timestamp_millis())
                    .execute(&mut *conn)
                    .await?;
                }
                Ok::<_, sqlx::Error>(())
            }
            .await;
            match applied {
                Ok(()) => {
                    sqlx::query("COMMIT").execute(&mut *conn).await?;
                }
                Err(source) => {
                    // The connection may be broken; a failed rollback changes nothing here.
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    return Err(StoreError::Migration {
                        version: *version,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn do_insert(&self, tasks: Vec<NewTask>) -> Result<Vec<(StoredTask, bool)>> {
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut out = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let inserted = sqlx::query(
                "INSERT INTO tasks (id, kind, queue, priority, payload, status, max_attempts,
                     timeout_secs, run_at, created_at, updated_at, idempotency_key, labels)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
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
            .bind(&task.idempotency_key)
            .bind(&task.labels)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                out.push((StoredTask::from_new(task), true));
                continue;
            }
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key = ?1"
            )))
            .bind(&task.idempotency_key)
            .fetch_one(&mut *tx)
            .await?;
            out.push((task_from_row(&row)?, false));
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn do_list(&self, filter: ListFilter) -> Result<Vec<StoredTask>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE (?1 IS NULL OR status = ?1)
               AND (?2 IS NULL OR queue = ?2)
               AND (?3 IS NULL OR kind = ?3)
               AND (?4 IS NULL OR id < ?4)
             ORDER BY id DESC
             LIMIT ?5"
        )))
        .bind(filter.status.map(TaskStatus::as_str))
        .bind(filter.queue)
        .bind(filter.kind)
        .bind(filter.before.map(|id| id.to_string()))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn do_cancel(&self, id: Uuid, now: i64) -> Result<CancelOutcome> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET
                 status = CASE WHEN status = 'running' THEN 'running' ELSE 'cancelled' END,
                 finished_at = CASE WHEN status = 'running' THEN finished_at ELSE ?2 END,
                 cancel_requested = 1,
                 updated_at = ?2
             WHERE id = ?1 AND status IN ('scheduled', 'queued', 'retrying', 'running')
             RETURNING {TASK_COLUMNS}"
        )))
        .bind(id.to_string())
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        if let Some(row) = row {
            let task = task_from_row(&row)?;
            return Ok(if task.status == TaskStatus::Running {
                CancelOutcome::Requested(task)
            } else {
                CancelOutcome::Cancelled(task)
            });
        }
        Ok(match self.get_task(id).await? {
            Some(task) => CancelOutcome::Finished(task),
            None => CancelOutcome::NotFound,
        })
    }

    async fn do_retry(&self, id: Uuid, now: i64) -> Result<RetryOutcome> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET status = 'queued', attempts = 0, run_at = ?2, updated_at = ?2,
                 started_at = NULL, finished_at = NULL, result = NULL, worker = NULL,
                 cancel_requested = 0
             WHERE id = ?1 AND status IN ('failed', 'cancelled')
             RETURNING {TASK_COLUMNS}"
        )))
        .bind(id.to_string())
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        if let Some(row) = row {
            return Ok(RetryOutcome::Requeued(task_from_row(&row)?));
        }
        Ok(match self.get_task(id).await? {
            Some(task) => RetryOutcome::NotRetryable(task),
            None => RetryOutcome::NotFound,
        })
    }

    async fn do_claim(
        &self,
        worker: &str,
        queues: &[String],
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedTask>> {
        let queues_json = serde_json::to_string(queues).map_err(|e| corrupt("-", e))?;
        let rows = sqlx::query(
            "UPDATE tasks SET status = 'running', attempts = attempts + 1, worker = ?1,
                 lease_owner = ?1, lease_expires_at = ?2, started_at = ?3, updated_at = ?3
             WHERE id IN (
                 SELECT id FROM tasks
                 WHERE status = 'queued' AND queue IN (SELECT value FROM json_each(?4))
                 ORDER BY priority DESC, run_at, id
                 LIMIT ?5)
               AND status = 'queued'
             RETURNING id, kind, queue, payload, attempts, max_attempts, timeout_secs, priority",
        )
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .bind(queues_json)
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id_text: String = row.try_get("id")?;
            claimed.push((
                row.try_get::<i32, _>("priority")?,
                ClaimedTask {
                    id: parse_id(&id_text)?,
                    kind: row.try_get("kind")?,
                    queue: row.try_get("queue")?,
                    payload: row.try_get("payload")?,
                    attempt: to_u32(&id_text, row.try_get("attempts")?)?,
                    max_attempts: to_u32(&id_text, row.try_get("max_attempts")?)?,
                    timeout_secs: u64::try_from(row.try_get::<i64, _>("timeout_secs")?)
                        .map_err(|e| corrupt(&id_text, e))?,
                },
            ));
        }
        // RETURNING does not keep the subquery's order; start the most urgent first.
        claimed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
        Ok(claimed.into_iter().map(|(_, task)| task).collect())
    }

    async fn do_settle(
        &self,
        id: Uuid,
        worker: &str,
        settlement: &Settlement,
        now: i64,
    ) -> Result<bool> {
        const GUARD: &str = "WHERE id = ?1 AND status = 'running' AND lease_owner = ?2";
        const RELEASE: &str = "lease_owner = NULL, lease_expires_at = NULL, updated_at = ?3";
        let query = match settlement {
            Settlement::Succeeded { result } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE tasks SET status = 'succeeded', result = ?4, finished_at = ?3, {RELEASE} {GUARD}"
            )))
            .bind(id.to_string())
            .bind(worker)
            .bind(now)
            .bind(result),
            Settlement::Retrying { error, run_at_ms } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE tasks SET status = 'retrying', last_error = ?4, run_at = ?5, {RELEASE} {GUARD}"
            )))
            .bind(id.to_string())
            .bind(worker)
            .bind(now)
            .bind(error)
            .bind(run_at_ms),
            Settlement::Failed { error } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE tasks SET status = 'failed', last_error = ?4, finished_at = ?3, {RELEASE} {GUARD}"
            )))
            .bind(id.to_string())
            .bind(worker)
            .bind(now)
            .bind(error),
            Settlement::Cancelled => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE tasks SET status = 'cancelled', finished_at = ?3, {RELEASE} {GUARD}"
            )))
            .bind(id.to_string())
            .bind(worker)
            .bind(now),
            Settlement::Requeued => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE tasks SET status = 'queued', attempts = attempts - 1, started_at = NULL,
                     run_at = ?3, {RELEASE} {GUARD}"
            )))
            .bind(id.to_string())
            .bind(worker)
            .bind(now),
        };
        let done = query.execute(&self.write).await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store for SqliteStore {
    fn migrate(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.do_migrate())
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.read).await?;
            Ok(())
        })
    }

    fn insert(&self, tasks: Vec<NewTask>) -> BoxFuture<'_, Result<Vec<(StoredTask, bool)>>> {
        Box::pin(self.do_insert(tasks))
    }

    fn get(&self, id: Uuid) -> BoxFuture<'_, Result<Option<StoredTask>>> {
        Box::pin(self.get_task(id))
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<StoredTask>>> {
        Box::pin(self.do_list(filter))
    }

    fn cancel(&self, id: Uuid, now: i64) -> BoxFuture<'_, Result<CancelOutcome>> {
        Box::pin(self.do_cancel(id, now))
    }

    fn retry(&self, id: Uuid, now: i64) -> BoxFuture<'_, Result<RetryOutcome>> {
        Box::pin(self.do_retry(id, now))
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        queues: &'a [String],
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Vec<ClaimedTask>>> {
        Box::pin(self.do_claim(worker, queues, limit, now, lease_until))
    }

    fn settle<'a>(
        &'a self,
        id: Uuid,
        worker: &'a str,
        settlement: &'a Settlement,
        now: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_settle(id, worker, settlement, now))
    }

    fn renew_leases<'a>(&'a self, worker: &'a str, until: i64) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE tasks SET lease_expires_at = ?2
                 WHERE lease_owner = ?1 AND status = 'running'",
            )
            .bind(worker)
            .bind(until)
            .execute(&self.write)
            .await?;
            Ok(done.rows_affected())
        })
    }

    fn cancel_requests<'a>(&'a self, worker: &'a str) -> BoxFuture<'a, Result<Vec<Uuid>>> {
        Box::pin(async move {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM tasks
                 WHERE lease_owner = ?1 AND status = 'running' AND cancel_requested = 1",
            )
            .bind(worker)
            .fetch_all(&self.read)
            .await?;
            ids.iter().map(|id| parse_id(id)).collect()
        })
    }

    fn promote_due(&self, now: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE tasks SET status = 'queued', updated_at = ?1
                 WHERE status IN ('scheduled', 'retrying') AND run_at <= ?1",
            )
            .bind(now)
            .execute(&self.write)
            .await?;
            Ok(done.rows_affected())
        })
    }

    fn reap_expired(&self, now: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE tasks SET
                     status = CASE WHEN cancel_requested = 1 THEN 'cancelled'
                                   WHEN attempts >= max_attempts THEN 'failed'
                                   ELSE 'queued' END,
                     finished_at = CASE WHEN cancel_requested = 1 OR attempts >= max_attempts
                                        THEN ?1 ELSE NULL END,
                     last_error = 'worker ' || COALESCE(lease_owner, '?')
                         || ' stopped renewing its lease during attempt ' || attempts
                         || ' (it crashed or was killed)',
                     run_at = ?1, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1
                 WHERE status = 'running' AND lease_expires_at < ?1",
            )
            .bind(now)
            .execute(&self.write)
            .await?;
            Ok(done.rows_affected())
        })
    }

    fn append_logs(&self, lines: Vec<NewLogLine>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut conn = self.write.acquire().await?;
            let mut tx = conn.begin().await?;
            for line in &lines {
                sqlx::query(
                    "INSERT INTO task_logs (task_id, attempt, stream, ts, line)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
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
        })
    }

    fn logs(&self, id: Uuid, after: i64, limit: u32) -> BoxFuture<'_, Result<Vec<StoredLogLine>>> {
        Box::pin(async move {
            let id_text = id.to_string();
            let rows = sqlx::query(
                "SELECT seq, attempt, stream, ts, line FROM task_logs
                 WHERE task_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .bind(&id_text)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(StoredLogLine {
                        seq: row.try_get("seq")?,
                        attempt: to_u32(&id_text, row.try_get("attempt")?)?,
                        stream: stream_from_str(&id_text, &row.try_get::<String, _>("stream")?)?,
                        ts: row.try_get("ts")?,
                        line: row.try_get("line")?,
                    })
                })
                .collect()
        })
    }
}
