//! The embedded backend: one SQLite file in WAL mode.
//!
//! One connection writes (SQLite allows one writer at a time anyway, and queuing writers in
//! the pool is fairer and faster than letting them spin on the file lock); a small pool reads.
//! Another process on the same file (`--role api` beside `--role worker`) waits on the
//! busy timeout. `synchronous = NORMAL` in WAL mode survives a crash of the process (the
//! committed transaction is in the WAL file); only an OS crash or power loss can lose the
//! last commits, the trade-off most embedded queues make.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::Notify;
use uuid::Uuid;

mod writer;

use super::{
    BoxFuture, ClaimedTask, Dialect, Result, SqlStore, StoreError, StoredTask, WriteHealth, sql,
};
use crate::domain::lifecycle::Settlement;
use crate::domain::validate::NewTask;

/// The schema, in order. A version is applied once and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_tasks.sql")),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_task_labels.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_feed_batches.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_fewer_index_writes.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_schedules.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_dependencies.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_remote_workers.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/sqlite/0008_queue_controls.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/sqlite/0009_trace_context.sql"),
    ),
];

/// Free pages worth giving back to the file system after a retention delete (4 MiB), and the
/// most given back in one step.
const RECLAIM_PAGES: i64 = 1024;
/// The largest file switched to incremental auto-vacuum at start by itself (one VACUUM).
const MAX_AUTO_VACUUM_BYTES: i64 = 256 * 1024 * 1024;

/// The dialect of SQLite: one writer connection (so no row locks), `json_each` for lists of ids,
/// in-process wake-ups only, and incremental vacuum after retention deletes.
pub struct Lite;

/// The store on this dialect.
pub type SqliteStore = SqlStore<Lite>;

impl Dialect for Lite {
    type Db = sqlx::Sqlite;

    type Writer = writer::Writer;

    const NAMES_LIST_INDEX: bool = true;

    const WRITES_IN_ROUNDS: bool = true;

    const LOCKS: sql::Locks = sql::SQLITE_LOCKS;

    /// In-process wake-ups come from the API directly; other processes find work by polling.
    const NOTIFY_READY: Option<&'static str> = None;

    /// A write that changes nothing takes the file's write lock at the start of the
    /// transaction, so a gated claim of another process on the same file waits for it.
    const GATE_LOCK: Option<&'static str> = Some("UPDATE queue_settings SET gated = gated WHERE 0");

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn insert(store: &SqliteStore, tasks: Vec<NewTask>) -> Result<Vec<(StoredTask, bool)>> {
        store.writer.insert(tasks).await
    }

    async fn settle_many(
        store: &SqliteStore,
        worker: &str,
        items: &[(Uuid, Settlement)],
        now: i64,
    ) -> Result<Vec<bool>> {
        store.writer.settle(worker, items, now).await
    }

    /// SQLite needs no vacuum for its plans (deleted pages are given back by
    /// `reclaim`).
    async fn tend(_store: &SqliteStore) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// One writer connection: a transaction holds the whole database already.
    async fn lock_rows(
        _tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        _ids: &[String],
    ) -> Result<()> {
        Ok(())
    }

