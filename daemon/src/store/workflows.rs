//! Dependencies and workflows in the store: tasks inserted with the tasks they wait for (one
//! transaction, parents locked first), a workflow's row and steps, and the two actions on a
//! whole workflow (cancel, retry). What happens when a parent finishes is the schema's job
//! (migration 6's triggers, and SQLite's writer), in the transaction that finishes it.

use std::collections::{HashMap, HashSet};

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use taskplane_api::TaskStatus;
use uuid::Uuid;

use super::decode::{self, TaskRow};
use super::{AuditEntry, BoxFuture, Dialect, Result, SqlStore, StoredTask, sql};
use crate::domain::validate::NewTask;

/// A workflow as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: i64,
}

/// Tasks to insert together, each with the tasks it depends on (ids of tasks that exist, or
/// of tasks in the same graph), and the workflow they make, if they make one.
#[derive(Debug, Clone)]
pub struct Graph {
    pub tasks: Vec<NewTask>,
    pub workflow: Option<WorkflowRow>,
}

/// Why a graph was not inserted.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphRefused {
    /// A parent does not exist.
    UnknownParent(Uuid),
    /// A parent failed or was cancelled already: the task could never run.
    ParentFinished(Uuid, TaskStatus),
}

/// A workflow with its steps (in the order they were given) and each step's parents.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowState {
    pub row: WorkflowRow,
    pub steps: Vec<StoredTask>,
    /// Each step's parents (task ids), by step task id.
    pub parents: HashMap<Uuid, Vec<Uuid>>,
}

/// A workflow in a list: its row and how many steps are in each status.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSummary {
    pub row: WorkflowRow,
    pub counts: Vec<(TaskStatus, u32)>,
    /// When its last step finished, if every one has.
    pub finished_at: Option<i64>,
}

/// What the dependency and workflow API asks of a store.
pub trait Workflows: Send + Sync {
    /// Inserts the graph's tasks (a task with a parent that has not succeeded is `waiting`),
    /// their dependency edges and the workflow's row, in one transaction.
    fn insert_graph(
        &self,
        graph: Graph,
    ) -> BoxFuture<'_, Result<std::result::Result<Vec<StoredTask>, GraphRefused>>>;

    /// The tasks `id` depends on.
    fn parents(&self, id: Uuid) -> BoxFuture<'_, Result<Vec<Uuid>>>;

    /// The ids of a workflow's steps that succeeded.
    fn succeeded_steps(&self, workflow: Uuid) -> BoxFuture<'_, Result<Vec<String>>>;

