//! SQLite's writer: the hot writes (submits, settles and claims) in rounds.
//!
//! sqlx runs every SQLite statement on the connection's own thread, handed over a channel,
//! and sends each row back the same way: on the embedded batch workload those hand-offs
//! (thread wake-ups, binds, row copies) took more of the writer's time than SQLite did, and
//! each statement committed on its own, writing the pages it touched to the WAL again.
//!
//! Here the writes that are waiting make one round: one transaction on the write
//! connection, run on this side of it directly (sqlx lends its raw handle, `lock_handle`,
//! and rusqlite drives it over the same libsqlite3-sys), statement by statement with no
//! hop between them, committed once. Row by row is the fastest shape for SQLite without
//! hops (a prepared single-row statement, stepped per row). A round starts as soon as the
//! last one ends, so an idle write costs one short transaction and rounds grow with the
//! load; the API's submits and the worker's outcomes come here straight
//! ([`Store::groups_writes`](crate::store::Store::groups_writes)). Nobody is answered
//! before the round commits.
//!
//! The round writes its own change-feed row, one for all its events, with the row
//! triggers off for the session (`SQLITE_DBCONFIG_ENABLE_TRIGGER`, a setting of the
//! connection): a trigger wrote a row per change, which was half of SQLite's own cost per
//! task and as many rows for the event hub to read. Every other write on the connection
//! still gets its events from the triggers.

use rusqlite::types::ToSql;
use sqlx::Sqlite;
use sqlx::pool::Pool;
use taskplane_api::TaskStatus;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::lifecycle::Settlement;
use crate::domain::validate::NewTask;
use crate::store::decode::{self, TaskRow};
use crate::store::{ClaimedTask, Result, StoreError, StoredTask, next_group, sql, take_waiting};

/// The most rows of work one round takes (tasks inserted, settled or asked for).
const MAX_ROUND_ROWS: usize = 1024;
/// Writes that may wait for a round before a caller waits to queue.
const BACKLOG: usize = 4096;

/// The handle the store holds; the round loop ends when it is dropped.
pub struct Writer {
    ops: mpsc::Sender<Op>,
}

struct Op {
    work: Work,
    reply: oneshot::Sender<Result<Done>>,
}

enum Work {
    Insert(Vec<NewTask>),
    Settle {
        worker: String,
        items: Vec<(Uuid, Settlement)>,
        now: i64,
    },
    Claim {
        worker: String,
        queues: Vec<String>,
        /// A JSON array of the kinds to claim, or any kind.
        kinds: Option<String>,
        limit: u32,
        now: i64,
        lease_until: i64,
    },
    ClaimIds {
        worker: String,
        ids: Vec<Uuid>,
        kinds: Option<String>,
        now: i64,
        lease_until: i64,
    },
}

enum Done {
    Inserted(Vec<(StoredTask, bool)>),
    Settled(Vec<bool>),
    Claimed(Vec<ClaimedTask>),
}

impl Writer {
    /// Starts the round loop on the write pool (one connection).
    pub fn start(pool: Pool<Sqlite>) -> Writer {
        let (ops, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(rounds(pool, rx));
        Writer { ops }
    }

    async fn call(&self, work: Work) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        self.ops
            .send(Op { work, reply })
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Inserts these tasks (see [`Store::insert`](crate::store::Store::insert)).
    pub async fn insert(&self, tasks: Vec<NewTask>) -> Result<Vec<(StoredTask, bool)>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        match self.call(Work::Insert(tasks)).await? {
            Done::Inserted(rows) => Ok(rows),
            _ => unreachable!("an insert is answered with its rows"),
        }
    }

    /// Settles these attempts (see [`Store::settle_many`](crate::store::Store::settle_many)).
    pub async fn settle(
        &self,
        worker: &str,
        items: &[(Uuid, Settlement)],
        now: i64,
    ) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let work = Work::Settle {
            worker: worker.to_owned(),
            items: items.to_vec(),
            now,
        };
        match self.call(work).await? {
            Done::Settled(settled) => Ok(settled),
            _ => unreachable!("a settle is answered with what it settled"),
        }
    }

    /// Claims up to `limit` ready tasks of `queues`, most urgent first.
    pub async fn claim(
        &self,
        worker: &str,
        queues: &[String],
        kinds: Option<&[String]>,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedTask>> {
        if limit == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        self.claim_work(Work::Claim {
            worker: worker.to_owned(),
            queues: queues.to_vec(),
            kinds: kinds_json(kinds)?,
            limit,
            now,
            lease_until,
        })
        .await
    }

    /// Claims these tasks where they are still queued.
    pub async fn claim_ids(
        &self,
        worker: &str,
        ids: &[Uuid],
        kinds: Option<&[String]>,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedTask>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.claim_work(Work::ClaimIds {
            worker: worker.to_owned(),
            ids: ids.to_vec(),
            kinds: kinds_json(kinds)?,
            now,
            lease_until,
        })
        .await
    }

    async fn claim_work(&self, work: Work) -> Result<Vec<ClaimedTask>> {
        match self.call(work).await? {
            Done::Claimed(tasks) => Ok(tasks),
            _ => unreachable!("a claim is answered with its tasks"),
        }
    }
}

