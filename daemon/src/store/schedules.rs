//! Schedules in the store: their rows, and the one transaction a fire is (the guarded advance
//! of `next_run_at`, the fire's tasks and their `fired` events).

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use taskplane_api::TaskStatus;

use super::controls::write_audit;
use super::decode::{TaskRow, corrupt};
use super::{AuditEntry, BoxFuture, Dialect, Result, SqlStore, StoredTask};
use crate::domain::validate::NewTask;

/// A schedule as the store holds it. Instants are Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub name: String,
    /// The timing, overlap, catch-up and task template, as JSON (see `scheduler::Spec`).
    pub spec: String,
    pub paused: bool,
    pub next_run_at: Option<i64>,
    pub last_run_at: Option<i64>,
    pub last_task_id: Option<String>,
    /// The status of the last task, read with the row (None once that task is gone).
    pub last_status: Option<TaskStatus>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One fire of a schedule, committed whole or not at all.
#[derive(Debug, Clone)]
pub struct Fire {
    pub name: String,
    /// The `next_run_at` the scheduler read: the fire happens only if it is still that (and
    /// the schedule is not paused). None: a manual trigger, which changes no fire time.
    pub expect_next: Option<i64>,
    /// The new `next_run_at` (with `expect_next` only).
    pub next: Option<i64>,
    pub now: i64,
    /// The tasks to submit (none: the fire times were skipped or missed).
    pub tasks: Vec<NewTask>,
    /// The change-feed row of their `fired` events (JSON), written with them.
    pub events: Option<String>,
    /// The audit entry of a manual trigger.
    pub audit: Option<AuditEntry>,
}

/// The tasks a committed fire stored, each with whether it was created (see
/// [`super::Store::insert`]); None when the fire lost its race and wrote nothing.
pub type Fired = Option<Vec<(StoredTask, bool)>>;

