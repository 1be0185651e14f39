//! The dashboard's I/O: reads tasks, queues, workers, the detail task (and its workflow) and
//! (in their views) the schedules and workflows from the server and
//! sends them in as actions. It refreshes on a timer, at once when the view's parameters
//! change, and shortly after any task event, so the screen follows the platform without
//! polling hard. Drawing never waits on it.

use std::time::Duration;

use taskplane_api::{Client, EventQuery, EventStream, ListQuery, LogQuery};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::app::{Action, Query};

/// Tasks per page of the table.
pub const PAGE: u32 = 200;
/// While a task is open, its output is read this often.
const DETAIL_REFRESH: Duration = Duration::from_millis(300);
/// After an event, wait this long for more before reading (events come in bursts).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// What the view currently needs from the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub query: Query,
    pub detail: Option<Uuid>,
    pub paused: bool,
    /// The schedules view is open: read the schedules too.
    pub schedules: bool,
    /// The workflows view is open: read the newest workflows too.
    pub workflows: bool,
    /// The audit view is open: read the newest audit entries too.
    pub audit: bool,
    /// Read this workflow too (open in its view, or the detail task's).
    pub workflow: Option<Uuid>,
    /// Bumped to ask for a read now even though nothing else changed.
    pub generation: u64,
}

pub async fn run(
    client: Client,
    mut params: watch::Receiver<Params>,
    tx: mpsc::Sender<Action>,
    refresh: Duration,
) {
    let mut events: Option<EventStream> = None;
    let mut detail: Option<Uuid> = None;
    let mut log_after = 0i64;
    let mut failures = 0u32;
    loop {
        let current = params.borrow_and_update().clone();
        if !current.paused {
            match read(&client, &current).await {
                Ok(actions) => {
                    failures = 0;
                    for action in actions {
                        if tx.send(action).await.is_err() {
                            return;
                        }
                    }
                }
                Err(reason) => {
                    failures += 1;
                    if tx.send(Action::Disconnected(reason)).await.is_err() {
                        return;
                    }
                }
            }
            if current.detail != detail {
                detail = current.detail;
                log_after = 0;
            }
            if let Some(id) = detail
                && failures == 0
            {
                let reset = log_after == 0;
                let query = LogQuery {
                    after: Some(log_after),
                    ..LogQuery::default()
                };
                if let Ok(page) = client.logs(id, &query).await {
                    log_after = page.next_after;
                    if (reset || !page.lines.is_empty())
                        && tx
                            .send(Action::Logs {
                                task: id,
                                lines: page.lines,
                                reset,
                            })
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            }
        }
        if events.is_none() && failures == 0 {
            events = client.events(&EventQuery::default(), None).await.ok();
        }
        let wait = if failures > 0 {
            Duration::from_millis(500 * u64::from(failures.min(10)))
        } else if detail.is_some() {
            DETAIL_REFRESH
        } else {
            refresh
        };
        let next_event = async {
            match events.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = params.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            event = next_event => match event {
                Some(Ok(_)) => tokio::time::sleep(DEBOUNCE).await,
                _ => events = None,
            },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One read of everything the view shows.
async fn read(client: &Client, params: &Params) -> Result<Vec<Action>, String> {
    let describe = |e: taskplane_api::Error| e.to_string();
    let query = ListQuery {
        status: params.query.status,
        queue: params.query.queue.clone(),
        kind: params.query.kind.clone(),
        limit: Some(PAGE),
        cursor: params.query.cursor.clone(),
        ..ListQuery::default()
    };
    let tasks = client.list(&query).await.map_err(describe)?;
    let queues = client.queues().await.map_err(describe)?;
    let workers = client.workers().await.map_err(describe)?;
    let mut actions = vec![
        Action::Tasks(params.query.clone(), tasks),
        Action::Queues(queues.queues),
        Action::Workers(workers.workers),
    ];
    if params.schedules {
        actions.push(Action::Schedules(
            client.schedules().await.map_err(describe)?,
        ));
    }
    if params.workflows {
        let query = taskplane_api::WorkflowQuery {
            limit: Some(PAGE),
            ..Default::default()
        };
        actions.push(Action::Workflows(
            client.workflows(&query).await.map_err(describe)?.workflows,
        ));
    }
    if params.audit {
        // Refused for a token without admin: the view says so; the connection is fine.
        let query = taskplane_api::AuditQuery {
            limit: Some(PAGE),
            ..Default::default()
        };
        actions.push(Action::Audit(
            client
                .audit(&query)
                .await
                .map(|list| list.entries)
                .map_err(describe),
        ));
    }
    if let Some(id) = params.workflow
        && let Ok(workflow) = client.workflow(id).await
    {
        actions.push(Action::Workflow(Box::new(workflow)));
    }
    if let Some(id) = params.detail
        && let Ok(task) = client.get(id).await
    {
        actions.push(Action::Detail(Box::new(task)));
    }
    Ok(actions)
}