impl Work {
    /// Rows of work, for the size of a round.
    fn weight(&self) -> usize {
        match self {
            Work::Insert(tasks) => tasks.len(),
            Work::Settle { items, .. } => items.len(),
            Work::Claim { limit, .. } => *limit as usize,
            Work::ClaimIds { ids, .. } => ids.len(),
        }
    }

    /// Where in a round this runs: settles first (they free the slots the claims fill),
    /// then submits, then claims (which so find the round's own submits).
    fn rank(&self) -> u8 {
        match self {
            Work::Settle { .. } => 0,
            Work::Insert(_) => 1,
            Work::Claim { .. } | Work::ClaimIds { .. } => 2,
        }
    }

    /// Runs this write; `settled` is the latest time of the round's settles, which ran
    /// first: a claim's time is never before it, so a task freed by a parent settled in
    /// the same round does not start, on the record, before that parent finished (a claim
    /// may have read the clock just before the settle did).
    fn run(&self, db: &rusqlite::Connection, feed: &mut Feed, settled: i64) -> Result<Done> {
        match self {
            Work::Insert(tasks) => insert(db, feed, tasks).map(Done::Inserted),
            Work::Settle { worker, items, now } => {
                settle(db, feed, worker, items, *now).map(Done::Settled)
            }
            Work::Claim {
                worker,
                queues,
                kinds,
                limit,
                now,
                lease_until,
            } => {
                let lease = Lease::new(worker, *lease_until, (*now).max(settled), kinds);
                claim(db, feed, &lease, queues, *limit).map(Done::Claimed)
            }
            Work::ClaimIds {
                worker,
                ids,
                kinds,
                now,
                lease_until,
            } => {
                let lease = Lease::new(worker, *lease_until, (*now).max(settled), kinds);
                claim_ids(db, feed, &lease, ids).map(Done::Claimed)
            }
        }
    }
}

/// Takes whatever writes are waiting, for good: a session of rounds per wake-up.
async fn rounds(pool: Pool<Sqlite>, mut rx: mpsc::Receiver<Op>) {
    while let Some(first) = next_group(&mut rx, MAX_ROUND_ROWS, |op| op.work.weight()).await {
        if let Err((error, ops)) = session(&pool, &mut rx, first).await {
            // The connection could not be had (the pool timed out, the handle's thread is
            // gone): every write of the session is told so.
            tracing::debug!(%error, writes = ops.len(), "a write session could not start");
            answer_all(ops, &error);
        }
    }
}

/// Rounds back to back on the write connection while writes keep coming, for at most
/// [`SESSION`]: the connection stays lent out of sqlx's thread and the prepared statements
/// stay prepared from one round to the next. Then the connection goes back to the pool, so
/// the other writes (renewals, cancels, logs) wait at most that long; the statements are
/// finalized first (sqlx may close the connection once it has it back). Answers `Err` with
/// the writes not begun when the connection could not be had.
async fn session(
    pool: &Pool<Sqlite>,
    rx: &mut mpsc::Receiver<Op>,
    first: Vec<Op>,
) -> std::result::Result<(), (StoreError, Vec<Op>)> {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => return Err((error.into(), first)),
    };
    let mut first = Some(first);
    let lent = match conn.lock_handle().await {
        Ok(mut handle) => {
            let raw = handle.as_raw_handle().as_ptr();
            let first = first.take().unwrap_or_default();
            // SAFETY: the handle is locked out of sqlx's connection thread until `handle`
            // drops, after this call; the connection made from it here does not close it,
            // and finalizes its own statements when it drops, inside the call (a panic
            // included).
            #[allow(unsafe_code)]
            let session = std::panic::AssertUnwindSafe(|| unsafe { on_handle(raw, rx, first) });
            // A panic in a round (a bug) must not stop the writer for good, nor hand sqlx a
            // connection inside the round's transaction: the connection is closed, which
            // rolls it back, and the writes of the session are told their writer stopped.
            Ok(match std::panic::catch_unwind(|| blocking(session)) {
                Ok(clean) => clean,
                Err(_) => {
                    tracing::error!(
                        "a write round panicked; its writes are lost and the connection is closed"
                    );
                    false
                }
            })
        }
        Err(error) => Err(error),
    };
    let clean = match lent {
        Ok(clean) => clean,
        Err(error) => {
            let _ = conn.close().await;
            return Err((error.into(), first.take().unwrap_or_default()));
        }
    };
    if !clean {
        // A failed statement or COMMIT that leaves a transaction open (or the triggers off)
        // on the pool's one connection would spoil every later write: close it instead.
        tracing::warn!(
            "closing the SQLite write connection: a failed write round left it unusable"
        );
        let _ = conn.close().await;
    }
    Ok(())
}

