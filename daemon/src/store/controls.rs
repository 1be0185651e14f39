//! Queue controls, concurrency keys and the audit log in the store: a queue's settings, the
//! gated claim (see [`crate::domain::gates`]) and the append-only record of operator actions.

use std::collections::{HashMap, HashSet};

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::decode::{self, TaskRow};
use super::{BoxFuture, ClaimedTask, Dialect, Result, SqlStore, sql};
use crate::domain::gates::{self, Candidate, Gate, Running};

/// An operator action, written in the transaction of the change it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who: the token's subject, or `anonymous@<peer>` when auth is off.
    pub actor: String,
    /// What, e.g. `cancel`, `dlq.purge`, `queue.pause`.
    pub action: String,
    /// On what: a task id, a queue, a schedule's name…
    pub target: String,
    /// The request's relevant fields, as a JSON object.
    pub details: String,
}

/// An entry of the audit log as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub entry: AuditEntry,
}

/// Which entries of the audit log to read: newest first, older than `before` (a `seq`).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// A change to a queue's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueChange {
    pub paused: Option<bool>,
    pub max_running: Option<Option<u32>>,
    pub rate_milli: Option<Option<i64>>,
}

/// What a worker needs to know to skip the gated claim when there is nothing for it: the
/// gated queues (paused or not) and whether any ready task carries a concurrency key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateState {
    pub gated: HashMap<String, bool>,
    pub keyed: bool,
}

/// What a gated claim started, and when to look again for a rate-limited queue's next start.
#[derive(Debug, Default)]
pub struct GatedClaim {
    pub tasks: Vec<ClaimedTask>,
    pub wake_at: Option<i64>,
}

/// What the queue-control API, the claims and the audit API ask of a store.
pub trait Controls: Send + Sync {
    /// Every queue with settings, by name.
    fn queue_settings(&self) -> BoxFuture<'_, Result<Vec<Gate>>>;

    /// Changes a queue's settings (creating them), recording `audit` in the same
    /// transaction; answers the settings after, and whether the queue stopped being gated
    /// (its ready tasks were handed to the dispatcher again, see [`sql::UNGATE`]).
    fn change_queue<'a>(
        &'a self,
        queue: &'a str,
        change: &'a QueueChange,
        now: i64,
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<(Option<Gate>, bool)>>;

    fn gate_state(&self) -> BoxFuture<'_, Result<GateState>>;

    /// Starts up to `limit` ready tasks of gated queues and keyed tasks among `queues` (and
    /// `kinds`, when given) for `worker`, within the queues' limits, rates and the keys'
    /// limits, one process at a time.
    fn claim_gated<'a>(
        &'a self,
        worker: &'a str,
        queues: &'a [String],
        kinds: Option<&'a [String]>,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<GatedClaim>>;