/// What the scheduler and the schedule API ask of a store.
pub trait Schedules: Send + Sync {
    /// Creates a schedule; false when the name is taken. Records `audit` with it.
    fn create_schedule<'a>(
        &'a self,
        row: &'a ScheduleRow,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Schedules by name, after `after`, at most `limit`.
    fn schedules(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRow>>>;

    fn schedule<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ScheduleRow>>>;

    /// Writes a schedule's spec, pause state, next fire time and `updated_at`; false when it
    /// does not exist. Records `audit` with it.
    fn update_schedule<'a>(
        &'a self,
        row: &'a ScheduleRow,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Deletes a schedule (its tasks stay); false when it did not exist. Records `audit`
    /// with it.
    fn delete_schedule<'a>(
        &'a self,
        name: &'a str,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<bool>>;

    /// The schedules due at `now` (not paused, `next_run_at <= now`), earliest first.
    fn due_schedules(&self, now: i64, limit: u32) -> BoxFuture<'_, Result<Vec<ScheduleRow>>>;

    /// The earliest fire time of a schedule that is not paused.
    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>>>;

    /// Commits a fire; None when another process fired that time first (or the schedule was
    /// paused, changed or deleted meanwhile): nothing was written.
    fn fire(&self, fire: Fire) -> BoxFuture<'_, Result<Fired>>;
}

const COLUMNS: &str = "s.name, s.spec, s.paused, s.next_run_at, s.last_run_at, s.last_task_id,
     s.created_at, s.updated_at, t.status AS last_status";

fn select(rest: &str) -> String {
    format!("SELECT {COLUMNS} FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id {rest}")
}

fn decode<R: TaskRow>(row: &R) -> Result<ScheduleRow> {
    let name = row.text("name")?;
    let last_status = match row.opt_text("last_status")? {
        Some(text) => Some(
            text.parse::<TaskStatus>()
                .map_err(|e| corrupt(&format!("schedule {name}"), e))?,
        ),
        None => None,
    };
    Ok(ScheduleRow {
        spec: row.text("spec")?,
        paused: row.flag("paused")?,
        next_run_at: row.opt_int("next_run_at")?,
        last_run_at: row.opt_int("last_run_at")?,
        last_task_id: row.opt_text("last_task_id")?,
        last_status,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        name,
    })
}

impl<D> Schedules for SqlStore<D>
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
    fn create_schedule<'a>(
        &'a self,
        row: &'a ScheduleRow,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            let done = sqlx::query(
                "INSERT INTO schedules (name, spec, paused, next_run_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&row.name)
            .bind(&row.spec)
            .bind(row.paused)
            .bind(row.next_run_at)
            .bind(row.created_at)
            .bind(row.updated_at)
            .execute(&mut *tx)
            .await?;
            audited(tx, D::rows_affected(&done) == 1, audit, row.updated_at).await
        }))
    }

    fn schedules(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRow>>> {
        Box::pin(async move {
            let statement = select("WHERE ($1 IS NULL OR s.name > $1) ORDER BY s.name LIMIT $2");
            let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
            rows.iter().map(decode).collect()
        })
    }

    fn schedule<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ScheduleRow>>> {
        Box::pin(async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(select("WHERE s.name = $1")))
                .bind(name)
                .fetch_optional(&self.read)
                .await?;
            row.as_ref().map(decode).transpose()
        })
    }

    fn update_schedule<'a>(
        &'a self,
        row: &'a ScheduleRow,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            let done = sqlx::query(
                "UPDATE schedules SET spec = $2, paused = $3, next_run_at = $4, updated_at = $5
                 WHERE name = $1",
            )
            .bind(&row.name)
            .bind(&row.spec)
            .bind(row.paused)
            .bind(row.next_run_at)
            .bind(row.updated_at)
            .execute(&mut *tx)
            .await?;
            audited(tx, D::rows_affected(&done) == 1, audit, row.updated_at).await
        }))
    }

    fn delete_schedule<'a>(
        &'a self,
        name: &'a str,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            let done = sqlx::query("DELETE FROM schedules WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            audited(
                tx,
                D::rows_affected(&done) == 1,
                audit,
                crate::util::now_ms(),
            )
            .await
        }))
    }

    fn due_schedules(&self, now: i64, limit: u32) -> BoxFuture<'_, Result<Vec<ScheduleRow>>> {
        Box::pin(async move {
            let statement = select(
                "WHERE NOT s.paused AND s.next_run_at <= $1 ORDER BY s.next_run_at LIMIT $2",
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
            rows.iter().map(decode).collect()
        })
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let next: Option<i64> =
                sqlx::query_scalar("SELECT MIN(next_run_at) FROM schedules WHERE NOT paused")
                    .fetch_one(&self.read)
                    .await?;
            Ok(next)
        })
    }

    fn fire(&self, fire: Fire) -> BoxFuture<'_, Result<Fired>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            let last_task = fire.tasks.last().map(|task| task.id.to_string());
            let ran_at = last_task.as_ref().map(|_| fire.now);
            let done =
                match fire.expect_next {
                    Some(expect) => {
                        sqlx::query(
                            "UPDATE schedules SET next_run_at = $2,
                             last_run_at = COALESCE($3, last_run_at),
                             last_task_id = COALESCE($4, last_task_id)
                         WHERE name = $1 AND next_run_at = $5 AND NOT paused",
                        )
                        .bind(&fire.name)
                        .bind(fire.next)
                        .bind(ran_at)
                        .bind(last_task.as_deref())
                        .bind(expect)
                        .execute(&mut *tx)
                        .await?
                    }
                    None => sqlx::query(
                        "UPDATE schedules SET last_run_at = $2, last_task_id = $3 WHERE name = $1",
                    )
                    .bind(&fire.name)
                    .bind(fire.now)
                    .bind(last_task.as_deref())
                    .execute(&mut *tx)
                    .await?,
                };
            if D::rows_affected(&done) != 1 {
                tx.rollback().await?;
                return Ok(None);
            }
            let stored = Self::insert_in(&mut tx, &fire.tasks).await?;
            if let Some(audit) = &fire.audit {
                write_audit(&mut *tx, audit, fire.now).await?;
            }
            if let Some(events) = &fire.events {
                sqlx::query("INSERT INTO task_events (at, events) VALUES ($1, $2)")
                    .bind(fire.now)
                    .bind(events.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            let wakes = fire
                .tasks
                .iter()
                .any(|task| task.published_at == Some(0) && task.status == TaskStatus::Queued);
            if let Some(notify) = D::NOTIFY_READY.filter(|_| wakes) {
                sqlx::query(notify).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Some(stored))
        }))
    }
}

/// Commits `tx`, with `audit` written first when the change it records happened; answers
/// whether it did.
async fn audited<DB>(
    mut tx: sqlx::Transaction<'_, DB>,
    changed: bool,
    audit: Option<&AuditEntry>,
    now: i64,
) -> Result<bool>
where
    DB: Database,
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    if changed && let Some(audit) = audit {
        write_audit(&mut *tx, audit, now).await?;
    }
    tx.commit().await?;
    Ok(changed)
}