/// The longest a session keeps the write connection.
const SESSION: std::time::Duration = std::time::Duration::from_millis(5);

/// Runs `f` where it may block: on a multi-threaded runtime the thread's other tasks move
/// elsewhere meanwhile; on a current-thread runtime (tests) it simply runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A session on a raw handle: `first`, then whatever has arrived meanwhile, round after
/// round. Answers whether the connection is fit for sqlx again (out of any transaction,
/// triggers on).
///
/// # Safety
/// `raw` must be an open connection that nothing else uses until this returns.
#[allow(unsafe_code)]
unsafe fn on_handle(
    raw: *mut rusqlite::ffi::sqlite3,
    rx: &mut mpsc::Receiver<Op>,
    first: Vec<Op>,
) -> bool {
    // SAFETY: as the caller promises; `from_handle` borrows the connection (it is not
    // closed when `db` drops).
    let db = match unsafe { rusqlite::Connection::from_handle(raw) } {
        Ok(db) => db,
        Err(error) => {
            answer_all(first, &error.into());
            return true;
        }
    };
    // A statement per batch shape, kept for the session.
    db.set_prepared_statement_cache_capacity(64);
    // Plans that do not depend on bound values: by default SQLite plans a bound LIMIT by its
    // value, so a claim whose limit differs from the last one would be prepared again. Set
    // once per connection (a change expires every prepared statement).
    use rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG as STABLE_PLANS;
    if !db.db_config(STABLE_PLANS).unwrap_or(true) {
        let _ = db.set_db_config(STABLE_PLANS, true);
    }
    // The writer writes the change feed itself, a row per round (see `Feed`); the
    // triggers stay on for every other statement on this connection.
    use rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER as TRIGGERS;
    if let Err(error) = db.set_db_config(TRIGGERS, false) {
        answer_all(first, &error.into());
        return db.set_db_config(TRIGGERS, true).unwrap_or(false);
    }
    let started = std::time::Instant::now();
    let mut ops = first;
    let clean = loop {
        if !round(&db, ops) {
            break false;
        }
        if started.elapsed() >= SESSION {
            break true;
        }
        ops = Vec::new();
        take_waiting(rx, &mut ops, 0, MAX_ROUND_ROWS, |op| op.work.weight());
        if ops.is_empty() {
            break true;
        }
    };
    let triggers = db.set_db_config(TRIGGERS, true).unwrap_or(false);
    clean && triggers
}

/// One round: these writes in one transaction, each answered once it has committed. A
/// round that fails is run again one write at a time, so each write gets its own answer
/// and one bad write cannot fail the others. Answers whether the connection is out of any
/// transaction afterwards.
fn round(db: &rusqlite::Connection, ops: Vec<Op>) -> bool {
    let (works, replies): (Vec<Work>, Vec<_>) =
        ops.into_iter().map(|op| (op.work, op.reply)).unzip();
    let done = in_transaction(db, &works);
    if !rolled_back(db) {
        refuse_all(replies);
        return false;
    }
    match done {
        Ok(done) => {
            for (reply, done) in replies.into_iter().zip(done) {
                let _ = reply.send(Ok(done));
            }
        }
        // The database's state (busy, full, unwritable) fails every write alike: each is
        // told at once rather than waiting its own turn to fail the same way.
        Err(error) if works.len() == 1 || error.is_unavailable() => {
            for reply in replies {
                let _ = reply.send(Err(again(&error)));
            }
        }
        Err(error) => {
            tracing::debug!(%error, writes = works.len(), "a write round failed; running its writes one by one");
            let mut replies = replies.into_iter();
            for work in &works {
                let Some(reply) = replies.next() else { break };
                let alone = in_transaction(db, std::slice::from_ref(work));
                if !rolled_back(db) {
                    refuse_all(std::iter::once(reply).chain(replies));
                    return false;
                }
                let _ = reply.send(alone.map(|mut done| done.pop().expect("one write")));
            }
        }
    }
    true
}