    /// Entries of the audit log, newest first.
    fn audit_log(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditRow>>>;

    /// Deletes audit entries older than `before`; answers how many.
    fn trim_audit(&self, before: i64) -> BoxFuture<'_, Result<u64>>;
}

/// Rows read per page of candidates, and the most pages one claim reads per source.
const PAGE: i64 = 256;
const MAX_PAGES: i64 = 8;

const GATE_COLUMNS: &str =
    "queue, paused, max_running, rate_milli, tokens_milli, refilled_at, updated_at";

const CANDIDATE_COLUMNS: &str =
    "id, queue, kind, concurrency_key, concurrency_limit, priority, run_at";

fn gate_row<R: TaskRow>(row: &R) -> Result<Gate> {
    let queue = row.text("queue")?;
    let limit = row.opt_int("max_running")?;
    Ok(Gate {
        paused: row.flag("paused")?,
        max_running: limit.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        rate_milli: row.opt_int("rate_milli")?,
        tokens_milli: row.int("tokens_milli")?,
        refilled_at: row.int("refilled_at")?,
        updated_at: row.int("updated_at")?,
        queue,
    })
}

fn candidate_row<R: TaskRow>(row: &R) -> Result<Candidate> {
    Ok(Candidate {
        id: row.text("id")?,
        queue: row.text("queue")?,
        kind: row.text("kind")?,
        key: row.opt_text("concurrency_key")?,
        key_limit: row
            .opt_int("concurrency_limit")?
            .map_or(1, |n| u32::try_from(n).unwrap_or(1)),
        priority: row.small("priority")?,
        run_at: row.int("run_at")?,
    })
}

/// Writes one audit entry at `now` on `conn` (inside the caller's transaction).
pub(super) async fn write_audit<'c, DB, E>(conn: E, entry: &AuditEntry, now: i64) -> Result<()>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(sql::INSERT_AUDIT)
        .bind(now)
        .bind(entry.actor.as_str())
        .bind(entry.action.as_str())
        .bind(entry.target.as_str())
        .bind(entry.details.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

impl<D> Controls for SqlStore<D>
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
    fn queue_settings(&self) -> BoxFuture<'_, Result<Vec<Gate>>> {
        Box::pin(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {GATE_COLUMNS} FROM queue_settings ORDER BY queue"
            )))
            .fetch_all(&self.read)
            .await?;
            rows.iter().map(gate_row).collect()
        })
    }

    fn change_queue<'a>(
        &'a self,
        queue: &'a str,
        change: &'a QueueChange,
        now: i64,
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<(Option<Gate>, bool)>> {
        Box::pin(self.health.track(async move {
            let mut tx = self.write.begin().await?;
            // Under the gated claims' lock: a claim holds the rows it starts and then its
            // queue's bucket; this holds the bucket and then the rows it hands back.
            if let Some(lock) = D::GATE_LOCK {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {GATE_COLUMNS} FROM queue_settings WHERE queue = $1"
            )))
            .bind(queue)
            .fetch_optional(&mut *tx)
            .await?;
            let before = row.as_ref().map(gate_row).transpose()?;
            let was_gated = before.as_ref().is_some_and(is_gated);
            let mut gate = before.clone().unwrap_or(Gate {
                queue: queue.to_owned(),
                paused: false,
                max_running: None,
                rate_milli: None,
                tokens_milli: 0,
                refilled_at: now,
                updated_at: now,
            });
            if let Some(paused) = change.paused {
                gate.paused = paused;
            }
            if let Some(max) = change.max_running {
                gate.max_running = max;
            }
            if let Some(rate) = change.rate_milli
                && rate != gate.rate_milli
            {
                // A new rate starts with a full bucket: its burst.
                gate.rate_milli = rate;
                gate.tokens_milli = rate.map_or(0, gates::capacity);
                gate.refilled_at = now;
            }
            let settings = |g: &Gate| (g.paused, g.max_running, g.rate_milli);
            if before.as_ref().map_or((false, None, None), settings) == settings(&gate) {
                // Nothing changes: nothing is written or recorded.
                tx.rollback().await?;
                return Ok((before, false));
            }
            gate.updated_at = now;
            let gated = is_gated(&gate);
            let after = if gated {
                sqlx::query(
                    "INSERT INTO queue_settings
                         (queue, paused, max_running, rate_milli, tokens_milli, refilled_at,
                          gated, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (queue) DO UPDATE SET paused = $2, max_running = $3,
                         rate_milli = $4, tokens_milli = $5, refilled_at = $6, gated = $7,
                         updated_at = $8",
                )
                .bind(queue)
                .bind(gate.paused)
                .bind(gate.max_running.map(i64::from))
                .bind(gate.rate_milli)
                .bind(gate.tokens_milli)
                .bind(gate.refilled_at)
                .bind(true)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Some(gate)
            } else {
                // Nothing set: no row (a queue without settings is the default).
                sqlx::query("DELETE FROM queue_settings WHERE queue = $1")
                    .bind(queue)
                    .execute(&mut *tx)
                    .await?;
                None
            };
            let ungated = was_gated && !gated;
            if ungated {
                sqlx::query(sqlx::AssertSqlSafe(sql::ungate(D::LOCKS)))
                    .bind(queue)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            write_audit(&mut *tx, audit, now).await?;
            tx.commit().await?;
            Ok((after, ungated))
        }))
    }

    fn gate_state(&self) -> BoxFuture<'_, Result<GateState>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT queue, paused FROM queue_settings WHERE gated")
                .fetch_all(&self.read)
                .await?;
            let mut gated = HashMap::new();
            for row in &rows {
                gated.insert(row.text("queue")?, row.flag("paused")?);
            }
            let keyed = sqlx::query(
                "SELECT id FROM tasks WHERE status = 'queued' AND concurrency_key IS NOT NULL
                 LIMIT 1",
            )
            .fetch_optional(&self.read)
            .await?
            .is_some();
            Ok(GateState { gated, keyed })
        })
    }

    fn claim_gated<'a>(
        &'a self,
        worker: &'a str,
        queues: &'a [String],
        kinds: Option<&'a [String]>,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<GatedClaim>> {
        Box::pin(self.health.track(async move {
            if limit == 0 || queues.is_empty() {
                return Ok(GatedClaim::default());
            }
            let served: HashSet<&str> = queues.iter().map(String::as_str).collect();
            let kinds: Option<HashSet<&str>> =
                kinds.map(|kinds| kinds.iter().map(String::as_str).collect());
            let eligible = |c: &Candidate| {
                served.contains(c.queue.as_str())
                    && kinds.as_ref().is_none_or(|k| k.contains(c.kind.as_str()))
            };
            let mut tx = self.write.begin().await?;
            if let Some(lock) = D::GATE_LOCK {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            // The claim's instant is read once the lock is held: a claim that waited for
            // another's would otherwise record a start before the end that made room for it.
            let waited = (crate::util::now_ms() - now).max(0);
            let (now, lease_until) = (now + waited, lease_until + waited);
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {GATE_COLUMNS} FROM queue_settings WHERE gated"
            )))
            .fetch_all(&mut *tx)
            .await?;
            let mut all_gates = HashMap::new();
            for row in &rows {
                let gate = gate_row(row)?;
                all_gates.insert(gate.queue.clone(), gate);
            }
            let mut running = Running::default();
            let rows = sqlx::query(
                "SELECT queue, concurrency_key, COUNT(*) AS n,
                     MIN(COALESCE(concurrency_limit, 1)) AS least FROM tasks
                 WHERE status = 'running' GROUP BY queue, concurrency_key",
            )
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let n = row.int("n")?.max(0) as u64;
                *running.by_queue.entry(row.text("queue")?).or_insert(0) += n;
                if let Some(key) = row.opt_text("concurrency_key")? {
                    let least = u32::try_from(row.int("least")?.max(1)).unwrap_or(1);
                    let limit = running.key_limit.entry(key.clone()).or_insert(least);
                    *limit = (*limit).min(least);
                    *running.by_key.entry(key).or_insert(0) += n;
                }
            }
            let saturated = |c: &Candidate| {
                c.key.as_ref().is_some_and(|key| {
                    let limit = running
                        .key_limit
                        .get(key)
                        .copied()
                        .unwrap_or(u32::MAX)
                        .min(c.key_limit.max(1));
                    running.by_key.get(key).copied().unwrap_or(0) >= u64::from(limit)
                })
            };
            let want = i64::from(limit);
            let mut candidates: Vec<Candidate> = Vec::new();
            // The open gated queues this worker serves, each walked in priority order.
            for gate in all_gates.values() {
                if gate.paused || !served.contains(gate.queue.as_str()) {
                    continue;
                }
                let statement = format!(
                    "SELECT {CANDIDATE_COLUMNS} FROM tasks WHERE status = 'queued' AND queue = $1
                     ORDER BY priority DESC, run_at, id LIMIT $2 OFFSET $3"
                );
                let mut found = 0;
                for page in 0..MAX_PAGES {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                        .bind(gate.queue.as_str())
                        .bind(PAGE)
                        .bind(page * PAGE)
                        .fetch_all(&mut *tx)
                        .await?;
                    let full = rows.len() as i64 == PAGE;
                    for row in &rows {
                        let candidate = candidate_row(row)?;
                        if eligible(&candidate) && !saturated(&candidate) {
                            found += 1;
                            candidates.push(candidate);
                        }
                    }
                    if !full || found >= want {
                        break;
                    }
                }
            }
            // Keyed tasks of the ungated queues it serves.
            let keyed_statement = format!(
                "SELECT {CANDIDATE_COLUMNS} FROM tasks
                 WHERE status = 'queued' AND concurrency_key IS NOT NULL
                 ORDER BY priority DESC, run_at, id LIMIT $1 OFFSET $2"
            );
            let mut found = 0;
            for page in 0..MAX_PAGES {
                let rows = sqlx::query(sqlx::AssertSqlSafe(keyed_statement.clone()))
                    .bind(PAGE)
                    .bind(page * PAGE)
                    .fetch_all(&mut *tx)
                    .await?;
                let full = rows.len() as i64 == PAGE;
                for row in &rows {
                    let candidate = candidate_row(row)?;
                    if eligible(&candidate)
                        && !all_gates.contains_key(&candidate.queue)
                        && !saturated(&candidate)
                    {
                        found += 1;
                        candidates.push(candidate);
                    }
                }
                if !full || found >= want {
                    break;
                }
            }
            let queue_of: HashMap<String, String> = candidates
                .iter()
                .filter(|c| all_gates.contains_key(&c.queue))
                .map(|c| (c.id.clone(), c.queue.clone()))
                .collect();
            let pick = gates::pick(&all_gates, &running, candidates, limit as usize, now);
            let mut tasks = Vec::new();
            if !pick.ids.is_empty() {
                let statement = format!(
                    "{} RETURNING {}",
                    sql::claim_listed(pick.ids.len(), D::LOCKS),
                    sql::CLAIM_COLUMNS
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement))
                    .bind(worker)
                    .bind(lease_until)
                    .bind(now);
                for id in &pick.ids {
                    query = query.bind(id.as_str());
                }
                let rows = query.fetch_all(&mut *tx).await?;
                tasks = decode::claimed_in_order(&rows)?;
                for (queue, tokens) in &pick.spent {
                    // A start that did not happen (the task was cancelled meanwhile) is not
                    // paid for; and the bucket's time never goes back (another process's
                    // clock may be behind this one's).
                    let picked = pick
                        .ids
                        .iter()
                        .filter(|id| queue_of.get(*id) == Some(queue))
                        .count() as i64;
                    let started = tasks.iter().filter(|t| &t.queue == queue).count() as i64;
                    let refilled = all_gates
                        .get(queue)
                        .map_or(now, |gate| gate.refilled_at.max(now));
                    sqlx::query(
                        "UPDATE queue_settings SET tokens_milli = $2, refilled_at = $3
                         WHERE queue = $1",
                    )
                    .bind(queue.as_str())
                    .bind(tokens + (picked - started).max(0) * gates::TOKEN)
                    .bind(refilled)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(GatedClaim {
                tasks,
                wake_at: pick.wake_at,
            })
        }))
    }

    fn audit_log(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, at, actor, action, target, details FROM audit_log
                 WHERE ($1 IS NULL OR seq < $1) AND ($2 IS NULL OR at >= $2)
                   AND ($3 IS NULL OR actor = $3)
                   AND ($4 IS NULL OR action = $4 OR action LIKE ($4 || '.%'))
                 ORDER BY seq DESC LIMIT $5",
            )
            .bind(filter.before)
            .bind(filter.since)
            .bind(filter.actor.as_deref())
            .bind(filter.action.as_deref())
            .bind(i64::from(filter.limit))
            .fetch_all(&self.read)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(AuditRow {
                        seq: row.int("seq")?,
                        at: row.int("at")?,
                        entry: AuditEntry {
                            actor: row.text("actor")?,
                            action: row.text("action")?,
                            target: row.text("target")?,
                            details: row.text("details")?,
                        },
                    })
                })
                .collect()
        })
    }

    fn trim_audit(&self, before: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.health.track(async move {
            let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
                .bind(before)
                .execute(&self.write)
                .await?;
            Ok(D::rows_affected(&done))
        }))
    }
}

/// Whether any control holds on the queue.
fn is_gated(gate: &Gate) -> bool {
    gate.paused || gate.max_running.is_some() || gate.rate_milli.is_some()
}