    /// The results (JSON text) of the named steps of a workflow that succeeded.
    fn step_results(
        &self,
        workflow: Uuid,
        steps: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>>>;

    fn workflow(&self, id: Uuid) -> BoxFuture<'_, Result<Option<WorkflowState>>>;

    /// A workflow's row and how many of its steps are in each status, without the steps.
    fn workflow_summary(&self, id: Uuid) -> BoxFuture<'_, Result<Option<WorkflowSummary>>>;

    /// Workflows newest first (of `name`, when given), with ids below `before`.
    fn workflows(
        &self,
        name: Option<String>,
        before: Option<Uuid>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<WorkflowSummary>>>;

    /// Cancels every unfinished step (a running one is asked to stop); answers how many it
    /// changed, or None when there is no such workflow.
    fn cancel_workflow<'a>(
        &'a self,
        id: Uuid,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Runs the failed and cancelled steps again (and so what depends on them), keeping the
    /// steps that succeeded; answers how many it changed, or None when there is no such
    /// workflow.
    fn retry_workflow<'a>(
        &'a self,
        id: Uuid,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Option<u64>>>;
}

fn workflow_row<R: TaskRow>(row: &R) -> Result<WorkflowRow> {
    let id = row.text("id")?;
    Ok(WorkflowRow {
        id: decode::parse_id(&id)?,
        name: row.text("name")?,
        created_at: row.int("created_at")?,
    })
}

/// The steps of a workflow that are not finished, in the order their rows are locked:
/// every other status first, then the waiting ones (a settle holds a running parent and
/// then locks its waiting children, so this order never meets it the other way round).
const UNFINISHED_STEPS: &str = "workflow_id = $1 AND status IN
     ('waiting', 'scheduled', 'queued', 'retrying', 'running')";

impl<D> Workflows for SqlStore<D>
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
    fn insert_graph(
        &self,
        mut graph: Graph,
    ) -> BoxFuture<'_, Result<std::result::Result<Vec<StoredTask>, GraphRefused>>> {
        Box::pin(self.health.track(async move {
            let new: HashSet<Uuid> = graph.tasks.iter().map(|task| task.id).collect();
            let mut outside: Vec<Uuid> = graph
                .tasks
                .iter()
                .flat_map(|task| task.depends_on.iter().copied())
                .filter(|id| !new.contains(id))
                .collect();
            outside.sort();
            outside.dedup();
            let mut tx = self.write.begin().await?;
            // The parents outside the graph, locked (non-waiting ones first, then in id
            // order) and marked as having children: a settle of one of them waits for this
            // transaction, and then sees its new children.
            let mut statuses: HashMap<Uuid, TaskStatus> = HashMap::new();
            for chunk in outside.chunks(sql::ROWS_PER_STATEMENT) {
                let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
                let places = sql::Params::Numbered.run(1, ids.len());
                let lock = format!(
                    "SELECT id, status FROM tasks WHERE id IN ({places})
                     ORDER BY CASE WHEN status = 'waiting' THEN 1 ELSE 0 END, id{}",
                    D::LOCKS.ordered
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(lock));
                for id in &ids {
                    query = query.bind(id.as_str());
                }
                for row in query.fetch_all(&mut *tx).await? {
                    let id: String = sqlx::Row::try_get(&row, 0)?;
                    let status: String = sqlx::Row::try_get(&row, 1)?;
                    let status = status
                        .parse::<TaskStatus>()
                        .map_err(|e| decode::corrupt(&id, e))?;
                    statuses.insert(decode::parse_id(&id)?, status);
                }
                let mark = format!(
                    "UPDATE tasks SET has_children = TRUE WHERE id IN ({places}) AND NOT has_children"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(mark));
                for id in &ids {
                    query = query.bind(id.as_str());
                }
                query.execute(&mut *tx).await?;
            }
            for id in &outside {
                match statuses.get(id) {
                    None => return Ok(Err(GraphRefused::UnknownParent(*id))),
                    Some(status @ (TaskStatus::Failed | TaskStatus::Cancelled)) => {
                        return Ok(Err(GraphRefused::ParentFinished(*id, *status)));
                    }
                    Some(_) => {}
                }
            }
            // A task waits while any parent has not succeeded (a parent in the graph has
            // not run yet).
            let parents_of: HashSet<Uuid> = graph
                .tasks
                .iter()
                .flat_map(|task| task.depends_on.iter().copied())
                .collect();
            for task in &mut graph.tasks {
                let waits = task.depends_on.iter().any(|parent| {
                    new.contains(parent) || statuses.get(parent) != Some(&TaskStatus::Succeeded)
                });
                if waits {
                    task.status = TaskStatus::Waiting;
                }
            }
            if let Some(workflow) = &graph.workflow {
                sqlx::query("INSERT INTO workflows (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(workflow.id.to_string())
                    .bind(workflow.name.as_str())
                    .bind(workflow.created_at)
                    .execute(&mut *tx)
                    .await?;
            }
            // Parents in the graph are inserted knowing they have children.
            let stored = Self::insert_in(&mut tx, &graph.tasks).await?;
            let inside: Vec<String> = graph
                .tasks
                .iter()
                .filter(|task| parents_of.contains(&task.id))
                .map(|task| task.id.to_string())
                .collect();
            for chunk in inside.chunks(sql::ROWS_PER_STATEMENT) {
                let places = sql::Params::Numbered.run(1, chunk.len());
                let mark = format!("UPDATE tasks SET has_children = TRUE WHERE id IN ({places})");
                let mut query = sqlx::query(sqlx::AssertSqlSafe(mark));
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                query.execute(&mut *tx).await?;
            }
            let edges: Vec<(String, String)> = graph
                .tasks
                .iter()
                .flat_map(|task| {
                    task.depends_on
                        .iter()
                        .map(move |parent| (parent.to_string(), task.id.to_string()))
                })
                .collect();
            for chunk in edges.chunks(sql::ROWS_PER_STATEMENT) {
                let values = (0..chunk.len())
                    .map(|r| format!("(${}, ${})", 2 * r + 1, 2 * r + 2))
                    .collect::<Vec<_>>()
                    .join(", ");
                let insert = format!("INSERT INTO task_deps (parent, child) VALUES {values}");
                let mut query = sqlx::query(sqlx::AssertSqlSafe(insert));
                for (parent, child) in chunk {
                    query = query.bind(parent.as_str()).bind(child.as_str());
                }
                query.execute(&mut *tx).await?;
            }
            let ready = graph.tasks.iter().any(|task| {
                task.published_at == Some(0) && task.status == TaskStatus::Queued
            });
            if let Some(notify) = D::NOTIFY_READY.filter(|_| ready) {
                sqlx::query(notify).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Ok(stored.into_iter().map(|(task, _)| task).collect()))
        }))
    }

    fn parents(&self, id: Uuid) -> BoxFuture<'_, Result<Vec<Uuid>>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT parent FROM task_deps WHERE child = $1 ORDER BY parent")
                .bind(id.to_string())
                .fetch_all(&self.read)
                .await?;
            rows.iter()
                .map(|row| decode::parse_id(&sqlx::Row::try_get::<String, _>(row, 0)?))
                .collect()
        })
    }

    fn succeeded_steps(&self, workflow: Uuid) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT step FROM tasks WHERE workflow_id = $1 AND status = 'succeeded'",
            )
            .bind(workflow.to_string())
            .fetch_all(&self.read)
            .await?;
            rows.iter()
                .map(|row| Ok(sqlx::Row::try_get::<Option<String>, _>(row, 0)?.unwrap_or_default()))
                .collect()
        })
    }

    fn step_results(
        &self,
        workflow: Uuid,
        steps: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(steps.len());
            for chunk in steps.chunks(sql::ROWS_PER_STATEMENT) {
                let statement = format!(
                    "SELECT step, result FROM tasks WHERE workflow_id = $1
                     AND status = 'succeeded' AND step IN ({})",
                    sql::Params::Numbered.run(2, chunk.len())
                );
                let mut query =
                    sqlx::query(sqlx::AssertSqlSafe(statement)).bind(workflow.to_string());
                for step in chunk {
                    query = query.bind(step.as_str());
                }
                for row in query.fetch_all(&self.read).await? {
                    let step: Option<String> = sqlx::Row::try_get(&row, 0)?;
                    let result: Option<String> = sqlx::Row::try_get(&row, 1)?;
                    out.push((
                        step.unwrap_or_default(),
                        result.unwrap_or_else(|| "null".to_owned()),
                    ));
                }
            }
            Ok(out)
        })
    }

    fn workflow(&self, id: Uuid) -> BoxFuture<'_, Result<Option<WorkflowState>>> {
        Box::pin(async move {
            let Some(row) = sqlx::query("SELECT id, name, created_at FROM workflows WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.read)
                .await?
            else {
                return Ok(None);
            };
            let row = workflow_row(&row)?;
            let statement = format!(
                "SELECT {} FROM tasks WHERE workflow_id = $1 ORDER BY id",
                sql::TASK_COLUMNS
            );
            let steps = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(id.to_string())
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(decode::task)
                .collect::<Result<Vec<_>>>()?;
            let edges = sqlx::query(
                "SELECT d.child, d.parent FROM task_deps d JOIN tasks t ON t.id = d.child
                 WHERE t.workflow_id = $1 ORDER BY d.child, d.parent",
            )
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await?;
            let mut parents: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
            for edge in &edges {
                let child = decode::parse_id(&sqlx::Row::try_get::<String, _>(edge, 0)?)?;
                let parent = decode::parse_id(&sqlx::Row::try_get::<String, _>(edge, 1)?)?;
                parents.entry(child).or_default().push(parent);
            }
            Ok(Some(WorkflowState {
                row,
                steps,
                parents,
            }))
        })
    }

    fn workflow_summary(&self, id: Uuid) -> BoxFuture<'_, Result<Option<WorkflowSummary>>> {
        Box::pin(async move {
            let Some(row) = sqlx::query("SELECT id, name, created_at FROM workflows WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.read)
                .await?
            else {
                return Ok(None);
            };
            Ok(self.summaries(vec![workflow_row(&row)?]).await?.pop())
        })
    }

    fn workflows(
        &self,
        name: Option<String>,
        before: Option<Uuid>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<WorkflowSummary>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, name, created_at FROM workflows
                 WHERE ($1 IS NULL OR name = $1) AND ($2 IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(name.as_deref())
            .bind(before.map(|id| id.to_string()))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
            let rows = rows.iter().map(workflow_row).collect::<Result<Vec<_>>>()?;
            self.summaries(rows).await
        })
    }

    fn cancel_workflow<'a>(
        &'a self,
        id: Uuid,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        // One statement, its rows locked non-waiting first: a waiting step is cancelled
        // here, not by its parent's cancel (whose trigger finds it cancelled already).
        let statement = format!(
            "WITH locked AS (SELECT id AS locked_id FROM tasks WHERE {UNFINISHED_STEPS}
                 ORDER BY CASE WHEN status = 'waiting' THEN 1 ELSE 0 END, id{})
             UPDATE tasks SET
                 status = CASE WHEN status = 'running' THEN 'running' ELSE 'cancelled' END,
                 finished_at = CASE WHEN status = 'running' THEN finished_at ELSE $2 END,
                 last_error = CASE WHEN status = 'waiting' THEN 'cancelled with its workflow'
                                   ELSE last_error END,
                 cancel_requested = TRUE, updated_at = $2
             FROM locked WHERE tasks.id = locked.locked_id AND {UNFINISHED_STEPS}",
            D::LOCKS.ordered
        );
        Box::pin(
            self.health
                .track(self.change_steps(id, now, statement, audit)),
        )
    }

    fn retry_workflow<'a>(
        &'a self,
        id: Uuid,
        now: i64,
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        // Each failed or cancelled step runs again: at once when its parents all
        // succeeded, else once they have (they are run again in the same statement, so the
        // snapshot it reads still shows them failed or cancelled).
        let statement = format!(
            "WITH locked AS (SELECT id AS locked_id FROM tasks
                 WHERE workflow_id = $1 AND status IN ('failed', 'cancelled')
                 ORDER BY id{})
             UPDATE tasks SET
                 status = CASE WHEN EXISTS (SELECT 1 FROM task_deps d
                              JOIN tasks p ON p.id = d.parent
                              WHERE d.child = tasks.id AND p.status <> 'succeeded')
                          THEN 'waiting' ELSE 'queued' END,
                 attempts = 0, run_at = $2, updated_at = $2, started_at = NULL,
                 finished_at = NULL, result = NULL, last_error = NULL, worker = NULL,
                 cancel_requested = FALSE, published_at = NULL
             FROM locked WHERE tasks.id = locked.locked_id
               AND tasks.status IN ('failed', 'cancelled')",
            D::LOCKS.ordered
        );
        Box::pin(
            self.health
                .track(self.change_steps(id, now, statement, audit)),
        )
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
    for<'q> Option<i64>: Decode<'q, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    /// Each workflow with how many of its steps are in each status: one grouped query for
    /// them all, not one per workflow.
    async fn summaries(&self, rows: Vec<WorkflowRow>) -> Result<Vec<WorkflowSummary>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = rows.iter().map(|row| row.id.to_string()).collect();
        let counts = format!(
            "SELECT workflow_id, status, COUNT(*) AS n, MAX(finished_at) AS last FROM tasks
             WHERE workflow_id IN ({}) GROUP BY workflow_id, status",
            sql::Params::Numbered.run(1, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(counts));
        for id in &ids {
            query = query.bind(id.as_str());
        }
        let mut out: Vec<WorkflowSummary> = rows
            .into_iter()
            .map(|row| WorkflowSummary {
                row,
                counts: Vec::new(),
                finished_at: None,
            })
            .collect();
        let place: HashMap<String, usize> =
            ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        for count in query.fetch_all(&self.read).await? {
            let workflow: String = sqlx::Row::try_get(&count, 0)?;
            let status: String = sqlx::Row::try_get(&count, 1)?;
            let n: i64 = sqlx::Row::try_get(&count, 2)?;
            let last: Option<i64> = sqlx::Row::try_get(&count, 3)?;
            let status = status
                .parse::<TaskStatus>()
                .map_err(|e| decode::corrupt(&workflow, e))?;
            let Some(summary) = place.get(&workflow).map(|&i| &mut out[i]) else {
                continue;
            };
            summary
                .counts
                .push((status, u32::try_from(n).unwrap_or(u32::MAX)));
            summary.finished_at = summary.finished_at.max(last);
        }
        // A finish time only once every step has finished.
        for summary in &mut out {
            if !summary
                .counts
                .iter()
                .all(|(status, _)| status.is_terminal())
            {
                summary.finished_at = None;
            }
        }
        Ok(out)
    }

    /// Runs `statement` (`$1` the workflow, `$2` now) on workflow `id`'s steps in a
    /// transaction, answering how many rows it changed, or None when there is no such
    /// workflow.
    async fn change_steps(
        &self,
        id: Uuid,
        now: i64,
        statement: String,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<u64>> {
        let mut tx = self.write.begin().await?;
        let exists = sqlx::query("SELECT id FROM workflows WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let done = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if let Some(audit) = audit.filter(|_| D::rows_affected(&done) > 0) {
            super::controls::write_audit(&mut *tx, audit, now).await?;
        }
        tx.commit().await?;
        Ok(Some(D::rows_affected(&done)))
    }
}
