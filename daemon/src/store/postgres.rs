//! The production backend: PostgreSQL through a sqlx pool.
//!
//! Claims use `FOR UPDATE SKIP LOCKED`, so many workers claim side by side without waiting on
//! each other; a submit NOTIFYs `taskplane_ready` so `--broker db` workers wake at once.
//! A restart of the server shows up as failed statements (503 from the API, retries in the
//! worker) until the pool's fresh connections succeed again.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    BoxFuture, ClaimedTask, Dialect, Result, SqlStore, StoreError, StoredTask, WriteHealth, decode,
    sql,
};
use crate::domain::lifecycle::Settlement;
use crate::domain::validate::NewTask;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_tasks.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_task_labels.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_feed_batches.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_fewer_index_writes.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_schedules.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_dependencies.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_remote_workers.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_queue_controls.sql"),
    ),
    (
        9,
        include_str!("../../migrations/postgres/0009_trace_context.sql"),
    ),
];

/// The NOTIFY channel for "work is ready".
const READY_CHANNEL: &str = "taskplane_ready";
/// Serializes migrations across processes (an arbitrary, fixed key).
const MIGRATION_LOCK: i64 = 0x0074_6173_6b70_6c6e;
/// Serializes [`Pg::tend`](Dialect::tend) across processes.
const TEND_LOCK: i64 = MIGRATION_LOCK + 1;

/// The dialect of PostgreSQL: row locks in id order, `FOR UPDATE SKIP LOCKED` claims, LISTEN/NOTIFY wake-ups,
/// migrations under an advisory lock, and taskd's own vacuum when autovacuum is off.
pub struct Pg;

/// The store on this dialect.
pub type PgStore = SqlStore<Pg>;

impl Dialect for Pg {
    type Db = sqlx::Postgres;

    type Writer = ();

    const NAMES_LIST_INDEX: bool = false;

    const WRITES_IN_ROUNDS: bool = false;

    const LOCKS: sql::Locks = sql::POSTGRES_LOCKS;

    // The channel is `READY_CHANNEL`.
    const NOTIFY_READY: Option<&'static str> = Some("SELECT pg_notify('taskplane_ready', '')");

    /// An arbitrary, fixed key (the migration lock's plus 2).
    const GATE_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(32758245650099312)");

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn insert(store: &PgStore, tasks: Vec<NewTask>) -> Result<Vec<(StoredTask, bool)>> {
        store.insert_statements(tasks).await
    }

    async fn settle_many(
        store: &PgStore,
        worker: &str,
        items: &[(Uuid, Settlement)],
        now: i64,
    ) -> Result<Vec<bool>> {
        store.settle_statements(worker, items, now).await
    }