    /// Gives the free pages of a file that retention has thinned back to the file system, a
    /// step at a time (each its own statement, so submits and settles go in between).
    async fn reclaim(store: &SqliteStore) -> Result<()> {
        let mut free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&store.write)
            .await?;
        if free < RECLAIM_PAGES {
            return Ok(());
        }
        let pages = free;
        while free > 0 {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA incremental_vacuum({RECLAIM_PAGES})"
            )))
            .execute(&store.write)
            .await?;
            let left: i64 = sqlx::query_scalar("PRAGMA freelist_count")
                .fetch_one(&store.write)
                .await?;
            if left >= free {
                break;
            }
            free = left;
            tokio::task::yield_now().await;
        }
        // The file shrinks at the checkpoint that copies the vacuumed pages back; TRUNCATE
        // also empties the WAL those steps filled. It answers busy, and does neither, while
        // `checkpoints` runs one of its own or a reader holds an old snapshot: try again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (busy,): (i64,) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&store.write)
                .await?;
            if busy == 0 {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::debug!(
                    "the WAL stayed busy for 10 s: it keeps its size, up to journal_size_limit"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::debug!(pages, "returned free pages to the file system");
        Ok(())
    }

    async fn migrate(store: &SqliteStore) -> Result<Vec<i64>> {
        let mut conn = store.write.acquire().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        // Deleted rows' pages go back to the file system after retention deletes (see
        // `reclaim`). A new file, or one made before this was the default, switches
        // once (a VACUUM rewrites the file: instant on a new file, seconds on a large one).
        let vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&mut *conn)
            .await?;
        if vacuum != 2 {
            let bytes: i64 = sqlx::query_scalar(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            )
            .fetch_one(&mut *conn)
            .await?;
            // A VACUUM rewrites the whole file (in memory, and through the WAL): for a large
            // file that is the operator's call, made while taskd is stopped.
            if bytes > MAX_AUTO_VACUUM_BYTES {
                tracing::warn!(
                    bytes,
                    "the database file will not shrink after retention deletes; to let it, stop taskd and run: sqlite3 FILE 'PRAGMA auto_vacuum = INCREMENTAL; VACUUM;'"
                );
            } else {
                sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                    .execute(&mut *conn)
                    .await?;
                if let Err(error) = sqlx::query("VACUUM").execute(&mut *conn).await {
                    tracing::warn!(%error, "VACUUM failed; the file will not shrink after retention deletes");
                }
            }
        }
        // A migration that rebuilds a table (SQLite cannot drop a column's constraint in
        // place) drops the old one: with foreign keys on, that would delete every task's
        // logs and labels with it. So they are off while migrations run (a setting only
        // outside a transaction), checked before each migration commits, and on again
        // before the connection goes back to the pool.
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await?;
        let applied = apply_migrations(&mut conn).await;
        let restored = sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut *conn)
            .await;
        if restored.is_err() {
            // Never hand sqlx a connection without its foreign keys.
            conn.detach();
        }
        let applied = applied?;
        restored?;
        Ok(applied)
    }

    async fn claim(
        store: &SqliteStore,
        worker: &str,
        queues: &[String],
        kinds: Option<&[String]>,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedTask>> {
        store
            .writer
            .claim(worker, queues, kinds, limit, now, lease_until)
            .await
    }

    async fn claim_ids(
        store: &SqliteStore,
        worker: &str,
        ids: &[Uuid],
        kinds: Option<&[String]>,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedTask>> {
        store
            .writer
            .claim_ids(worker, ids, kinds, now, lease_until)
            .await
    }

    /// Other processes on the file are found by polling; the writer wakes this process's
    /// worker when a settle made tasks ready that waited for it.
    fn listen_ready(_store: &SqliteStore, wake: Arc<Notify>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                writer::READY.notified().await;
                wake.notify_one();
            }
        })
    }
}

