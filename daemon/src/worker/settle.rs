//! Group commit of outcomes: every attempt that ends hands its settlement to one writer
//! task, which stores whatever has gathered in one transaction and answers each attempt
//! only after the commit. Under load many tasks share a commit; alone, a task waits for
//! nothing but its own.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::lifecycle::Settlement;
use crate::store::Store;

/// The most outcomes stored in one transaction.
const MAX_BATCH: usize = 512;

struct Request {
    id: Uuid,
    settlement: Settlement,
    reply: oneshot::Sender<Result<bool, String>>,
}

/// The sending side, one per worker.
#[derive(Clone)]
pub struct Settler(Path);

#[derive(Clone)]
enum Path {
    /// Outcomes go to the group writer.
    Grouped(mpsc::Sender<Request>),
    /// A store that groups its writes itself ([`Store::groups_writes`]) takes each outcome
    /// straight, for this worker.
    Direct(Arc<dyn Store>, Arc<str>),
}

impl Settler {
    /// Starts the writer for `worker` on `store`; it ends when every sender is gone.
    pub fn start(store: Arc<dyn Store>, worker: String) -> Settler {
        if store.groups_writes() {
            return Settler(Path::Direct(store, worker.into()));
        }
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(write_loop(store, worker, rx));
        Settler(Path::Grouped(tx))
    }

    /// Stores one outcome (with whatever else is waiting). `Ok(false)`: the worker no longer
    /// holds the task. `Err`: the store failed; the caller may try again.
    pub async fn settle(&self, id: Uuid, settlement: Settlement) -> Result<bool, String> {
        let tx = match &self.0 {
            Path::Direct(store, worker) => {
                return store
                    .settle_many(worker, &[(id, settlement)], crate::util::now_ms())
                    .await
                    .map(|settled| settled.first().copied().unwrap_or(false))
                    .map_err(|e| e.to_string());
            }
            Path::Grouped(tx) => tx,
        };
        let (reply, answer) = oneshot::channel();
        tx.send(Request {
            id,
            settlement,
            reply,
        })
        .await
        .map_err(|_| "the outcome writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the outcome writer has stopped".to_owned())?
    }
}

async fn write_loop(store: Arc<dyn Store>, worker: String, mut rx: mpsc::Receiver<Request>) {
    while let Some(batch) = crate::store::next_group(&mut rx, MAX_BATCH, |_| 1).await {
        let items: Vec<(Uuid, Settlement)> =
            batch.iter().map(|r| (r.id, r.settlement.clone())).collect();
        let result = store
            .settle_many(&worker, &items, crate::util::now_ms())
            .await
            .map_err(|e| e.to_string());
        for (i, request) in batch.into_iter().enumerate() {
            let answer = match &result {
                Ok(settled) => Ok(settled.get(i).copied().unwrap_or(false)),
                Err(error) => Err(error.clone()),
            };
            let _ = request.reply.send(answer);
        }
    }
}