/// Answers writes that cannot run: the connection was left inside a failed transaction.
fn refuse_all(replies: impl IntoIterator<Item = oneshot::Sender<Result<Done>>>) {
    for reply in replies {
        let _ = reply.send(Err(StoreError::WritesRefused(
            "the SQLite write connection was left inside a failed transaction".into(),
        )));
    }
}

/// The same failure again, for another write that met it: SQLite's own code and message,
/// or the pool's state, so that each write's caller tells busy from refused alike.
fn again(error: &StoreError) -> StoreError {
    match error {
        StoreError::Database(sqlx::Error::Database(db)) => {
            StoreError::Database(sqlx::Error::Database(Box::new(LiteError {
                code: db.code().and_then(|code| code.parse().ok()).unwrap_or(1),
                message: db.message().to_owned(),
            })))
        }
        StoreError::Database(sqlx::Error::PoolTimedOut) => {
            StoreError::Database(sqlx::Error::PoolTimedOut)
        }
        StoreError::Database(sqlx::Error::PoolClosed) => {
            StoreError::Database(sqlx::Error::PoolClosed)
        }
        StoreError::Database(sqlx::Error::WorkerCrashed) => {
            StoreError::Database(sqlx::Error::WorkerCrashed)
        }
        StoreError::Corrupt { id, reason } => StoreError::Corrupt {
            id: id.clone(),
            reason: reason.clone(),
        },
        StoreError::Stopped => StoreError::Stopped,
        other => StoreError::WritesRefused(other.reason()),
    }
}

/// Ends a failed transaction, if one is open; false if the connection stays inside one.
fn rolled_back(db: &rusqlite::Connection) -> bool {
    db.is_autocommit() || (db.execute_batch("ROLLBACK").is_ok() && db.is_autocommit())
}

fn answer_all(ops: Vec<Op>, error: &StoreError) {
    for op in ops {
        let _ = op.reply.send(Err(again(error)));
    }
}

fn in_transaction(db: &rusqlite::Connection, works: &[Work]) -> Result<Vec<Done>> {
    // IMMEDIATE takes the write lock at once: another process on the file (an api beside
    // a worker) makes this wait on the busy timeout, never fail halfway.
    db.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let mut order: Vec<usize> = (0..works.len()).collect();
    order.sort_by_key(|&i| works[i].rank());
    let mut done: Vec<Option<Done>> = works.iter().map(|_| None).collect();
    let mut feed = Feed::default();
    let settled = works
        .iter()
        .filter_map(|work| match work {
            Work::Settle { now, .. } => Some(*now),
            _ => None,
        })
        .max()
        .unwrap_or(i64::MIN);
    for i in order {
        done[i] = Some(works[i].run(db, &mut feed, settled)?);
    }
    feed.write(db)?;
    db.prepare_cached("COMMIT")?.execute([])?;
    Ok(done
        .into_iter()
        .map(|d| d.expect("every write ran"))
        .collect())
}