/// Applies the migrations not applied yet, each in a transaction of its own, on a
/// connection with foreign keys off (see `Lite::migrate`).
async fn apply_migrations(conn: &mut sqlx::SqliteConnection) -> Result<Vec<i64>> {
    let mut applied_now = Vec::new();
    for (version, statements) in MIGRATIONS {
        // IMMEDIATE takes the write lock before reading the version, so two processes
        // starting on a fresh file cannot both apply a migration.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let applied = async {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
            if done.is_some() {
                return Ok::<_, sqlx::Error>(false);
            }
            sqlx::raw_sql(*statements).execute(&mut *conn).await?;
            let broken: Vec<(String,)> = sqlx::query_as("PRAGMA foreign_key_check")
                .fetch_all(&mut *conn)
                .await?;
            if let Some((table,)) = broken.first() {
                return Err(sqlx::Error::Protocol(format!(
                    "{} rows of {table} refer to rows that are gone",
                    broken.len()
                )));
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(chrono::Utc::now().timestamp_millis())
                .execute(&mut *conn)
                .await?;
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(true)
        }
        .await;
        match applied {
            Ok(true) => applied_now.push(*version),
            Ok(false) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
            }
            Err(source) => {
                // Whatever failed (the COMMIT too), no transaction may stay open on the
                // pool's connection; a failed rollback changes nothing here.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(StoreError::Migration {
                    version: *version,
                    source,
                });
            }
        }
    }
    Ok(applied_now)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // The WAL is cut back after checkpoints rather than kept at its largest size.
            // (Incremental auto-vacuum is set once, by `migrate`: setting it on every new
            // connection is a write, which a full disk refuses, and reads would fail too.)
            .pragma("journal_size_limit", (64 * 1024 * 1024).to_string())
            .pragma("temp_store", "memory")
            // A task cancelled because its parent failed cancels its own waiting children
            // through the same trigger (migration 6).
            .pragma("recursive_triggers", "ON")
            // Room for every batch size of the multi-row statements (1 to 32 rows: labels,
            // hand-backs, marks) beside the other statements, so none is prepared again and
            // again. (The submits, claims and settles run on the writer's own statements.)
            .statement_cache_capacity(200);
        let health = Arc::new(WriteHealth::default());
        let refusals = health.clone();
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .before_acquire(move |_, _| {
                // While writes are refused, each write gets a fresh connection: SQLite opens
                // a file it cannot write read-only and would stay so after the file heals.
                let fresh = refusals.refused();
                Box::pin(async move { Ok(!fresh) })
            })
            .min_connections(1)
            .idle_timeout(None)
            .after_release(|conn, _| {
                Box::pin(async move {
                    // A statement or COMMIT that fails (a full disk, a read-only file) can
                    // leave SQLite without the transaction that sqlx still counts as open:
                    // its ROLLBACK then fails, and every later `begin` would become a
                    // SAVEPOINT inside a transaction that never commits, so submits would
                    // be answered without being stored. Such a connection is closed; the
                    // pool opens a fresh one. The usual path (nothing open) costs no
                    // round trip; otherwise the ping lets a queued rollback finish first.
                    if !conn.is_in_transaction() {
                        return Ok(true);
                    }
                    conn.ping().await?;
                    let clean = !conn.is_in_transaction();
                    if !clean {
                        tracing::warn!("closing the SQLite write connection: a failed transaction left it unusable");
                    }
                    Ok(clean)
                })
            })
            // The writer does not checkpoint the WAL at its commits (1,000 pages at a
            // time, with an fsync of the file: 8 % of the writer's time under load); a
            // read connection does it beside it (`checkpoints`).
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        tokio::spawn(checkpoints(read.clone(), Arc::downgrade(&health)));
        Ok(SqlStore {
            writer: writer::Writer::start(write.clone()),
            write,
            read,
            health,
        })
    }
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Copies what the WAL holds into the database file, on a read connection, for as long as
/// the store lives (`alive`): the write connection's own checkpoints are off, so the writer
/// neither copies pages nor waits for the file's fsync at a commit. PASSIVE waits for
/// nobody: what a reader still needs stays in the WAL for the next one. A new write
/// transaction starts the WAL over once a checkpoint has copied it all.
async fn checkpoints(read: sqlx::SqlitePool, alive: std::sync::Weak<WriteHealth>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&read)
            .await
        {
            tracing::debug!(%error, "checkpointing the WAL failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ListFilter, Store};
    use taskplane_api::TaskStatus;

    /// A store on a new file in a temporary directory (kept while the directory lives), not
    /// migrated yet.
    async fn open_temp() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("taskd.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        (dir, store)
    }

    /// What SQLite plans for a page of the list with `filter`, one step a line.
    async fn plan(store: &SqliteStore, filter: &ListFilter) -> String {
        let statement = format!("EXPLAIN QUERY PLAN {}", sql::list(filter, true, None, true));
        let mut query =
            sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(statement.clone()));
        if filter.queue.is_some() {
            query = query.bind("default");
        }
        query = query
            .bind("01900000-0000-7000-8000-000000000000")
            .bind(50_i64);
        let rows = query.fetch_all(&store.read).await.expect(&statement);
        rows.into_iter()
            .map(|row| row.3)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Migrations run with foreign keys off (a rebuilt table would take its rows' logs and
    /// labels with it); the write connection has them on again after.
    #[tokio::test]
    async fn migrating_leaves_foreign_keys_on() {
        let (_dir, store) = open_temp().await;
        assert_eq!(
            store.migrate().await.expect("migrate").len(),
            MIGRATIONS.len()
        );
        let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.write)
            .await
            .expect("pragma");
        assert_eq!(on, 1);
    }

    /// A page of one status reads the index that holds that status: finished tasks (which
    /// accumulate) in id order, without a sort; running and due ones whole, then sorted;
    /// queued ones through the queue's ready index, or ids newest first (where a backlog
    /// is). No page scans the whole table.
    #[tokio::test]
    async fn a_page_of_one_status_reads_its_index() {
        let (_dir, store) = open_temp().await;
        store.migrate().await.expect("migrate");
        let finished = "tasks_finished_status (status=? AND id<?)";
        let due = "SCAN tasks USING INDEX tasks_due";
        let by_id = "sqlite_autoindex_tasks_1 (id<?)";
        let cases = [
            (Some(TaskStatus::Succeeded), finished),
            (Some(TaskStatus::Failed), finished),
            (Some(TaskStatus::Cancelled), finished),
            (
                Some(TaskStatus::Running),
                "SCAN tasks USING INDEX tasks_leases",
            ),
            (Some(TaskStatus::Scheduled), due),
            (Some(TaskStatus::Retrying), due),
            (Some(TaskStatus::Queued), by_id),
            (None, by_id),
        ];
        for (status, reads) in cases {
            let filter = ListFilter {
                status,
                ..Default::default()
            };
            let plan = plan(&store, &filter).await;
            assert!(plan.contains(reads), "{status:?}: {plan}");
            let sorted = plan.contains("TEMP B-TREE");
            assert_eq!(sorted, reads.starts_with("SCAN"), "{status:?}: {plan}");
        }
        let filter = ListFilter {
            status: Some(TaskStatus::Queued),
            queue: Some("default".into()),
            ..Default::default()
        };
        let plan = plan(&store, &filter).await;
        assert!(
            plan.contains("tasks_ready (queue=?)"),
            "queued in a queue: {plan}"
        );
    }
}
