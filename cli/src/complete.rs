//! Dynamic shell completion: task ids, queue names and kinds come from the current server
//! (TASKCTL_SERVER, else the default), read with a short timeout; on any failure a
//! completion offers nothing rather than an error.

use std::time::Duration;

use clap_complete::CompletionCandidate;
use taskplane_api::{Client, ListQuery};

const TIMEOUT: Duration = Duration::from_millis(800);

fn ask<F, Fut>(question: F) -> Vec<CompletionCandidate>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<CompletionCandidate>, taskplane_api::Error>>,
{
    let server =
        std::env::var("TASKCTL_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7070".to_owned());
    let token = std::env::var("TASKCTL_TOKEN").ok();
    let Ok(client) = Client::new(&server, token) else {
        return Vec::new();
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, question(client)).await })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The newest task ids, each with its kind and status as help.
pub fn task_ids() -> Vec<CompletionCandidate> {
    ask(|client| async move {
        let page = client
            .list(&ListQuery {
                limit: Some(200),
                ..ListQuery::default()
            })
            .await?;
        Ok(page
            .tasks
            .into_iter()
            .map(|task| {
                CompletionCandidate::new(task.id.to_string())
                    .help(Some(format!("{} {}", task.kind, task.status).into()))
            })
            .collect())
    })
}

/// The queues the server knows.
pub fn queues() -> Vec<CompletionCandidate> {
    ask(|client| async move {
        let list = client.queues().await?;
        Ok(list
            .queues
            .into_iter()
            .map(|q| CompletionCandidate::new(q.queue))
            .collect())
    })
}

/// The built-in kinds.
pub fn kinds() -> Vec<CompletionCandidate> {
    taskplane_api::kinds::BUILTIN_KINDS
        .iter()
        .map(|kind| CompletionCandidate::new(*kind))
        .collect()
}