fn insert(
    db: &rusqlite::Connection,
    feed: &mut Feed,
    tasks: &[NewTask],
) -> Result<Vec<(StoredTask, bool)>> {
    let mut insert = db.prepare_cached(&sql::insert_rows(1, sql::Params::InOrder, false))?;
    let mut out = Vec::with_capacity(tasks.len());
    let mut events = Vec::new();
    for task in tasks {
        let retry_base = task.retry_base_ms.map(|ms| ms as i64);
        let retry_max = task.retry_max_ms.map(|ms| ms as i64);
        let workflow_id = task.workflow_id.map(|id| id.to_string());
        let key_limit = task.concurrency_limit.map(i64::from);
        let values: [&dyn ToSql; sql::INSERT_PARAMS] = [
            &task.id.to_string(),
            &task.kind,
            &task.queue,
            &task.priority,
            &task.payload,
            &task.status.as_str(),
            &task.max_attempts,
            &(task.timeout_secs as i64),
            &task.run_at_ms,
            &task.created_at_ms,
            // updated_at starts as created_at.
            &task.created_at_ms,
            &task.idempotency_key,
            &task.labels,
            &retry_base,
            &retry_max,
            &task.published_at,
            &workflow_id,
            &task.step,
            &task.concurrency_key,
            &key_limit,
            &task.trace_parent,
        ];
        if insert.execute(&values[..])? == 1 {
            if let Some(audit) = &task.audit {
                // `$1`…`$5` are bound in order of appearance, as positional parameters.
                let mut record = db.prepare_cached(sql::INSERT_AUDIT)?;
                record.execute(rusqlite::params![
                    task.created_at_ms,
                    audit.actor,
                    audit.action,
                    audit.target,
                    audit.details
                ])?;
            }
            if !task.label_pairs.is_empty() {
                let mut label = db.prepare_cached(&sql::insert_labels(1))?;
                let id = task.id.to_string();
                for (key, value) in &task.label_pairs {
                    label.execute([&id, key, value])?;
                }
            }
            events.push(Event {
                id: task.id,
                event: "created",
                status: task.status.as_str(),
                attempts: 0,
                worker: None,
                at: task.created_at_ms,
                kind: &task.kind,
                queue: &task.queue,
                priority: task.priority,
                max_attempts: task.max_attempts,
                created_at: task.created_at_ms,
                workflow: task.workflow_id.map(|id| id.to_string()),
            });
            out.push((StoredTask::from_new(task), true));
        } else {
            // Skipped: its idempotency key is taken (by a committed task, or one of this
            // round's), and that task is the answer.
            let mut first = db.prepare_cached(&sql::select_by_key())?;
            let mut rows = first.query([&task.idempotency_key])?;
            let row = rows.next()?.ok_or_else(|| {
                decode::corrupt(&task.id.to_string(), "skipped for a key no task holds")
            })?;
            out.push((decode::task(&LiteRow(row))?, false));
        }
    }
    feed.add(events)?;
    Ok(out)
}

fn settle(
    db: &rusqlite::Connection,
    feed: &mut Feed,
    worker: &str,
    items: &[(Uuid, Settlement)],
    now: i64,
) -> Result<Vec<bool>> {
    let mut settled = Vec::with_capacity(items.len());
    // Each settled task: its id, its new status and what its row answers for the event.
    let mut changed: Vec<(Uuid, TaskStatus, Unchanged)> = Vec::with_capacity(items.len());
    for (task, settlement) in items {
        let id = task.to_string();
        let (statement, text, at) = match settlement {
            Settlement::Succeeded { result } => (&SETTLES.succeeded, Some(result), None),
            Settlement::Retrying { error, run_at_ms } => {
                (&SETTLES.retrying, Some(error), Some(*run_at_ms))
            }
            Settlement::Failed { error } => (&SETTLES.failed, Some(error), None),
            Settlement::Cancelled => (&SETTLES.cancelled, None, None),
            Settlement::Requeued => (&SETTLES.requeued, None, None),
        };
        let mut named: Vec<(&str, &dyn ToSql)> = vec![("$1", &id), ("$2", &worker), ("$3", &now)];
        if let Some(text) = &text {
            named.push(("$4", text));
        }
        if let Some(at) = &at {
            named.push(("$5", at));
        }
        let mut update = db.prepare_cached(statement)?;
        let mut rows = update.query(named.as_slice())?;
        let Some(row) = rows.next()? else {
            settled.push(false);
            continue;
        };
        changed.push((*task, settlement.status(), Unchanged::read(row, 0)?));
        settled.push(true);
    }
    let finished: Vec<(Uuid, TaskStatus, Option<String>)> = changed
        .iter()
        .filter(|(_, status, row)| row.has_children && status.is_terminal())
        .map(|(id, status, row)| (*id, *status, row.step.clone()))
        .collect();
    let events = changed
        .iter()
        .map(|(id, status, row)| row.event(*id, status.as_str(), Some(worker), now))
        .collect();
    feed.add(events)?;
    if !finished.is_empty() {
        resolve_children(db, feed, finished, now)?;
    }
    Ok(settled)
}

