//! Group commit for single submits: requests that arrive while a submit transaction is in
//! flight are inserted together in the next one, so concurrent clients cost one commit per
//! group instead of one each. Nothing waits for a window: an idle writer takes the first
//! request at once, so an idle submit is as fast as before, and a group grows only with the
//! load (the time one commit takes).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Result, Store, StoredTask};
use crate::domain::validate::NewTask;

/// The most tasks one group inserts (requests beyond it wait for the next).
const MAX_GROUP_TASKS: usize = 512;
/// Requests that may wait for the writer before a submit waits to queue.
const BACKLOG: usize = 4096;

type Reply = oneshot::Sender<Result<Vec<(StoredTask, bool)>>>;

struct Request {
    tasks: Vec<NewTask>,
    reply: Reply,
}

/// The submit side of the store, shared by every request handler of a process.
pub struct GroupCommit(Path);

enum Path {
    /// Requests go to the group writer.
    Grouped(mpsc::Sender<Request>),
    /// A store that groups its writes itself ([`Store::groups_writes`]) takes each request
    /// straight.
    Direct(Arc<dyn Store>),
}

impl GroupCommit {
    /// Starts the writer; it ends when the last handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> Arc<GroupCommit> {
        if store.groups_writes() {
            return Arc::new(GroupCommit(Path::Direct(store)));
        }
        let (requests, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(write_groups(store, rx));
        Arc::new(GroupCommit(Path::Grouped(requests)))
    }

    /// Inserts `tasks` like [`Store::insert`], in one transaction with whatever other
    /// requests are waiting; answers once that transaction has committed.
    pub async fn insert(&self, tasks: Vec<NewTask>) -> Result<Vec<(StoredTask, bool)>> {
        let requests = match &self.0 {
            Path::Direct(store) => return store.insert(tasks).await,
            Path::Grouped(requests) => requests,
        };
        let (reply, answer) = oneshot::channel();
        requests
            .send(Request { tasks, reply })
            .await
            .map_err(|_| super::StoreError::Stopped)?;
        answer.await.map_err(|_| super::StoreError::Stopped)?
    }
}

/// Waits for one item, then takes whatever else is already waiting, until the group weighs
/// `max` (each item by `weight`): the gathering step of a group commit. `None` once every
/// sender is gone.
pub(crate) async fn next_group<T>(
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    weight: impl Fn(&T) -> usize,
) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let total = weight(&first);
    let mut group = vec![first];
    take_waiting(rx, &mut group, total, max, weight);
    Some(group)
}

/// Adds to `group` (weighing `total` so far) what is already waiting, until it weighs `max`;
/// waits for nothing.
pub(crate) fn take_waiting<T>(
    rx: &mut mpsc::Receiver<T>,
    group: &mut Vec<T>,
    mut total: usize,
    max: usize,
    weight: impl Fn(&T) -> usize,
) {
    while total < max {
        match rx.try_recv() {
            Ok(item) => {
                total += weight(&item);
                group.push(item);
            }
            Err(_) => break,
        }
    }
}

async fn write_groups(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Request>) {
    while let Some(mut group) = next_group(&mut rx, MAX_GROUP_TASKS, |r| r.tasks.len()).await {
        if group.len() == 1 {
            let Request { tasks, reply } = group.pop().expect("one request");
            let _ = reply.send(store.insert(tasks).await);
            continue;
        }
        let sizes: Vec<usize> = group.iter().map(|r| r.tasks.len()).collect();
        let all: Vec<NewTask> = group.iter().flat_map(|r| r.tasks.iter().cloned()).collect();
        match store.insert(all).await {
            Ok(rows) => {
                let mut rows = rows.into_iter();
                for (request, size) in group.into_iter().zip(sizes) {
                    let _ = request.reply.send(Ok(rows.by_ref().take(size).collect()));
                }
            }
            // Whatever failed the group, each request gets its own answer (and one bad
            // request cannot fail the others): one transaction each, as without grouping.
            Err(error) => {
                tracing::debug!(%error, requests = group.len(), "a grouped submit failed; inserting its requests one by one");
                for request in group {
                    let _ = request.reply.send(store.insert(request.tasks).await);
                }
            }
        }
    }
}