    /// With the server's autovacuum off, nothing removes the dead row versions every
    /// claim and settle leaves, nor gathers statistics: the claim's index walks past every
    /// claimed task and the planner guesses blind (a 50,000-task run fell from thousands of
    /// tasks/s to 315/s with 410,000 dead rows; one VACUUM, 1.1 s, brought back 1,534/s).
    /// So taskd does it, by autovacuum's own rule (dead rows above 50 + 20 % of the live
    /// ones, changes since the last analyze above 50 + 10 %), one process at a time (an
    /// advisory lock). With autovacuum on this does nothing.
    async fn tend(store: &PgStore) -> Result<Vec<String>> {
        let autovacuum: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
            .fetch_one(&store.read)
            .await?;
        if autovacuum == "on" {
            return Ok(Vec::new());
        }
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_stat_user_tables
             WHERE relname IN ('tasks', 'task_events', 'task_labels', 'task_logs', 'workers',
                               'publishers', 'schedules')
               AND (n_dead_tup > 50 + 0.2 * n_live_tup
                    OR n_mod_since_analyze > 50 + 0.1 * n_live_tup)
             ORDER BY relname",
        )
        .fetch_all(&store.read)
        .await?;
        if due.is_empty() {
            return Ok(due);
        }
        // A connection of its own, without sqlx's slow-statement warning: a VACUUM of a
        // large table under load takes seconds by nature (its time is logged below).
        let options = sqlx::ConnectOptions::disable_statement_logging(
            (*store.write.connect_options()).clone(),
        );
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(TEND_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            return Ok(Vec::new());
        }
        let mut done = Vec::new();
        for table in due {
            // The names come from the fixed list above.
            let statement = format!("VACUUM (ANALYZE) {table}");
            let began = std::time::Instant::now();
            match sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
            {
                Ok(_) => {
                    tracing::debug!(%table, seconds = began.elapsed().as_secs_f64(), "vacuumed and analyzed");
                    done.push(table)
                }
                Err(error) => tracing::debug!(%error, %table, "vacuum failed"),
            }
        }
        // Closing the connection releases the advisory lock too.
        sqlx::Connection::close(conn).await?;
        Ok(done)
    }

    /// Locks these task rows in id order, for a transaction that then changes them in
    /// several statements.
    async fn lock_rows(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        ids: &[String],
    ) -> Result<()> {
        sqlx::query("SELECT id FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(ids)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn migrate(store: &PgStore) -> Result<Vec<i64>> {
        let mut tx = store.write.begin().await?;
        // Every statement below runs under one lock, so processes starting together apply
        // the schema once.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let mut applied_now = Vec::new();
        for (version, statements) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            sqlx::raw_sql(*statements)
                .execute(&mut *tx)
                .await
                .map_err(|source| StoreError::Migration {
                    version: *version,
                    source,
                })?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(chrono::Utc::now().timestamp_millis())
                .execute(&mut *tx)
                .await?;
            applied_now.push(*version);
        }
        tx.commit().await?;
        Ok(applied_now)
    }

    async fn claim(
        store: &PgStore,
        worker: &str,
        queues: &[String],
        kinds: Option<&[String]>,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedTask>> {
        // With one queue, `queue = $4` lets PostgreSQL walk the `tasks_ready` index in
        // priority order and stop at the limit; `= ANY` over several makes it sort them all.
        // The kinds (`$6`) filter the rows the walk finds; without kinds the statement does
        // not name them (see `claim_ids`).
        let (queue, gate) = if queues.len() == 1 {
            ("queue = $4[1]", sql::ungated("$4[1]"))
        } else {
            (
                "queue = ANY($4)",
                format!("{}{}", sql::UNKEYED, sql::NOT_GATED_QUEUE),
            )
        };
        let kind = if kinds.is_some() {
            " AND kind = ANY($6)"
        } else {
            ""
        };
        let filter = format!("{queue}{kind}{gate}");
        // The CTE runs once (a subquery under IN may be evaluated again and claim more than
        // the limit); SKIP LOCKED lets concurrent workers pick different rows.
        let query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH picked AS (
                 SELECT id AS picked_id FROM tasks
                 WHERE status = 'queued' AND {filter}
                 ORDER BY priority DESC, run_at, id
                 LIMIT $5
                 FOR UPDATE SKIP LOCKED)
             UPDATE tasks SET {set}
             FROM picked
             WHERE tasks.id = picked.picked_id AND tasks.status = 'queued'
             RETURNING {}",
            sql::CLAIM_COLUMNS,
            set = sql::CLAIM_SET
        )))
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .bind(queues)
        .bind(i64::from(limit));
        let rows = match kinds {
            Some(kinds) => query.bind(kinds),
            None => query,
        }
        .fetch_all(&store.write)
        .await?;
        decode::claimed_in_order(&rows)
    }

    async fn claim_ids(
        store: &PgStore,
        worker: &str,
        ids: &[Uuid],
        kinds: Option<&[String]>,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedTask>> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        // Locked in id order first: deliveries come in any order, and two workers (or a
        // worker and the dispatcher) locking overlapping ids in different orders deadlock.
        // No SKIP LOCKED: a delivered task passed over would be acked as a duplicate. The
        // lock finds the rows by id alone (the update checks the status): with the status
        // there too, the planner walked every queued task of a backlog for the 64 ids
        // (30,000 queued: 8.5 ms against 1.1 ms; over 1 s under load). The kinds (`$5`), when
        // given, filter the locked rows, for the same reason: beside the status in the
        // update they made the planner walk every queued task of a fresh table (its
        // statistics not yet gathered: 330 ms per claim of 64). Without kinds (taskd's
        // workers: RabbitMQ never delivers a leased kind) the statement does not name them:
        // even `$5 IS NULL OR …` changed PostgreSQL's generic plan and cost a tenth of the
        // throughput of single submits.
        let kind = if kinds.is_some() {
            " AND kind = ANY($5)"
        } else {
            ""
        };
        // A task of a gated queue is not locked (the gate is read once, beside the ids), and a
        // keyed one not claimed: the gated claim takes both.
        let query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH locked AS (
                 SELECT id AS locked_id FROM tasks
                 WHERE id = ANY($4){kind}{gate}
                 ORDER BY id
                 FOR UPDATE)
             UPDATE tasks SET {set}
             FROM locked
             WHERE tasks.id = locked.locked_id AND tasks.status = 'queued'{unkeyed}
             RETURNING {}",
            sql::CLAIM_COLUMNS,
            set = sql::CLAIM_SET,
            gate = sql::NOT_GATED_QUEUE,
            unkeyed = sql::UNKEYED
        )))
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .bind(&ids);
        let rows = match kinds {
            Some(kinds) => query.bind(kinds),
            None => query,
        }
        .fetch_all(&store.write)
        .await?;
        decode::claimed_in_order(&rows)
    }

    /// Delivered when the transaction commits, so no worker wakes for uncommitted work.
    /// PostgreSQL's autovacuum returns deleted rows' space by itself.
    async fn reclaim(_store: &PgStore) -> Result<()> {
        Ok(())
    }

    fn listen_ready(store: &PgStore, wake: Arc<Notify>) -> BoxFuture<'static, ()> {
        let pool = store.read.clone();
        Box::pin(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                match PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if let Err(error) = listener.listen(READY_CHANNEL).await {
                            tracing::warn!(%error, "LISTEN failed; retrying");
                        } else {
                            delay = Duration::from_millis(500);
                            // recv() reconnects by itself after a dropped connection;
                            // notifications sent meanwhile are covered by polling.
                            while listener.recv().await.is_ok() {
                                wake.notify_one();
                            }
                        }
                    }
                    Err(error) => tracing::debug!(%error, "cannot LISTEN yet; retrying"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        })
    }
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore> {
        let options = PgConnectOptions::from_str(url)?.application_name("taskd");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Fail fast while the server is down, so the API answers 503 promptly.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        let store = SqlStore {
            write: pool.clone(),
            read: pool,
            health: Arc::new(WriteHealth::default()),
            writer: (),
        };
        sqlx::query("SELECT 1").execute(&store.read).await?;
        Ok(store)
    }
}