/// Settles the waiting children of tasks that just finished, as migration 6's triggers do
/// for every other write (the writer runs with triggers off): a child whose parents have
/// all succeeded is ready; the waiting children of a failed or cancelled parent are
/// cancelled, and theirs after them.
fn resolve_children(
    db: &rusqlite::Connection,
    feed: &mut Feed,
    mut finished: Vec<(Uuid, TaskStatus, Option<String>)>,
    now: i64,
) -> Result<()> {
    // Each child changed: its id, its new status and its event's fields.
    let mut rows: Vec<(Uuid, String, Unchanged)> = Vec::new();
    while let Some((parent, status, step)) = finished.pop() {
        let parent_id = parent.to_string();
        let (statement, error) = if status == TaskStatus::Succeeded {
            (&CHILDREN.promote, None)
        } else {
            (
                &CHILDREN.doom,
                Some(sql::dependency_failed(&parent_id, step.as_deref(), status)),
            )
        };
        let mut update = db.prepare_cached(statement)?;
        let mut named: Vec<(&str, &dyn ToSql)> = vec![("$1", &parent_id), ("$2", &now)];
        if let Some(error) = &error {
            named.push(("$3", error));
        }
        let mut found = update.query(named.as_slice())?;
        while let Some(row) = found.next()? {
            let id = decode::parse_id(&row.get::<_, String>(0)?)?;
            let status: String = row.get(1)?;
            let child = Unchanged::read(row, 2)?;
            if status == "cancelled" && child.has_children {
                finished.push((id, TaskStatus::Cancelled, child.step.clone()));
            }
            rows.push((id, status, child));
        }
    }
    let events = rows
        .iter()
        .map(|(id, status, child)| child.event(*id, status, None, now))
        .collect();
    feed.add(events)?;
    if rows.iter().any(|(_, status, _)| status != "cancelled") {
        READY.notify_one();
    }
    Ok(())
}

/// The statements that settle a finished task's waiting children (`$1` the parent, `$2`
/// now), each reading back the child's id, new status and [`UNCHANGED`].
struct Children {
    /// The ready children of a parent that succeeded (as the trigger
    /// `tasks_children_ready`).
    promote: String,
    /// The waiting children of a parent that failed or was cancelled (`$3` says so),
    /// cancelled (as the trigger `tasks_children_doomed`).
    doom: String,
}

static CHILDREN: std::sync::LazyLock<Children> = std::sync::LazyLock::new(|| Children {
    promote: format!(
        "UPDATE tasks SET
             status = CASE WHEN run_at > $2 THEN 'scheduled' ELSE 'queued' END,
             run_at = MAX(run_at, $2), updated_at = $2, published_at = NULL
         WHERE status = 'waiting'
           AND id IN (SELECT child FROM task_deps WHERE parent = $1)
           AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks p ON p.id = d.parent
                           WHERE d.child = tasks.id AND p.status <> 'succeeded')
         RETURNING id, status, {UNCHANGED}"
    ),
    doom: format!(
        "UPDATE tasks SET status = 'cancelled', finished_at = $2, updated_at = $2,
             last_error = $3
         WHERE status = 'waiting' AND id IN (SELECT child FROM task_deps WHERE parent = $1)
         RETURNING id, status, {UNCHANGED}"
    ),
});

/// Woken when the writer made tasks ready by settling their parents (see
/// `Lite::listen_ready`).
pub static READY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The columns [`Unchanged`] is read from, in its order.
const UNCHANGED: &str =
    "attempts, kind, queue, priority, max_attempts, created_at, workflow_id, has_children, step";

/// What a settle (or a child's) reads back of its task for the event ([`UNCHANGED`]).
struct Unchanged {
    attempts: i64,
    kind: String,
    queue: String,
    priority: i32,
    max_attempts: u32,
    created_at: i64,
    workflow: Option<String>,
    has_children: bool,
    step: Option<String>,
}

impl Unchanged {
    /// Reads [`UNCHANGED`] from `row`, starting at column `first`.
    fn read(row: &rusqlite::Row<'_>, first: usize) -> Result<Unchanged> {
        Ok(Unchanged {
            attempts: row.get(first)?,
            kind: row.get(first + 1)?,
            queue: row.get(first + 2)?,
            priority: row.get(first + 3)?,
            max_attempts: row.get(first + 4)?,
            created_at: row.get(first + 5)?,
            workflow: row.get(first + 6)?,
            has_children: row.get(first + 7)?,
            step: row.get(first + 8)?,
        })
    }

    /// The event of task `id` reaching `status` at `at`.
    fn event<'a>(
        &'a self,
        id: Uuid,
        status: &'a str,
        worker: Option<&'a str>,
        at: i64,
    ) -> Event<'a> {
        Event {
            id,
            event: status,
            status,
            attempts: self.attempts,
            worker,
            at,
            kind: &self.kind,
            queue: &self.queue,
            priority: self.priority,
            max_attempts: self.max_attempts,
            created_at: self.created_at,
            workflow: self.workflow.clone(),
        }
    }
}

/// The settle statements (see `sql`), each reading back what the task's event needs;
/// written once.
struct Settles {
    succeeded: String,
    retrying: String,
    failed: String,
    cancelled: String,
    requeued: String,
}

static SETTLES: std::sync::LazyLock<Settles> = std::sync::LazyLock::new(|| {
    let returning = |statement: String| format!("{statement} RETURNING {UNCHANGED}");
    Settles {
        succeeded: returning(sql::settle_succeeded()),
        retrying: returning(sql::settle_retrying()),
        failed: returning(sql::settle_failed()),
        cancelled: returning(sql::settle_cancelled()),
        requeued: returning(sql::settle_requeued()),
    }
});

fn claim(
    db: &rusqlite::Connection,
    feed: &mut Feed,
    lease: &Lease<'_>,
    queues: &[String],
    limit: u32,
) -> Result<Vec<ClaimedTask>> {
    // With one queue, `queue = $4` lets SQLite walk the `tasks_ready` index in priority
    // order and stop at the limit; a list (`json_each`) makes it sort every ready task.
    let (filter, gate, queues) = match queues {
        [queue] => ("queue = $4", sql::ungated("$4"), queue.clone()),
        _ => (
            "queue IN (SELECT value FROM json_each($4))",
            sql::ungated("tasks.queue"),
            serde_json::to_string(queues).map_err(|e| decode::corrupt("-", e))?,
        ),
    };
    // By rowid: `tasks_ready` holds each row's rowid, so the update finds the rows it picked
    // straight, not again through the id index.
    let kind = kind_filter(lease);
    let statement = format!(
        "UPDATE tasks SET {set}
         WHERE rowid IN (
             SELECT rowid FROM tasks
             WHERE status = 'queued' AND {filter}{kind}{gate}
             ORDER BY priority DESC, run_at, id
             LIMIT $5)
           AND status = 'queued'
         RETURNING {}",
        sql::CLAIM_COLUMNS,
        set = sql::CLAIM_SET
    );
    claimed(db, feed, &statement, lease, &queues, Some(limit))
}

fn claim_ids(
    db: &rusqlite::Connection,
    feed: &mut Feed,
    lease: &Lease<'_>,
    ids: &[Uuid],
) -> Result<Vec<ClaimedTask>> {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let ids = serde_json::to_string(&ids).map_err(|e| decode::corrupt("-", e))?;
    let kind = kind_filter(lease);
    let statement = format!(
        "UPDATE tasks SET {set}
         WHERE id IN (SELECT value FROM json_each($4)) AND status = 'queued'{kind}{gate}
         RETURNING {}",
        sql::CLAIM_COLUMNS,
        set = sql::CLAIM_SET,
        gate = sql::ungated("tasks.queue")
    );
    claimed(db, feed, &statement, lease, &ids, None)
}

/// Who claims, until when, when, and which kinds (a JSON array; any when None).
#[derive(Clone, Copy)]
struct Lease<'a> {
    worker: &'a str,
    until: i64,
    now: i64,
    kinds: &'a Option<String>,
}

impl<'a> Lease<'a> {
    fn new(worker: &'a str, until: i64, now: i64, kinds: &'a Option<String>) -> Lease<'a> {
        Lease {
            worker,
            until,
            now,
            kinds,
        }
    }
}

/// The condition on the kinds a claim takes (`$6`), or none: a statement that claims any
/// kind does not name them, so its plan is the one it always had.
fn kind_filter(lease: &Lease<'_>) -> &'static str {
    if lease.kinds.is_some() {
        " AND kind IN (SELECT value FROM json_each($6))"
    } else {
        ""
    }
}

/// The kinds a claim takes, as the JSON array its statement reads.
fn kinds_json(kinds: Option<&[String]>) -> Result<Option<String>> {
    kinds
        .map(|kinds| serde_json::to_string(kinds).map_err(|e| decode::corrupt("-", e)))
        .transpose()
}

/// Runs a claim (`$1` the worker, `$2` its lease's end, `$3` now, `$4` which tasks, `$5`
/// how many at most, `$6` of which kinds).
fn claimed(
    db: &rusqlite::Connection,
    feed: &mut Feed,
    statement: &str,
    lease: &Lease<'_>,
    which: &str,
    limit: Option<u32>,
) -> Result<Vec<ClaimedTask>> {
    let Lease {
        worker,
        until: lease_until,
        now,
        kinds,
    } = *lease;
    let mut claim = db.prepare_cached(statement)?;
    let mut named: Vec<(&str, &dyn ToSql)> = vec![
        ("$1", &worker),
        ("$2", &lease_until),
        ("$3", &now),
        ("$4", &which),
    ];
    if let Some(kinds) = kinds {
        named.push(("$6", kinds));
    }
    if let Some(limit) = &limit {
        named.push(("$5", limit));
    }
    let mut rows = claim.query(named.as_slice())?;
    let mut claimed = Vec::new();
    while let Some(row) = rows.next()? {
        claimed.push(decode::claimed(&LiteRow(row))?);
    }
    drop(rows);
    let mut events = Vec::new();
    for (priority, task) in &claimed {
        events.push(Event {
            id: task.id,
            event: "started",
            status: "running",
            attempts: i64::from(task.attempt),
            worker: Some(worker),
            at: now,
            kind: &task.kind,
            queue: &task.queue,
            priority: *priority,
            max_attempts: task.max_attempts,
            created_at: task.created_at,
            workflow: task.workflow_id.clone(),
        });
    }
    feed.add(events)?;
    Ok(decode::most_urgent_first(claimed))
}

/// One change-feed event, in the row's wire shape (see `decode::event_row`).
struct Event<'a> {
    id: Uuid,
    event: &'a str,
    status: &'a str,
    attempts: i64,
    worker: Option<&'a str>,
    at: i64,
    kind: &'a str,
    queue: &'a str,
    priority: i32,
    max_attempts: u32,
    created_at: i64,
    /// A workflow step's workflow id.
    workflow: Option<String>,
}

/// The change-feed row of one round: its writes' events as one JSON array, each write's in
/// task id order and the writes in the order they ran, the shape PostgreSQL's statement
/// triggers write (an event's id is the row's seq times
/// [`EVENTS_PER_ROW`](crate::store::EVENTS_PER_ROW) plus its place), so a round of a
/// hundred tasks is one feed row instead of a hundred.
#[derive(Default)]
struct Feed {
    json: Vec<u8>,
    events: usize,
    at: i64,
}

impl Feed {
    /// Adds one write's events.
    fn add(&mut self, mut events: Vec<Event<'_>>) -> Result<()> {
        events.sort_by_key(|event| event.id);
        for e in events {
            self.json.push(if self.events == 0 { b'[' } else { b',' });
            self.events += 1;
            self.at = self.at.max(e.at);
            let wire = (
                e.id.to_string(),
                e.event,
                e.status,
                e.attempts,
                e.worker,
                e.at,
                e.kind,
                e.queue,
                e.priority,
                e.max_attempts,
                e.created_at,
            );
            let written = match &e.workflow {
                None => serde_json::to_writer(&mut self.json, &wire),
                Some(workflow) => {
                    let (a, b, c, d, f, g, h, i, j, k, l) = wire;
                    let step = (a, b, c, d, f, g, h, i, j, k, l, None::<&str>, workflow);
                    serde_json::to_writer(&mut self.json, &step)
                }
            };
            written.map_err(|e| decode::corrupt("-", e))?;
        }
        Ok(())
    }

    fn write(mut self, db: &rusqlite::Connection) -> Result<()> {
        if self.events == 0 {
            return Ok(());
        }
        self.json.push(b']');
        let events = String::from_utf8(self.json).map_err(|e| decode::corrupt("-", e))?;
        db.prepare_cached("INSERT INTO task_events (at, events) VALUES (?1, ?2)")?
            .execute(rusqlite::params![self.at, events])?;
        Ok(())
    }
}

/// A row read on the writer's connection, for the shared decoding.
struct LiteRow<'a>(&'a rusqlite::Row<'a>);

impl TaskRow for LiteRow<'_> {
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.0.get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.0.get(column)?)
    }
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.0.get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.0.get(column)?)
    }
    fn small(&self, column: &str) -> Result<i32> {
        Ok(self.0.get(column)?)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.0.get(column)?)
    }
}

/// SQLite's own failure, in the shape sqlx reports it, so that the store tells a full disk
/// or a busy file from a bad statement the same way on either path.
#[derive(Debug)]
struct LiteError {
    code: i32,
    message: String,
}

impl std::fmt::Display for LiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for LiteError {}

impl sqlx::error::DatabaseError for LiteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        match self.code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                sqlx::error::ErrorKind::ForeignKeyViolation
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        match error {
            rusqlite::Error::SqliteFailure(failure, message) => {
                StoreError::Database(sqlx::Error::Database(Box::new(LiteError {
                    code: failure.extended_code,
                    message: message.unwrap_or_else(|| failure.to_string()),
                })))
            }
            // A value of the wrong type or out of range: a row this version cannot read.
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt {
                id: "-".to_owned(),
                reason: error.to_string(),
            },
            // A statement this code got wrong (a parameter or column name).
            other => StoreError::Database(sqlx::Error::InvalidArgument(other.to_string())),
        }
    }
}
